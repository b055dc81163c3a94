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


def test_usage_and_insecure_srs_refusal(tmp_path, mlp_package, mlp_proofs):
    """`zkserve usage` prints the chain's counts; an INSECURE-SRS package is registered on a
    chain given by URL only with --allow-insecure-srs (the local anvil zkserve starts is fine)."""
    from serve.chain.anvil import AnvilProcess
    from serve.chain.registry import Registry
    from tests.e2e.conftest import dev_chain

    assert mlp_package.insecure  # the demo packages use a dev SRS
    port = free_port()
    with AnvilProcess(tmp_path / "chain" / "anvil-state.json", port=port) as node:
        by_url = {
            "ZKSERVE_HOME": str(tmp_path),
            "ZKSERVE_CHAIN_RPC_URL": node.url,
            "ZKSERVE_CHAIN_PRIVATE_KEY": ANVIL_DEV_KEY,
        }
        refused = run_cli("register", str(mlp_package.root), env=by_url, timeout=180)
        assert refused.returncode == 1 and "INSECURE SRS" in refused.stderr and "--allow-insecure-srs" in refused.stderr
        allowed = run_cli("register", str(mlp_package.root), "--allow-insecure-srs", env=by_url, timeout=180)
        assert allowed.returncode == 0, allowed.stderr

        registry = Registry.ensure(dev_chain(node.url), tmp_path)
        proof = mlp_proofs[0]
        registry.chain.transact(
            registry.attest_call(mlp_package.model_id, proof.proof_bytes, proof.instances), registry.abi
        )
        registry.chain.transact(registry.anchor_call(b"\x07" * 32, 3, [mlp_package.model_id], [3]), registry.abi)
        usage = run_cli("usage", str(mlp_package.root), env=by_url, timeout=180)
        assert usage.returncode == 0, usage.stderr
        assert f"anchored rows 3  attested rows {mlp_package.batch_size}" in usage.stderr, usage.stderr
        every = run_cli("usage", env=by_url, timeout=180)
        assert every.returncode == 0 and mlp_package.model_id in every.stderr, every.stderr

        outsider = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil's second dev account
        granted = run_cli("roles", "grant", "anchorer", outsider, env=by_url, timeout=180)
        assert granted.returncode == 0 and f"anchorer: {outsider}" in granted.stderr.replace(
            registry.chain.address + ", ", ""
        ), granted.stderr
        assert registry.has_role("anchorer", outsider)
        revoked = run_cli("roles", "revoke", "anchorer", outsider, env=by_url, timeout=180)
        assert revoked.returncode == 0 and not registry.has_role("anchorer", outsider), revoked.stderr
        bad = run_cli("roles", "grant", "owner", outsider, env=by_url, timeout=60)
        assert bad.returncode == 1 and "registrar or anchorer" in bad.stderr
