"""zkserve's typed configuration: one YAML file plus environment overrides.

The file is Ray Serve's own config schema (``applications``, ``grpc_options``,
``http_options``, ``proxy_location``, ...) with one extra top-level ``zkserve`` section,
described by the models below (one per section, ``extra="forbid"``, with ranges and
descriptions, in the manner of Ray Serve's ``ray/serve/schema.py``). Every key of the
``zkserve`` section can be overridden by an environment variable ``ZKSERVE_<SECTION>_<KEY>``
(``ZKSERVE_STATE_DIR`` for the top-level key), e.g. ``ZKSERVE_VERIFIER_PORT=9200``. Values
from the environment are typed by the same models; lists are written as YAML
(``ZKSERVE_SERVING_MODELS='[demo-mlp, /pkgs/credit]'``).

A key that does not exist, in the file or the environment, is an error naming it and the
nearest valid key: ``serving.max_batchsize`` is refused with "did you mean max_batch_size?".
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from circuits.paths import StatePaths
from serve.ports import client_target
from serve.protocol.types import AttestMode  # one enum for the wire and the config

ENV_PREFIX = "ZKSERVE_"
# Variables with the prefix that are not settings: the state directory, the chain's signing
# key (kept out of the settings so it is never dumped or logged), the test suite's cache.
NOT_SETTINGS = frozenset({"ZKSERVE_HOME", "ZKSERVE_CHAIN_PRIVATE_KEY", "ZKSERVE_TEST_HOME", "ZKSERVE_CONFIG",
                          "ZKSERVE_API_KEY", "ZKSERVE_PACKAGE_CACHE", "ZKSERVE_SRS_TRUSTED_SHA256"})
# The top-level keys of Ray Serve's config file (ray.serve.schema.ServeDeploySchema); they
# pass through untouched. tests/test_settings.py checks this list against the installed Ray.
RAY_SERVE_KEYS = frozenset({
    "proxy_location", "http_options", "grpc_options", "controller_options", "logging_config",
    "tracing_config", "applications", "target_capacity",
})

class ConfigError(ValueError):
    """A config file or variable that cannot be used; the message names the key or variable."""


class ProofBatching(StrEnum):
    """``per_request``: one proof per request; ``shared``: concurrent requests share one proof."""

    PER_REQUEST = "per_request"
    SHARED = "shared"


class SettingsSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _port(description: str, default: int, allow_zero: bool = False) -> Any:
    return Field(default, ge=0 if allow_zero else 1, le=65535, description=description)


class ExposedSettings(SettingsSection):
    """Authentication, encryption and quotas of a port zkserve opens (serve.security)."""

    auth_enabled: bool = Field(False, description="Bearer API keys on every RPC but health; needed to bind "
                                                  "beyond loopback (or --insecure-no-auth).")
    keys_file: Path | None = Field(None, description="API key store; null: <state_dir>/auth/keys.json "
                                                      "(`zkserve keys create|list|revoke`).")
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain; with tls_key_file the port "
                                                          "speaks TLS only.")
    tls_key_file: Path | None = Field(None, description="PEM private key (mode 0600).")
    requests_per_s: float = Field(0.0, ge=0, le=1e9, description="Requests per second per API key (anonymous "
                                                                 "callers share one); 0: no quota.")
    burst_s: float = Field(2.0, gt=0, le=3600, description="A key may burst requests_per_s x burst_s requests.")
    max_streams: int = Field(128, ge=1, le=65536, description="Server streams (WatchProof, WatchAttestation) "
                                                              "open at once; past it RESOURCE_EXHAUSTED.")
    stream_max_s: float = Field(600.0, gt=0, le=86400, description="A server stream ends (DEADLINE_EXCEEDED) "
                                                                   "after this long; the client watches again.")

    @model_validator(mode="after")
    def _tls_pair(self) -> ExposedSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file for TLS, or neither")
        return self


class IngressSettings(ExposedSettings):
    host: str = Field("127.0.0.1", min_length=1, description="Address the gRPC ingress binds to.")
    port: int = _port("gRPC port of the ingress (Open Inference Protocol and zkserve.v1).", 9000)
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=1024**3,
                                   description="Largest request accepted; bigger ones get RESOURCE_EXHAUSTED.")
    http_port: int = _port("Port of the KServe v2 REST (Open Inference Protocol over HTTP) endpoint, same host.", 8000)
    max_queued_proofs_per_key: int = Field(256, ge=0, le=10**7, description="Unfinished proofs one API key may "
                                                                            "have in the app (with auth on); 0: no "
                                                                            "bound beyond serving.max_queued_proofs.")


class ServingSettings(SettingsSection):
    models: list[str] = Field(["demo-mlp", "demo-cnn"], min_length=1,
                              description="Served models: demo names or circuit package directories.")
    default_attest: AttestMode = Field(AttestMode.ASYNC, description="Attest mode of a request that names none.")
    max_batch_size: int = Field(16, ge=1, le=4096, description="Most rows ONNX Runtime runs in one dynamic batch.")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, le=10,
        description="How long a batch waits to fill. Measured: 0 batches whatever queued during the last run; "
                    "5 ms cost 40% of the one-client rate.")
    num_gpus: float = Field(0.25, ge=0, le=64,
                            description="GPUs per predictor replica, used only when a GPU is visible.")
    prover_replicas: int = Field(1, ge=1, le=1024, description="Most prover replicas per model (autoscaled on queue).")
    prover_cores: int | None = Field(None, ge=1, le=4096,
                                     description="Cores given to proving (replicas x RAYON_NUM_THREADS); null: all.")
    prover_num_cpus: float = Field(0.5, gt=0, le=1024, description="Ray logical CPUs reserved per prover replica.")
    proof_batch_wait_timeout_s: float = Field(0.05, ge=0, le=60,
                                              description="With proof_batching=shared: wait this long to fill a proof.")
    ort_threads: int | None = Field(1, ge=1, le=1024,
                                    description="ONNX Runtime intra-op threads per predictor; null: ORT's default.")
    proof_batching: ProofBatching = Field(ProofBatching.PER_REQUEST, description="How requests map to proofs.")
    max_queued_proofs: int = Field(1024, ge=1, le=10**7, description="Unfinished proofs the app holds; attested "
                                                                 "requests past this get RESOURCE_EXHAUSTED.")
    submit_proofs: bool = Field(True, description="Send every proof to the verifier service (anchor mode).")

    @field_validator("models", mode="before")
    @classmethod
    def _one_model_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("models")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        repeated = sorted({m for m in value if value.count(m) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {', '.join(repeated)}")
        return value


class VerifierSettings(ExposedSettings):
    enabled: bool = Field(True, description="`zkserve up` starts the verifier service (and the local chain).")
    host: str = Field("127.0.0.1", min_length=1, description="Address the verifier service binds to.")
    port: int = _port("gRPC port of the verifier service.", 9100)
    metrics_port: int = _port("Prometheus /metrics port of the verifier service; 0 turns it off.", 9101,
                               allow_zero=True)
    anchor_batch_size: int = Field(16, ge=1, le=65536, description="Anchor when this many proof hashes are queued ...")
    anchor_max_age_s: float = Field(10.0, gt=0, le=86400, description="... or when the oldest has waited this long.")
    confirmations: int = Field(1, ge=0, le=1000, description="Blocks a transaction must be buried under to be final.")
    retry_base_s: float = Field(0.5, gt=0, le=3600, description="First back-off after a failed chain call.")
    retry_max_s: float = Field(30.0, gt=0, le=86400, description="Longest back-off between chain calls.")
    requests_per_s: float = Field(100.0, ge=0, le=1e9, description="Requests per second per API key (anonymous "
                                                                   "callers share one); 0: no quota.")
    max_queued_proofs_per_key: int = Field(1000, ge=0, le=10**9, description="Proofs one key may have waiting for "
                                                                             "the chain; 0: no bound.")
    max_queued_proofs: int = Field(100000, ge=0, le=10**9, description="Proofs waiting for the chain, all keys "
                                                                       "together; 0: no bound.")
    max_concurrent_rpcs: int = Field(32, ge=1, le=4096, description="Unary RPCs in flight (each holds a thread).")
    reconcile_interval_s: float = Field(30.0, gt=0, le=86400, description="How often the verifier checks its "
                                                                          "records against the chain.")

    @model_validator(mode="after")
    def _backoff_order(self) -> VerifierSettings:
        if self.retry_max_s < self.retry_base_s:
            raise ValueError(f"retry_max_s ({self.retry_max_s}) is below retry_base_s ({self.retry_base_s})")
        return self


class ChainSettings(SettingsSection):
    rpc_url: str | None = Field(None, pattern=r"^(https?|wss?)://\S+$",
                                description="JSON-RPC endpoint of the chain; null starts a local anvil.")
    chain_id: int = Field(31337, ge=1, description="Chain id the endpoint must report.")
    anvil_host: str = Field("127.0.0.1", min_length=1, description="Address of the local anvil.")
    anvil_port: int = _port("Port of the local anvil.", 8545)
    private_key_file: Path | None = Field(
        None, description="File holding the signing key (or $ZKSERVE_CHAIN_PRIVATE_KEY); never logged.")

    @property
    def local(self) -> bool:
        return not self.rpc_url

    @property
    def url(self) -> str:
        return self.rpc_url or f"http://{self.anvil_host}:{self.anvil_port}"


class SrsSettings(SettingsSection):
    trusted_sha256: list[str] = Field(
        [], description="sha256 of SRS files the operator checked against a public ceremony; any other --srs "
                        "file is an unverified, insecure SRS (circuits.srs).")

    @field_validator("trusted_sha256", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return value.replace(",", " ").split() if isinstance(value, str) else value

    @field_validator("trusted_sha256")
    @classmethod
    def _hex_digests(cls, value: list[str]) -> list[str]:
        digests = [d.strip().lower().removeprefix("0x") for d in value]
        bad = [d for d in digests if len(d) != 64 or any(c not in "0123456789abcdef" for c in d)]
        if bad:
            raise ValueError(f"not a sha256 hex digest: {bad[0]!r}")
        return digests


class Settings(SettingsSection):
    """The ``zkserve`` section, plus Ray Serve's own top-level keys in ``ray``."""

    state_dir: Path | None = Field(
        None, description="State directory; null: $ZKSERVE_HOME, else ./.zkserve (see circuits.paths). "
                           "load_settings resolves it to an absolute path.")
    ingress: IngressSettings = Field(default_factory=IngressSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    verifier: VerifierSettings = Field(default_factory=VerifierSettings)
    chain: ChainSettings = Field(default_factory=ChainSettings)
    srs: SrsSettings = Field(default_factory=SrsSettings)
    ray: dict[str, Any] = Field(default_factory=dict, exclude=True,
                                description="Ray Serve's top-level keys of the file, untouched.")

    @property
    def paths(self) -> StatePaths:
        return StatePaths.resolve(self.state_dir)

    def export(self) -> None:
        """Tells child processes and Ray workers the state directory and the trusted SRS hashes
        (the circuits library reads both from the environment)."""
        from circuits.srs import TRUSTED_ENV

        self.paths.export()
        if self.srs.trusted_sha256:
            os.environ[TRUSTED_ENV] = ",".join(self.srs.trusted_sha256)

    @property
    def verifier_target(self) -> str:
        """Where a client on this machine dials the verifier (loopback when it binds every interface)."""
        return client_target(self.verifier.host, self.verifier.port)

    @property
    def ingress_target(self) -> str:
        """Where a client on this machine dials the gRPC ingress (loopback when it binds every interface)."""
        return client_target(self.ingress.host, self.ingress.port)

    def zkserve_section(self) -> dict[str, Any]:
        """The section as plain data (enums as strings, ``state_dir`` resolved)."""
        section = self.model_dump(mode="json")
        section["state_dir"] = str(self.paths.root)
        return section

    def document(self) -> dict[str, Any]:
        """The whole config document: Ray Serve's keys and the resolved ``zkserve`` section."""
        return {**self.ray, "zkserve": self.zkserve_section()}


SECTIONS: dict[str, type[SettingsSection]] = {
    name: field.annotation for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, SettingsSection)
}


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else f"; valid: {', '.join(sorted(choices))}"


def _settable_keys(model: type[BaseModel]) -> list[str]:
    return [name for name, field in model.model_fields.items() if not field.exclude]


def _env_names() -> dict[str, tuple[str, ...]]:
    """Every settings variable, mapped to its location in the section."""
    names = {f"{ENV_PREFIX}STATE_DIR": ("state_dir",)}
    for section, model in SECTIONS.items():
        for key in _settable_keys(model):
            names[f"{ENV_PREFIX}{section}_{key}".upper()] = (section, key)
    return names


def _env_value(text: str) -> Any:
    """YAML for lists, ``{...}`` mappings and null; the raw text otherwise, so the model types it
    (``"12"`` -> 12 for an int, stays "12" for a str; ``"::"`` stays a host, not a YAML mapping)."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(parsed, dict) and not text.lstrip().startswith("{"):
        return text
    return parsed if parsed is None or isinstance(parsed, (list, dict)) else text


def _environment_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    """{location: (variable, value)}; an unknown variable in a known section is an error."""
    known = _env_names()
    sections = {f"{ENV_PREFIX}{s.upper()}_": s for s in SECTIONS}
    overrides: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        if name in known:
            overrides[known[name]] = (name, _env_value(text))
            continue
        in_section = any(name.startswith(prefix) for prefix in sections)
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6 if in_section else 0.85)
        if in_section or close:  # other ZKSERVE_* variables may belong to other tools
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"environment variable {name} is not a zkserve setting{hint}")
    return overrides


def _check_keys(raw: Mapping[str, Any], where: str) -> None:
    """Unknown keys anywhere in the section, each named with the nearest valid one."""
    for key, value in raw.items():
        if key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}zkserve.{key} must be a mapping of settings, not {type(value).__name__}")
            for sub in value:
                if sub not in _settable_keys(SECTIONS[key]):
                    raise ConfigError(f"{where}unknown key zkserve.{key}.{sub}"
                                      f"{_suggest(str(sub), _settable_keys(SECTIONS[key]))}")
        elif key not in _settable_keys(Settings):
            raise ConfigError(f"{where}unknown key zkserve.{key}{_suggest(str(key), _settable_keys(Settings))}")


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return document


def _describe(error: dict, sources: dict[tuple[str, ...], str], where: str) -> str:
    location = tuple(str(part) for part in error["loc"])
    variable = next((sources[location[:n]] for n in (2, 1) if location[:n] in sources), None)
    key = "zkserve." + ".".join(location) if location else "zkserve"
    subject = f"{variable} (setting {key})" if variable else f"{where}{key}"
    return f"{subject}: {error['msg']}, got {error.get('input')!r}"


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of a YAML file (or the defaults) with ``ZKSERVE_*`` overrides applied.

    ``path=None`` reads ``$ZKSERVE_CONFIG`` when set. Raises ``ConfigError`` naming the key
    or variable at fault.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get(f"{ENV_PREFIX}CONFIG") or None
    document = _read_file(Path(path)) if path is not None else {}
    where = f"{path}: " if path is not None else ""
    unknown_top = [k for k in document if k != "zkserve" and k not in RAY_SERVE_KEYS]
    if unknown_top:
        choices = sorted(RAY_SERVE_KEYS | {"zkserve"})
        raise ConfigError(f"{where}unknown top-level key {unknown_top[0]}{_suggest(str(unknown_top[0]), choices)}")
    section = document.get("zkserve") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}the zkserve section must be a mapping")
    _check_keys(section, where)
    raw: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in section.items() if v is not None}
    sources: dict[tuple[str, ...], str] = {}
    for location, (variable, value) in _environment_overrides(environ).items():
        sources[location] = variable
        if len(location) == 1:
            raw[location[0]] = value
        else:
            raw.setdefault(location[0], {})[location[1]] = value
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError("; ".join(_describe(e, sources, where) for e in error.errors())) from None
    settings.ray = {k: v for k, v in document.items() if k in RAY_SERVE_KEYS}
    settings.state_dir = StatePaths.resolve(settings.state_dir, environ).root  # one resolution, then fixed
    return settings


def settings_from_document(document: Mapping[str, Any]) -> Settings:
    """The typed settings of a document made by ``Settings.document()`` (or ``load_config``)."""
    try:
        settings = Settings.model_validate(document.get("zkserve") or {})
    except ValidationError as error:
        raise ConfigError("; ".join(_describe(e, {}, "") for e in error.errors())) from None
    settings.ray = {k: v for k, v in document.items() if k in RAY_SERVE_KEYS}
    return settings


def as_settings(config: Settings | Mapping[str, Any]) -> Settings:
    """Settings as they are, or from a config document (callers still holding the dict form)."""
    return config if isinstance(config, Settings) else settings_from_document(config)


__all__ = [
    "AttestMode", "ChainSettings", "ConfigError", "IngressSettings", "ProofBatching", "ServingSettings", "Settings",
    "StatePaths", "VerifierSettings", "as_settings", "load_settings", "settings_from_document",
]
