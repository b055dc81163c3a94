"""Live models: add, replace and remove a served model on a running app (``zkserve models``).

The Ingress replica serves gRPC and REST itself, so redeploying it would restart its servers and
drop the other models' requests. Instead each added model version gets its Prover (and, on GPU
nodes, its Predictor) as a Ray Serve application of its own, and the Ingress changes its model
table through control methods called over a DeploymentHandle (never on the gRPC or REST ports).

Order of an add: chain registration (when the verifier is on), then the prover application
(running, its package loaded), then the Ingress table: the model takes no traffic before its
proofs can be anchored and made. A remove takes the model out of the table at once (NOT_FOUND),
waits for its requests and proofs in flight, then deletes its applications.

This runs in a driver that joined the cluster of `zkserve up` (``connect``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from dataclasses import replace
from pathlib import Path

from circuits import CircuitPackage
from serve.app.builder import (
    APP_NAME,
    bound_predictor,
    bound_prover,
    deployment_overrides,
    live_app_name,
    proofs_in_flight,
)
from serve.app.models import ModelSpec
from serve.settings import Settings

INGRESS = "Ingress"
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CALL_TIMEOUT_S = 120.0


class LiveModelError(RuntimeError):
    """A live-model operation that cannot go ahead; the message says what to do."""


# --- joining the running app ------------------------------------------------------------------------
def ray_address(settings: Settings) -> tuple[str, str] | None:
    """(address, Ray auth mode): $RAY_ADDRESS, else what `zkserve up` recorded for this state directory."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], os.environ.get("RAY_AUTH_MODE", "")
    path = settings.paths.ray_address
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
        return str(recorded["address"]), str(recorded.get("auth_mode") or "")
    except (ValueError, KeyError, TypeError):
        raise LiveModelError(f"{path} is not what `zkserve up` writes; restart `zkserve up`") from None


def _reachable(address: str, timeout_s: float = 2.0) -> bool:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return True  # not host:port ("auto", a URL): let Ray say what is wrong
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def connect(settings: Settings) -> None:
    """Joins the Ray cluster of `zkserve up` for this state directory."""
    import logging

    import ray

    found = ray_address(settings)
    if found is None:
        raise LiveModelError(f"no running `zkserve up` recorded for the state directory {settings.paths.root} "
                             f"({settings.paths.ray_address} is missing): start `zkserve up`, or set RAY_ADDRESS")
    address, auth_mode = found
    if not _reachable(address):
        raise LiveModelError(f"the Ray cluster of `zkserve up` at {address} is not reachable: is `zkserve up` "
                             f"still running for {settings.paths.root}?")
    if auth_mode and "RAY_AUTH_MODE" not in os.environ:
        # Ray 2.60 gives a local cluster token auth by default, but a driver joining it by address
        # sends its token (~/.ray/auth_token) only when told to; Ray reads the mode from its Config
        from ray._raylet import Config

        os.environ["RAY_AUTH_MODE"] = auth_mode
        Config.initialize("")
    from serve.security import is_loopback, keep_ray_on_loopback

    if is_loopback(address.rpartition(":")[0]):
        # `up`'s own cluster lives on 127.0.0.1 (keep_ray_on_loopback): this driver must say it is
        # on that node too, or it looks for a raylet at the machine's outward address
        keep_ray_on_loopback()
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 ignore_reinit_error=True)
    except ConnectionError as error:
        raise LiveModelError(f"cannot join the Ray cluster of `zkserve up` at {address}: {error.__cause__ or error}"
                             ) from None


def ingress(settings: Settings):
    """The DeploymentHandle of the app's Ingress, checked to be the app of this state directory."""
    from ray import serve

    status = serve.status().applications.get(APP_NAME)
    if status is None or INGRESS not in status.deployments:
        raise LiveModelError("no zkserve app runs on this Ray cluster; start `zkserve up` first")
    running = status.deployments[INGRESS].replica_states.get("RUNNING", 0)
    if running != 1:
        # a control call reaches one replica; several would disagree on the served models
        raise LiveModelError(f"live models need exactly one running Ingress replica, the app has {running}; "
                             "list the model in zkserve.serving.models and restart `zkserve up` instead")
    handle = serve.get_deployment_handle(INGRESS, app_name=APP_NAME)
    proofs_dir = handle.proofs_dir.remote().result(timeout_s=CALL_TIMEOUT_S)
    if Path(proofs_dir).resolve() != settings.paths.proofs.resolve():
        raise LiveModelError(f"the zkserve app on this Ray cluster keeps its proofs in {proofs_dir}, not under "
                             f"{settings.paths.root}: use the config (or ZKSERVE_HOME) that app was started with")
    return handle


# --- packages -------------------------------------------------------------------------------------
def in_state_cache(package: CircuitPackage, settings: Settings) -> CircuitPackage:
    """The package under ``<state>/circuits``, copied there when it lives elsewhere: the verifier
    service finds the packages of the proofs it is sent there."""
    cache = settings.paths.circuits
    if package.root.resolve().is_relative_to(cache.resolve()):
        return package
    target = cache / f"{package.name}-{package.model_id.removeprefix('0x')[:12]}"
    if not (target / "manifest.json").is_file():
        work = target.with_name(target.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(package.root, work)
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    copied = CircuitPackage.load(target)
    if copied.model_id != package.model_id:
        raise LiveModelError(f"{target} holds model {copied.model_id}, not {package.model_id}; remove it and retry")
    return copied


# --- operations ---------------------------------------------------------------------------------
def table(handle) -> list[dict]:
    return handle.model_table.remote().result(timeout_s=CALL_TIMEOUT_S)


def add(settings: Settings, package: CircuitPackage, name: str | None = None,
        timeout_s: float = CALL_TIMEOUT_S) -> dict:
    """Serves ``package`` (as ``name``); a served name with another model_id gets a new version."""
    import ray
    from ray import serve

    if name is not None and not MODEL_NAME.fullmatch(name):
        raise LiveModelError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, first a "
                             "letter or digit): it appears in URLs and application names")
    handle = ingress(settings)
    package = in_state_cache(package, settings)
    spec = ModelSpec.from_package(package)
    if name:
        spec = replace(spec, name=name)
    current = next((e for e in table(handle) if e["name"] == spec.name and e["state"] == "READY"), None)
    if current is not None and current["model_id"] == spec.model_id:
        return {**current, "unchanged": True}
    if settings.verifier.enabled:
        from serve.stack import register_models

        register_models(settings, [package])  # bound on chain before the model takes any traffic
    document = settings.document()
    zkserve, overrides = document["zkserve"], deployment_overrides(document)
    prover = serve.run(bound_prover(zkserve, spec, overrides), name=live_app_name("prover", spec.name, spec.model_id),
                       route_prefix=None)
    predictor = None
    if ray.cluster_resources().get("GPU", 0) > 0 and settings.serving.num_gpus > 0:
        predictor = serve.run(bound_predictor(zkserve, spec, overrides),
                              name=live_app_name("predictor", spec.name, spec.model_id), route_prefix=None)
    added = handle.add_model.remote(spec, prover, predictor, proofs_in_flight(zkserve, spec)).result(
        timeout_s=CALL_TIMEOUT_S)
    if added["replaced_model_id"]:
        added["replaced_proofs"] = retire(handle, spec.name, added["replaced_model_id"], timeout_s)
    return added


def remove(settings: Settings, name: str, timeout_s: float = CALL_TIMEOUT_S) -> list[dict]:
    """Stops serving ``name`` at once; returns each retired version once its proofs have finished."""
    handle = ingress(settings)
    entries = [e for e in table(handle) if e["name"] == name]
    if not entries:
        served = ", ".join(sorted({e["name"] for e in table(handle)})) or "none"
        raise LiveModelError(f"no model {name!r} is served; models: {served}")
    if any(e["state"] == "READY" for e in entries):
        handle.remove_model.remote(name).result(timeout_s=CALL_TIMEOUT_S)
    for entry in entries:
        entry["proofs_waited"] = retire(handle, name, entry["model_id"], timeout_s)
    return entries


def retire(handle, name: str, model_id: str, timeout_s: float) -> int:
    """Waits for the version's proofs in flight, then deletes its applications."""
    from ray import serve

    try:
        waited = handle.retire_model.remote(name, model_id).result(timeout_s=timeout_s)
    except TimeoutError:
        raise LiveModelError(f"{name} ({model_id}) no longer takes requests, but its proofs in flight did not "
                             f"finish within {timeout_s:g} s; its prover keeps proving them. Run "
                             f"`zkserve models remove {name}` again later to delete it") from None
    applications = serve.status().applications
    for kind in ("prover", "predictor"):
        app = live_app_name(kind, name, model_id)
        if app in applications:
            serve.delete(app)
    return waited
