"""The chain commands as a user runs them: `zkserve register` starts the local anvil itself
(state persisted in the state dir), `verify --onchain`, `attestation`."""

from __future__ import annotations

import json

import pytest

from serve.chain.keys import ANVIL_DEV_KEY
from serve.ports import free_port
from tests.conftest import run_cli
from tests.e2e.conftest import tamper_output

pytestmark = pytest.mark.e2e


def test_register_verify_attestation(tmp_path, mlp_package, mlp_proofs):
    env = {"ZKSERVE_HOME": str(tmp_path), "ZKSERVE_CHAIN_ANVIL_PORT": str(free_port()),
           "ZKSERVE_VERIFIER_PORT": str(free_port()), "ZKSERVE_CHAIN_PRIVATE_KEY": ANVIL_DEV_KEY}
    first = run_cli("register", str(mlp_package.root), env=env, timeout=180)
    assert first.returncode == 0, first.stderr
    assert "registered: model_id " + mlp_package.model_id in first.stderr
    assert (tmp_path / "chain" / "anvil-state.json").is_file()  # anvil stopped and saved its state
    deployments = json.loads((tmp_path / "chain" / "deployments.json").read_text())["31337"]
    assert mlp_package.model_id in deployments["models"]

    again = run_cli("register", str(mlp_package.root), env=env, timeout=180)  # same chain, reloaded from state
    assert again.returncode == 0 and "already registered" in again.stderr, again.stderr

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    mlp_proofs[0].save(good)
    tamper_output(mlp_proofs[0]).save(bad)
    ok = run_cli("verify", str(good), "--model", str(mlp_package.root), "--onchain", env=env, timeout=180)
    assert ok.returncode == 0 and "off chain: VALID" in ok.stderr and "on chain" in ok.stderr, ok.stderr
    refused = run_cli("verify", str(bad), "--model", str(mlp_package.root), "--onchain", env=env, timeout=180)
    assert (
        refused.returncode == 1
        and "off chain: INVALID" in refused.stderr
        and "INVALID" in refused.stderr.split("on chain")[1]
    )

    lookup = run_cli("attestation", mlp_proofs[0].proof_hash, env=env, timeout=180)
    assert lookup.returncode == 1 and "not attested on chain" in lookup.stderr, lookup.stderr
    for result in (first, again, ok, refused, lookup):
        assert ANVIL_DEV_KEY[2:] not in result.stdout + result.stderr
