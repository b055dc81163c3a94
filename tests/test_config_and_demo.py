"""Configuration (one file + environment overrides) and the `zkserve demo` command."""

from __future__ import annotations

import pytest

from serve.config import ConfigError, load_config
from serve.ports import free_port
from tests.conftest import run_cli


def test_config_file_and_environment_override(tmp_path):
    path = tmp_path / "zkserve.yaml"
    path.write_text("applications: []\nzkserve:\n  verifier:\n    port: 9300\n    confirmations: 2\n")
    config = load_config(path, environ={"ZKSERVE_VERIFIER_PORT": "9400", "ZKSERVE_SERVING_SUBMIT_PROOFS": "true"})
    section = config["zkserve"]
    assert section["verifier"]["port"] == 9400  # the environment wins over the file
    assert section["verifier"]["confirmations"] == 2  # the file wins over the default
    assert section["serving"]["submit_proofs"] is True
    assert section["ingress"]["port"] == 9000  # untouched default
    assert config["applications"] == []  # Ray Serve's own keys pass through


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("zkserve:\n  verifierr: {}\n")
    with pytest.raises(ConfigError, match="verifierr"):
        load_config(bad)


def test_demo_prints_one_attested_prediction(demo_packages, tmp_path):
    """The whole stack: Ray Serve app, gRPC ModelInfer(attest=sync), the prover's submission to
    the verifier service, anchoring on a real anvil, and the Merkle path checked on chain."""
    ports = {f"ZKSERVE_{key}": str(free_port()) for key in
             ("INGRESS_PORT", "INGRESS_HTTP_PORT", "VERIFIER_PORT", "VERIFIER_METRICS_PORT", "CHAIN_ANVIL_PORT")}
    done = run_cli("demo", env={**ports, "ZKSERVE_HOME": str(tmp_path / "home"),
                                "ZKSERVE_VERIFIER_ANCHOR_MAX_AGE_S": "0.5"})
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "verified     True" in out and "proof hash   0x" in out and "INSECURE dev SRS" in out
    assert "attestation  anchored" in out and "isAnchored   True" in out
    assert "outputs match within tolerance: True" in out
