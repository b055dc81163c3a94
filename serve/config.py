"""zkserve configuration: one YAML file plus environment overrides.

The file is Ray Serve's own config schema (``applications``, ``grpc_options``, ...) with
one extra top-level ``zkserve`` section. Every key of the ``zkserve`` section can be
overridden by an environment variable named ``ZKSERVE_<SECTION>_<KEY>`` in upper case,
e.g. ``ZKSERVE_VERIFIER_PORT=9200`` or ``ZKSERVE_CHAIN_RPC_URL=http://node:8545``.
Values from the environment are parsed as YAML scalars, so ``true``/``12``/``0.5`` work.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from circuits.paths import state_dir

# The defaults run everything locally (DESIGN.md, "Defaults").
DEFAULTS: dict[str, Any] = {
    "state_dir": None,  # None -> $ZKSERVE_HOME or ./.zkserve
    "ingress": {
        "host": "127.0.0.1",
        "port": 9000,
        "max_request_bytes": 4 * 1024 * 1024,
        "http_port": 8000,  # Ray Serve's HTTP proxy starts beside the gRPC one; nothing is served on it
        "auth_enabled": False,  # bearer API keys on every RPC but health; needed to bind beyond loopback
        "keys_file": None,  # None -> <state_dir>/auth/keys.json (`zkserve keys create|list|revoke`)
        "tls_cert_file": None,  # PEM certificate chain; with tls_key_file, the port speaks TLS only
        "tls_key_file": None,  # PEM private key, mode 0600
        "requests_per_s": 0.0,  # per API key (anonymous callers share one); 0 -> no quota
        "burst_s": 2.0,  # a key may burst requests_per_s x burst_s requests
    },
    "serving": {
        "models": ["demo-mlp", "demo-cnn"],  # demo names or circuit package directories
        "default_attest": "async",
        "max_batch_size": 16,
        "batch_wait_timeout_s": 0.0,  # measured: 0 batches whatever queued during the last run; 5 ms cost 40% at 1 client
        "num_gpus": 0.25,  # per predictor replica, used only when a GPU is visible
        "prover_replicas": 1,  # most prover replicas per model (autoscaled on queue length)
        "prover_cores": None,  # cores given to proving: replicas x RAYON_NUM_THREADS; None -> all
        "prover_num_cpus": 0.5,  # Ray logical CPUs reserved per prover replica
        "proof_batch_wait_timeout_s": 0.05,  # proof_batching: shared waits this long to fill a proof
        "ort_threads": 1,  # ONNX Runtime intra-op threads per predictor replica (None -> ORT default)
        "proof_batching": "per_request",  # or "shared"
        "submit_proofs": True,  # the prover sends every proof to the verifier service (anchor mode)
    },
    "verifier": {
        "enabled": True,  # `zkserve up` starts it (with the local chain) beside the app
        "host": "127.0.0.1",
        "port": 9100,
        "metrics_port": 9101,  # Prometheus /metrics of the verifier service; 0 turns it off
        "anchor_batch_size": 16,  # anchor when this many hashes are queued ...
        "anchor_max_age_s": 10.0,  # ... or the oldest has waited this long
        "confirmations": 1,
        "retry_base_s": 0.5,
        "retry_max_s": 30.0,
        "auth_enabled": False,  # bearer API keys on every RPC but health; needed to bind beyond loopback
        "keys_file": None,  # None -> <state_dir>/auth/keys.json (`zkserve keys create|list|revoke`)
        "tls_cert_file": None,  # PEM certificate chain; with tls_key_file, the port speaks TLS only
        "tls_key_file": None,  # PEM private key, mode 0600
        "requests_per_s": 100.0,  # per API key (anonymous callers share one); 0 -> no quota
        "burst_s": 2.0,  # a key may burst requests_per_s x burst_s requests
        "max_queued_proofs_per_key": 1000,  # proofs one key may have waiting for the chain; 0 -> no bound
        "max_queued_proofs": 100000,  # proofs waiting for the chain, all keys together
        "max_concurrent_rpcs": 32,  # unary RPCs in flight (each holds a worker thread)
        "max_streams": 128,  # WatchAttestation streams open at once
        "stream_max_s": 600.0,  # a WatchAttestation stream ends (DEADLINE_EXCEEDED) after this long
        "reconcile_interval_s": 30.0,  # how often the verifier checks its records against the chain
    },
    "chain": {
        "rpc_url": None,  # None -> start the local anvil
        "chain_id": 31337,
        "anvil_host": "127.0.0.1",
        "anvil_port": 8545,
        "private_key_file": None,  # or $ZKSERVE_CHAIN_PRIVATE_KEY; never logged
    },
}

ENV_PREFIX = "ZKSERVE_"


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_env(section: dict, prefix: str, environ: dict[str, str]) -> None:
    for key, value in section.items():
        name = f"{prefix}{key}".upper()
        if isinstance(value, dict):
            _apply_env(value, f"{name}_", environ)
        elif name in environ:
            section[key] = yaml.safe_load(environ[name])


class ConfigError(ValueError):
    pass


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Returns the full document (Ray Serve keys untouched) with a resolved ``zkserve`` section."""
    document: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        document = yaml.safe_load(path.read_text()) or {}
        if not isinstance(document, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    section = _merge(DEFAULTS, document.get("zkserve") or {})
    unknown = set(section) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown keys in the zkserve section: {', '.join(sorted(unknown))}")
    _apply_env(section, ENV_PREFIX, dict(os.environ if environ is None else environ))
    section["state_dir"] = str(Path(section["state_dir"]).resolve()) if section["state_dir"] else str(state_dir())
    document["zkserve"] = section
    return document
