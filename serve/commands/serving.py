"""`zkserve up`, `zkserve predict`, `zkserve status`: run and use the serving app."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import grpc
import numpy as np
import typer

from serve.commands.progress import console
from serve.settings import ConfigError, Settings, load_settings

# `up` stops within this budget on SIGTERM/SIGINT: Serve gets SERVE_STOP_S to drain, then Ray
# and the verifier (which stops its anvil) are shut down in parallel.
SERVE_STOP_S = 2.0
VERIFIER_STOP_S = 5.0


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as error:
        console.print(f"[red]config:[/red] {error}")
        raise typer.Exit(2) from None


def _address(settings: Settings, address: str | None) -> str:
    return address or settings.ingress_target


def _ingress_channel(settings: Settings, target: str) -> tuple[grpc.Channel, tuple]:
    """A channel to the ingress as the config describes it (its certificate trusted when TLS is
    on) and the call metadata carrying the API key from $ZKSERVE_API_KEY, if any."""
    from serve.security import tls
    from serve.verifier.client import TOKEN_ENV

    cert = settings.ingress.tls_cert_file
    if cert:  # dialling a bind-all ingress on loopback: check the certificate's own name
        name = tls.loopback_server_name(settings.ingress.host, cert) if target == settings.ingress_target else None
        channel = grpc.secure_channel(target, tls.channel_credentials(cert), options=tls.name_override(name))
    else:
        channel = grpc.insecure_channel(target)
    token = os.environ.get(TOKEN_ENV)
    return channel, ((("authorization", f"Bearer {token}"),) if token else ())


class Stopping(Exception):
    """SIGTERM or SIGINT arrived while `up` was still starting."""


class VerifierExited(Exception):
    """The verifier service `up` started is gone."""


def ingress_port_claims(settings: Settings) -> list:
    from serve.lifecycle import PortClaim

    ingress = settings.ingress
    return [PortClaim("ingress.port", ingress.host, ingress.port),
            PortClaim("ingress.http_port", ingress.host, ingress.http_port)]


def _stop_serve_bounded(timeout_s: float) -> None:
    """serve.shutdown() waits up to 30 s per replica for graceful shutdown; give it a bounded
    time in a side thread, after which ray.shutdown() ends what is left."""
    from ray import serve

    worker = threading.Thread(target=serve.shutdown, name="serve-shutdown", daemon=True)
    worker.start()
    worker.join(timeout_s)


def up_command(
    config: Path | None = typer.Option(None, exists=True, dir_okay=False, help="YAML config file"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show Ray's and EZKL's logs on the terminal"),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth", help="allow listening beyond loopback with authentication off (not advised)"),
) -> None:
    """Start Ray (local, or $RAY_ADDRESS), deploy the app, and stay up until Ctrl-C or SIGTERM."""
    from serve.chain.registry import InsecureSrsRefused
    from serve.lifecycle import PortInUse, check_ports_free, route_logs
    from serve.security import InsecureBind, InsecureFile, KeyStoreError
    from serve.security.tls import TlsConfigError
    from serve.stack import verifier_port_claims

    settings = _settings(config)
    try:
        _check_exposure(settings, insecure_no_auth)  # before anything starts or listens
    except (InsecureBind, InsecureFile, KeyStoreError, TlsConfigError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    paths = settings.paths.ensure()
    settings.export()  # the compile cache, the verifier and Ray's workers all use this state directory
    route_logs(paths.logs, verbose)
    joined_cluster = bool(os.environ.get("RAY_ADDRESS"))
    claims = [] if joined_cluster else ingress_port_claims(settings)
    if settings.verifier.enabled:
        claims += verifier_port_claims(settings)
    try:
        check_ports_free(claims)  # before anything heavy starts
    except PortInUse as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None

    starting = True
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        stop.set()
        if starting:
            raise Stopping(signal.Signals(signum).name)

    def handle_signals() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)

    handle_signals()
    verifier = None
    ray_started = False
    console.print(f"starting zkserve ({', '.join(settings.serving.models)}; demo models compile on first run) ...")
    app_key = None
    try:
        verifier = _start_verifier(settings, insecure_no_auth)
        app_key = _app_verifier_key(settings)
        ray_started = _start_app(settings, paths, verbose, joined_cluster, on_ray_started=handle_signals,
                                 insecure_no_auth=insecure_no_auth, verifier_token=app_key and app_key[1])
        starting = False
        _announce(settings, verifier)
        while not stop.wait(1.0):
            if verifier is not None and verifier.process.poll() is not None:
                # attested answers would pile up unsubmitted: stop loudly rather than serve half a stack
                raise VerifierExited(f"the verifier service exited with {verifier.process.returncode}; "
                                     f"see {verifier.log_path}. zkserve stopped")
    except Stopping:
        pass
    except PortInUse as error:  # raced: taken between the check and the bind
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    except (InsecureSrsRefused, RuntimeError, VerifierExited) as error:  # e.g. the verifier did not start
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    finally:
        starting = False
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        settings.paths.ray_address.unlink(missing_ok=True)
        _shut_down(verifier, ray_started, joined_cluster)
        if app_key is not None:
            _revoke_app_key(settings, app_key[0])


def _check_exposure(settings: Settings, insecure_no_auth: bool) -> None:
    """Refuses an open port beyond loopback, and unusable key stores or TLS files, up front."""
    from serve.security import Guard, require_safe_bind, tls

    zkserve = settings.zkserve_section()
    exposed = [("ingress", "the gRPC and REST ingress")]
    if settings.verifier.enabled:
        exposed.append(("verifier", "the verifier service"))
    for section, what in exposed:
        values = zkserve[section]
        require_safe_bind(values["host"], bool(values["auth_enabled"]), insecure_no_auth,
                          f"{section}.auth_enabled", what)
        Guard.for_section(zkserve, section).check_store()
        tls.credentials_for(values, section)


APP_KEY_NAME = "zkserve-app"


def _app_verifier_key(settings: Settings):
    """With verifier authentication on, the app submits its proofs with a key of its own, made
    for this run (right ``submit``) and revoked when `up` stops: (key id, token) or None."""
    if not (settings.verifier.enabled and settings.verifier.auth_enabled and settings.serving.submit_proofs):
        return None
    from serve.security import KeyStore, keys_path

    store = KeyStore(keys_path(settings.paths.root, settings.verifier.keys_file))
    key, token = store.create(APP_KEY_NAME, ["submit"], requests_per_s=0.0)
    return key.key_id, token


def _revoke_app_key(settings: Settings, key_id: str) -> None:
    from serve.security import KeyStore, KeyStoreError, keys_path

    try:
        KeyStore(keys_path(settings.paths.root, settings.verifier.keys_file)).revoke(key_id)
    except (KeyStoreError, OSError) as error:
        console.print(f"[yellow]warning:[/yellow] could not revoke the app's verifier key {key_id}: {error}")


def _start_verifier(settings: Settings, insecure_no_auth: bool = False):
    if not settings.verifier.enabled:
        return None
    # before the app, so the provers' first submissions find it listening
    from serve.app.models import resolve_packages
    from serve.stack import start_attestation

    packages = list(resolve_packages(list(settings.serving.models)).values())
    return start_attestation(settings, packages, insecure_no_auth)


def _start_app(
    settings: Settings,
    paths,
    verbose: bool,
    joined_cluster: bool,
    on_ray_started,
    insecure_no_auth: bool = False,
    verifier_token: str | None = None,
) -> bool:
    import logging

    from serve.security import keep_ray_on_loopback

    if not joined_cluster:
        keep_ray_on_loopback()
    import ray

    from serve.app import start
    from serve.lifecycle import quiet_ray

    if not verbose:
        quiet_ray(paths.logs)
    context = ray.init(
        include_dashboard=False,
        log_to_driver=verbose,  # honours RAY_ADDRESS
        logging_level=logging.INFO if verbose else logging.WARNING,
    )
    on_ray_started()  # Ray's core worker installs its own SIGTERM handler (a stack dump); ours comes back
    session_logs = Path(context.address_info.get("session_dir", "")) / "logs"
    link = paths.ray_logs
    if session_logs.is_dir() and not joined_cluster:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(session_logs, target_is_directory=True)  # Ray's own logs, found from the state dir
    start(settings.document(), insecure_no_auth, verifier_token)
    # `zkserve models` joins this cluster (Ray's own "auto" could find another user's cluster)
    # with the auth mode Ray chose for it (a local cluster gets token auth by default)
    paths.ray_address.parent.mkdir(parents=True, exist_ok=True)
    address = os.environ.get("RAY_ADDRESS") or context.address_info["gcs_address"]
    paths.ray_address.write_text(json.dumps({"address": address, "auth_mode": os.environ.get("RAY_AUTH_MODE", "")}))
    return True


def _announce(settings: Settings, verifier) -> None:
    """Only what is served."""
    ingress = settings.ingress
    guarded = f"{'TLS' if ingress.tls_cert_file else 'plaintext'}, {'API keys' if ingress.auth_enabled else 'no auth'}"
    console.print(
        f"gRPC ingress  {ingress.host}:{ingress.port}  "
        f"(inference.GRPCInferenceService, zkserve.v1.Attestation, grpc.health.v1.Health; {guarded})"
    )
    # host:port like the other lines (a URL here would read like Ray's dashboard banner)
    console.print(f"REST ingress  {ingress.host}:{ingress.http_port}  (KServe v2 REST under /v2, "
                  f"{'HTTPS' if ingress.tls_cert_file else 'HTTP'}; {guarded})")
    if verifier is not None:
        from serve.security import redact_url

        chain = (
            redact_url(settings.chain.rpc_url) or f"anvil at {settings.chain.anvil_host}:{settings.chain.anvil_port}"
        )
        metrics = settings.verifier.metrics_port
        console.print(
            f"verifier      {verifier.target}  (zkserve.v1.Verifier, grpc.health.v1.Health; chain: {chain}"
            + (f"; metrics {settings.verifier.host}:{metrics}/metrics)" if metrics else ")")
        )
    console.print(f"state         {settings.paths.root}  (logs in {settings.paths.logs})")
    console.print("Ctrl-C stops")


def _shut_down(verifier, ray_started: bool, joined_cluster: bool) -> None:
    """Bounded: the verifier is told first and stops beside Ray; each wait has a limit."""
    if verifier is not None:
        verifier.terminate()
    if ray_started:
        import ray

        if not joined_cluster:  # a cluster we joined keeps its app
            _stop_serve_bounded(SERVE_STOP_S)
        ray.shutdown()
    if verifier is not None:
        verifier.stop(VERIFIER_STOP_S)


def _read_inputs(path: Path, input_names: list[str]) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path) as archive:
            return {name: archive[name].astype(np.float32) for name in input_names}
    if len(input_names) != 1:
        raise typer.BadParameter(
            f"the model takes {len(input_names)} inputs: give an .npz keyed by {', '.join(input_names)}"
        )
    return {input_names[0]: np.load(path).astype(np.float32)}


def predict_command(
    model: str = typer.Argument(..., help="served model name, e.g. demo-mlp"),
    input: Path = typer.Option(..., "--input", exists=True, dir_okay=False, help=".npy of rows (.npz by input name)"),
    attest: str | None = typer.Option(None, help="none | async | sync (default: the server's)"),
    proof_out: Path | None = typer.Option(None, help="write the proof JSON here (attest=sync)"),
    address: str | None = typer.Option(None, help="ingress host:port (default: from the config)"),
    config: Path | None = typer.Option(None, exists=True, dir_okay=False),
) -> None:
    """Run one prediction over gRPC (Open Inference Protocol) and print outputs and proof fields."""
    from inference import grpc_service_pb2 as oip
    from inference import grpc_service_pb2_grpc as oip_grpc

    from serve.oip_client import Prediction, infer_request

    if attest is not None and attest not in ("none", "async", "sync"):
        raise typer.BadParameter("--attest must be none, async or sync")
    settings = _settings(config)
    channel, auth = _ingress_channel(settings, _address(settings, address))
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    try:
        metadata = stub.ModelMetadata(oip.ModelMetadataRequest(name=model), timeout=30, metadata=auth)
        inputs = _read_inputs(input, [t.name for t in metadata.inputs])
        for spec in metadata.inputs:
            if inputs[spec.name].ndim == len(spec.shape) - 1:
                inputs[spec.name] = inputs[spec.name][None, ...]  # one row without its batch dimension
        prediction = Prediction.from_response(
            stub.ModelInfer(infer_request(model, inputs, attest), timeout=600, metadata=auth)
        )
    except grpc.RpcError as error:
        console.print(f"[red]{error.code().name}:[/red] {error.details()}")
        raise typer.Exit(1) from None
    if proof_out and prediction.proof is not None:
        proof_out.write_bytes(prediction.proof)
    result = {
        "model": model,
        "outputs": {name: array.tolist() for name, array in prediction.outputs.items()},
        **prediction.parameters,
    }
    print(json.dumps(result, indent=2))


def status_command(
    address: str | None = typer.Option(None, help="ingress host:port (default: from the config)"),
    config: Path | None = typer.Option(None, exists=True, dir_okay=False),
) -> None:
    """Models, replicas, ONNX Runtime providers, proof queue and proofs done/failed."""
    from zkserve.v1 import attestation_pb2 as pb
    from zkserve.v1 import attestation_pb2_grpc as pb_grpc

    settings = _settings(config)
    target = _address(settings, address)
    channel, auth = _ingress_channel(settings, target)
    try:
        models = pb_grpc.AttestationStub(channel).ListModels(pb.ListModelsRequest(), timeout=30, metadata=auth).models
    except grpc.RpcError as error:
        console.print(f"[red]ingress {target} not reachable:[/red] {error.code().name} {error.details()}")
        raise typer.Exit(1) from None
    replicas = _replica_counts()
    print(f"ingress {target}")
    for m in models:
        srs = "INSECURE SRS (dev or unverified)" if m.insecure_srs else "ceremony SRS"
        print(f"{m.name}  model_id {m.model_id}  ({srs}, {m.circuit_batch_size} row(s)/proof)")
        print(f"  providers  {', '.join(m.providers)}")
        # on CPU nodes ONNX Runtime runs inside the ingress: there is no Predictor deployment
        predictor = replicas.get(f"Predictor-{m.name}")
        if predictor is None:
            predictor = f"in the ingress ({replicas['Ingress']})" if "Ingress" in replicas else "?"
        print(f"  replicas   predictor {predictor}, prover {replicas.get(f'Prover-{m.name}', '?')}")
        print(
            f"  proofs     queued {m.proofs_queued}, proving {m.proofs_proving}, done {m.proofs_done}, "
            f"failed {m.proofs_failed}"
        )


def _replica_counts() -> dict[str, int]:
    """Running replicas per deployment, when the Ray cluster is reachable from here."""
    try:
        import ray
        from ray import serve

        from serve.app import APP_NAME

        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), include_dashboard=False, log_to_driver=False)
        counts: dict[str, int] = {}
        for app_name, app in serve.status().applications.items():
            if app_name != APP_NAME and not app_name.startswith(f"{APP_NAME}-"):
                continue  # the app itself, and the provers of models added live (`zkserve models add`)
            for name, d in app.deployments.items():
                counts[name] = counts.get(name, 0) + (sum(d.replica_states.values())
                                                      if hasattr(d, "replica_states") else 0)
        return counts
    except Exception:  # noqa: BLE001 - replicas are extra information; the rest still prints
        return {}


def register(app: typer.Typer) -> None:
    app.command("up")(up_command)
    app.command("predict")(predict_command)
    app.command("status")(status_command)
