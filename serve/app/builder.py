"""Builds the Ray Serve application from the config document and starts it.

The document is Ray Serve's own config schema plus the ``zkserve`` section
(``serve.config.load_config``). From Ray's part this reads ``http_options`` and, of the first
application, ``deployments`` (per-deployment options such as
``num_replicas`` or ``autoscaling_config``, matched by deployment name).

Shape: one Ingress (it serves gRPC and REST itself, no proxy; runs ONNX Runtime in process
on CPU nodes and owns the proof service), one Prover per model, and with a GPU one Predictor per
model holding it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve.app.direct import serve_env
from serve.app.ingress import Ingress
from serve.app.models import ModelSpec, resolve_models
from serve.app.predictor import Predictor
from serve.app.prover import ProverDeployment
from serve.ports import client_target
from serve.protocol.types import AttestMode
from serve.security import tls

APP_NAME = "zkserve"
DEFAULT_HTTP_PORT = 8000


def deployment_name(kind: str, model: str = "") -> str:
    return f"{kind}-{model}" if model else kind


def _env(zkserve: dict) -> dict[str, str]:
    ingress = zkserve["ingress"]
    return serve_env(int(ingress["max_request_bytes"]))


def _prover_options(serving: dict, spec: ModelSpec, env: dict[str, str]) -> dict:
    """replicas x RAYON_NUM_THREADS = the cores given to proving; autoscale on queue length."""
    replicas = max(1, int(serving["prover_replicas"]))
    cores = int(serving.get("prover_cores") or os.cpu_count() or 1)
    threads = max(1, cores // replicas)
    shared = serving["proof_batching"] == "shared" and spec.circuit_batch_size > 1
    return {
        "name": deployment_name("Prover", spec.name),
        # one proving, one waiting in the replica: the next proof starts the moment one ends
        "max_ongoing_requests": 2 * spec.circuit_batch_size if shared else 2,
        "autoscaling_config": {
            "min_replicas": 1, "initial_replicas": 1, "max_replicas": replicas,
            "target_ongoing_requests": spec.circuit_batch_size if shared else 2,
            "upscale_delay_s": 2, "downscale_delay_s": 60,
        },
        "ray_actor_options": {
            # Logical CPUs: a fraction, so N replicas fit beside each other on small hosts;
            # the real core split is RAYON_NUM_THREADS (and niceness / affinity, see prover.py).
            "num_cpus": float(serving.get("prover_num_cpus", 0.5)),
            "runtime_env": {"env_vars": env | {"RAYON_NUM_THREADS": str(threads)}},
        },
    }


def _predictor_options(serving: dict, spec: ModelSpec, env: dict[str, str]) -> dict:
    return {"name": deployment_name("Predictor", spec.name), "max_ongoing_requests": 4 * int(serving["max_batch_size"]),
            "ray_actor_options": {"num_cpus": 0, "num_gpus": float(serving["num_gpus"]),
                                  "runtime_env": {"env_vars": env}}}


def _apply_overrides(deployment, options: dict, overrides: dict[str, dict]):
    override = overrides.get(options["name"], {})
    merged = options | override
    if "ray_actor_options" in override:  # e.g. {resources: ...}: keeps our CPU share and runtime env
        merged["ray_actor_options"] = options.get("ray_actor_options", {}) | override["ray_actor_options"]
    return deployment.options(**merged)


def _security(zkserve: dict, insecure_no_auth: bool) -> dict:
    """What the ingress needs to guard its ports; the key store's path resolved."""
    from serve.security import keys_path

    ingress = zkserve["ingress"]
    return {"auth_enabled": bool(ingress["auth_enabled"]), "insecure_no_auth": bool(insecure_no_auth),
            "keys_file": str(keys_path(zkserve["state_dir"], ingress["keys_file"])),
            "requests_per_s": float(ingress["requests_per_s"]), "burst_s": float(ingress["burst_s"]),
            "tls_cert_file": ingress.get("tls_cert_file"), "tls_key_file": ingress.get("tls_key_file"),
            "max_streams": int(ingress["max_streams"]), "stream_max_s": float(ingress["stream_max_s"]),
            "max_queued_proofs_per_key": int(ingress["max_queued_proofs_per_key"])}


def build_app(zkserve: dict, overrides: dict[str, dict] | None = None, gpus_visible: bool = False,
              insecure_no_auth: bool = False, verifier_token: str | None = None):
    """The bound application. ``verifier_token``: the API key the app submits proofs with when
    the verifier asks for one (``zkserve up`` makes it)."""
    overrides = overrides or {}
    serving, ingress = zkserve["serving"], zkserve["ingress"]
    AttestMode.parse(serving["default_attest"])  # a typo fails here, naming the choices
    if serving["proof_batching"] not in ("per_request", "shared"):
        raise ValueError("zkserve.serving.proof_batching must be per_request or shared, "
                         f"not {serving['proof_batching']!r}")
    env = _env(zkserve)
    specs = resolve_models(list(serving["models"]))
    predictors = None
    if gpus_visible and float(serving["num_gpus"]) > 0:
        predictors = {
            name: bound_predictor(zkserve, spec, overrides) for name, spec in specs.items()
        }
    provers = {name: bound_prover(zkserve, spec, overrides) for name, spec in specs.items()}
    verifier = (client_target(zkserve["verifier"]["host"], int(zkserve["verifier"]["port"]))
                if serving["submit_proofs"] else None)
    settings = {
        "host": ingress["host"], "port": int(ingress["port"]),
        "http_port": int(ingress.get("http_port", DEFAULT_HTTP_PORT)),
        "max_request_bytes": ingress["max_request_bytes"],
        "default_attest": str(AttestMode.parse(serving["default_attest"])),
        "max_batch_size": serving["max_batch_size"], "ort_threads": serving.get("ort_threads"),
        "max_queued_proofs": serving.get("max_queued_proofs", 1024),
        "proofs_dir": str(Path(zkserve["state_dir"]) / "proofs"), "verifier_target": verifier,
        "verifier_client": {"token": verifier_token, "root_cert": zkserve["verifier"].get("tls_cert_file"),
                            "server_name": tls.loopback_server_name(zkserve["verifier"]["host"],
                                                                    zkserve["verifier"].get("tls_cert_file"))},
        "security": _security(zkserve, insecure_no_auth),
        # jobs in flight per model = what its prover replicas take at once (max_ongoing x replicas)
        "proofs_in_flight": {name: proofs_in_flight(zkserve, spec) for name, spec in specs.items()},
    }
    ingress_options = {"name": "Ingress", "ray_actor_options": {"num_cpus": 0, "runtime_env": {"env_vars": env}}}
    return _apply_overrides(Ingress, ingress_options, overrides).bind(specs, predictors, provers, settings)


def bound_prover(zkserve: dict, spec: ModelSpec, overrides: dict[str, dict] | None = None):
    serving = zkserve["serving"]
    return _apply_overrides(ProverDeployment, _prover_options(serving, spec, _env(zkserve)), overrides or {}).bind(
        spec, serving["proof_batching"], float(serving.get("proof_batch_wait_timeout_s", 0.05)),
        serving.get("prover_cores"))


def bound_predictor(zkserve: dict, spec: ModelSpec, overrides: dict[str, dict] | None = None):
    serving = zkserve["serving"]
    return _apply_overrides(Predictor, _predictor_options(serving, spec, _env(zkserve)), overrides or {}).bind(
        spec, int(serving["max_batch_size"]), serving.get("ort_threads"))


def proofs_in_flight(zkserve: dict, spec: ModelSpec) -> int:
    """Jobs in flight for one model = what its prover replicas take at once (max_ongoing x replicas)."""
    serving = zkserve["serving"]
    return (_prover_options(serving, spec, _env(zkserve))["max_ongoing_requests"]
            * max(1, int(serving["prover_replicas"])))


def live_app_name(kind: str, name: str, model_id: str) -> str:
    """The Ray Serve application of a model added to a running app (``zkserve models add``):
    one per version, so an old version's prover finishes its proofs beside the new one."""
    return f"{APP_NAME}-{kind}-{name}-{model_id.removeprefix('0x')[:12]}"


def app_builder(args: dict):
    """Entry for ``serve run``/``serve deploy`` config files: ``import_path: serve.app:app_builder``."""
    from serve.config import load_config

    return build_app(load_config(args.get("config"))["zkserve"])


def http_options(document: dict) -> dict:
    ingress = document["zkserve"]["ingress"]
    options = {"host": ingress["host"], "port": int(ingress.get("http_port", DEFAULT_HTTP_PORT))}
    options.update(document.get("http_options") or {})
    return options


def deployment_overrides(document: dict) -> dict[str, dict]:
    applications = document.get("applications") or []
    if not applications:
        return {}
    return {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in applications[0].get("deployments") or []}


def start(document: dict, insecure_no_auth: bool = False, verifier_token: str | None = None) -> DeploymentHandle:
    """Starts Serve with direct ingress and deploys the app; Ray must be initialised."""
    import ray

    gpus_visible = ray.cluster_resources().get("GPU", 0) > 0
    app = build_app(document["zkserve"], deployment_overrides(document), gpus_visible, insecure_no_auth,
                    verifier_token)
    # No Ray proxy: the ingress replica serves gRPC and REST itself (serve.app.direct).
    serve.start(http_options=http_options(document), proxy_location="Disabled",
                controller_options={"runtime_env": {"env_vars": _env(document["zkserve"])}})
    return serve.run(app, name=APP_NAME, route_prefix="/")
