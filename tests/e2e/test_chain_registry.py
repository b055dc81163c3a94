"""AttestationRegistry on a real anvil, with real EZKL verifiers and proofs, driven directly
through serve.chain (no verifier service): roles, two-step ownership, models bound once and
deprecated, attest/anchor records, usage counts. ExampleConsumer: tests/e2e/test_consumer.py."""

from __future__ import annotations

import os

import pytest
from eth_utils import keccak

from serve.chain.registry import ROLES, Registry, to_bytes32
from serve.chain.rpc import TxReverted
from serve.merkle import MerkleTree, instances_hash, leaf_of
from tests.e2e.conftest import OUTSIDER_KEY, dev_chain, relabel, setup_registry, tamper_byte, tamper_output

pytestmark = pytest.mark.e2e
ZERO = b"\x00" * 32
# anvil's third dev account: a second outsider
THIRD_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"


@pytest.fixture(scope="module")
def registry(module_anvil, tmp_path_factory, mlp_package, cnn_package):
    return setup_registry(module_anvil.url, tmp_path_factory.mktemp("state"), [mlp_package, cnn_package])


@pytest.fixture
def fresh_registry(module_anvil, tmp_path):
    """A registry of its own (new state dir: a new deployment) for tests that change roles."""
    return Registry.ensure(dev_chain(module_anvil.url), tmp_path)


def leaf_for(package, proof) -> bytes:
    return leaf_of(to_bytes32(package.model_id), to_bytes32(proof.proof_hash), instances_hash(proof.instances))


def attest(registry, model_id, proof):
    return registry.chain.transact(registry.attest_call(model_id, proof.proof_bytes, proof.instances), registry.abi)


def events(registry, name, **filters):
    event = getattr(registry.contract.events, name)
    return event.get_logs(from_block=0, argument_filters=filters) if filters else event.get_logs(from_block=0)


def as_(registry, key):
    """The same registry, signed by another key."""
    chain = dev_chain(registry.chain.rpc_url, key)
    return chain, chain.contract(registry.address, registry.abi)


def test_model_registered_once(registry, mlp_package, tmp_path):
    info = registry.model(mlp_package.model_id)
    assert info["verifier"] != "0x" + "0" * 40 and info["registrar"] == registry.chain.address
    assert info["rows_per_proof"] == mlp_package.batch_size and info["deprecated_at"] == 0
    again = registry.register_model(mlp_package, tmp_path)
    assert again["already_registered"] is True
    call = registry.contract.functions.registerModel(to_bytes32(mlp_package.model_id), info["verifier"], 1, [], "dup")
    with pytest.raises(TxReverted, match="ModelAlreadyRegistered"):
        registry.chain.transact(call, registry.abi)


def test_roles_are_separate_and_admin_only(fresh_registry, mlp_package, tmp_path):
    registry = fresh_registry
    deployer = registry.chain.address
    assert registry.owner() == deployer
    assert all(registry.has_role(role, deployer) for role in ROLES)  # local dev chain: one key, three roles
    outsider, as_outsider = as_(registry, OUTSIDER_KEY)
    third, as_third = as_(registry, THIRD_KEY)
    for call in (as_outsider.functions.registerModel(os.urandom(32), registry.address, 1, [], "x"),
                 as_outsider.functions.anchor(os.urandom(32), 1, [os.urandom(32)], [1]),
                 as_outsider.functions.grantRole(ROLES["anchorer"], outsider.address)):
        with pytest.raises(TxReverted, match="AccessControlUnauthorizedAccount"):
            outsider.transact(call, registry.abi)

    # the owner makes the outsider the anchorer only, the third key the registrar only
    registry.grant_role("anchorer", outsider.address)
    registry.grant_role("registrar", third.address)
    granted = events(registry, "RoleGranted", account=outsider.address)
    assert [(e["args"]["role"], e["args"]["sender"]) for e in granted] == [(ROLES["anchorer"], deployer)]
    registered = registry.register_model(mlp_package, tmp_path)
    assert not registered["already_registered"]
    root = keccak(b"batch of the outsider")
    outsider.transact(as_outsider.functions.anchor(root, 2, [to_bytes32(mlp_package.model_id)], [2]), registry.abi)
    assert registry.anchor_info(root) | {"block_number": 0} == {"anchorer": outsider.address, "count": 2,
                                                                  "block_number": 0}
    with pytest.raises(TxReverted, match="AccessControlUnauthorizedAccount"):  # anchorer is not registrar
        outsider.transact(as_outsider.functions.registerModel(os.urandom(32), registered["verifier"], 1, [], "x"),
                          registry.abi)
    with pytest.raises(TxReverted, match="AccessControlUnauthorizedAccount"):  # registrar is not anchorer
        third.transact(as_third.functions.anchor(os.urandom(32), 1, [to_bytes32(mlp_package.model_id)], [1]),
                       registry.abi)
    third.transact(
        as_third.functions.registerModel(os.urandom(32), registered["verifier"], 1, [], "by third"), registry.abi
    )

    # revoke and renounce, with events; the admin role follows ownership only
    registry.revoke_role("anchorer", outsider.address)
    assert not registry.has_role("anchorer", outsider.address)
    assert events(registry, "RoleRevoked", account=outsider.address)[-1]["args"]["sender"] == deployer
    with pytest.raises(TxReverted, match="AccessControlUnauthorizedAccount"):
        outsider.transact(
            as_outsider.functions.anchor(os.urandom(32), 1, [to_bytes32(mlp_package.model_id)], [1]), registry.abi
        )
    with pytest.raises(TxReverted, match="AccessControlBadConfirmation"):
        third.transact(as_third.functions.renounceRole(ROLES["registrar"], deployer), registry.abi)
    third.transact(as_third.functions.renounceRole(ROLES["registrar"], third.address), registry.abi)
    assert not registry.has_role("registrar", third.address)
    with pytest.raises(TxReverted, match="AccessControlEnforcedDefaultAdminRules"):
        registry.grant_role("owner", outsider.address)


def test_ownership_moves_in_two_steps(fresh_registry):
    registry = fresh_registry
    deployer = registry.chain.address
    outsider, as_outsider = as_(registry, OUTSIDER_KEY)
    third, as_third = as_(registry, THIRD_KEY)
    with pytest.raises(TxReverted, match="OwnableUnauthorizedAccount"):
        outsider.transact(as_outsider.functions.transferOwnership(outsider.address), registry.abi)
    registry.chain.transact(registry.contract.functions.transferOwnership(outsider.address), registry.abi)
    started = events(registry, "OwnershipTransferStarted")[-1]["args"]
    assert (started["previousOwner"], started["newOwner"]) == (deployer, outsider.address)
    assert registry.owner() == deployer  # nothing moves until the new owner accepts
    assert registry.contract.functions.pendingOwner().call() == outsider.address
    with pytest.raises(TxReverted, match="OwnableUnauthorizedAccount"):
        third.transact(as_third.functions.acceptOwnership(), registry.abi)
    outsider.transact(as_outsider.functions.acceptOwnership(), registry.abi)
    done = events(registry, "OwnershipTransferred")[-1]["args"]
    assert (done["previousOwner"], done["newOwner"]) == (deployer, outsider.address)
    assert registry.owner() == outsider.address and registry.has_role("owner", outsider.address)
    assert not registry.has_role("owner", deployer)
    with pytest.raises(TxReverted, match="AccessControlUnauthorizedAccount"):  # the old owner administers nothing
        registry.grant_role("anchorer", third.address)
    outsider.transact(as_outsider.functions.grantRole(ROLES["anchorer"], third.address), registry.abi)
    assert registry.has_role("anchorer", third.address)


def test_deprecated_model_is_never_rebound(fresh_registry, mlp_package, mlp_proofs, tmp_path):
    registry = fresh_registry
    registered = registry.register_model(mlp_package, tmp_path)
    attest(registry, mlp_package.model_id, mlp_proofs[0])
    registry.deprecate_model(mlp_package.model_id, "retrained")
    deprecated = events(registry, "ModelDeprecated")[-1]["args"]
    assert deprecated["modelId"] == to_bytes32(mlp_package.model_id) and deprecated["reason"] == "retrained"
    assert registry.is_deprecated(mlp_package.model_id)
    with pytest.raises(TxReverted, match="DeprecatedModel"):
        attest(registry, mlp_package.model_id, mlp_proofs[1])
    with pytest.raises(TxReverted, match="DeprecatedModel"):
        registry.chain.transact(registry.anchor_call(keccak(b"late"), 1, [mlp_package.model_id], [1]), registry.abi)
    call = registry.contract.functions.registerModel(
        to_bytes32(mlp_package.model_id), registered["verifier"], 1, [], "again"
    )
    with pytest.raises(TxReverted, match="ModelAlreadyRegistered"):
        registry.chain.transact(call, registry.abi)
    assert attest(registry, mlp_package.model_id, mlp_proofs[0])["status"] == 1  # a retry of a record made before
    assert registry.attestation(mlp_proofs[0].proof_hash)["block_number"] > 0


def test_attest_under_another_model_reverts(registry, mlp_package, mlp_proofs):
    """A second model id bound to the same verifier cannot take a proof already recorded."""
    proof = mlp_proofs[6]
    attest(registry, mlp_package.model_id, proof)
    twin = os.urandom(32)
    verifier = registry.model(mlp_package.model_id)["verifier"]
    registry.chain.transact(registry.contract.functions.registerModel(twin, verifier, 1, [], "twin"), registry.abi)
    with pytest.raises(TxReverted, match="ProofRecordedUnderOtherModel"):
        attest(registry, twin, proof)
    assert registry.attestation(proof.proof_hash)["model_id"] == mlp_package.model_id


def test_usage_counts_rows_per_model(fresh_registry, mlp_package, cnn_package, mlp_proofs, cnn_proof, tmp_path):
    registry = fresh_registry
    for package in (mlp_package, cnn_package):
        registry.register_model(package, tmp_path)
    attest(registry, mlp_package.model_id, mlp_proofs[2])
    attest(registry, mlp_package.model_id, mlp_proofs[2])  # a retry counts nothing
    attest(registry, cnn_package.model_id, cnn_proof)
    root = MerkleTree.build([keccak(os.urandom(8)) for _ in range(3)]).root
    registry.chain.transact(
        registry.anchor_call(root, 3, [mlp_package.model_id, cnn_package.model_id], [2, 1]), registry.abi
    )
    registry.chain.transact(
        registry.anchor_call(root, 3, [mlp_package.model_id, cnn_package.model_id], [2, 1]), registry.abi
    )  # re-anchoring: no-op, counted once
    assert registry.usage(mlp_package.model_id) == {"anchored_rows": 2, "attested_rows": mlp_package.batch_size}
    assert registry.usage(cnn_package.model_id) == {"anchored_rows": 1, "attested_rows": cnn_package.batch_size}
    mine = events(registry, "Usage", modelId=to_bytes32(mlp_package.model_id))  # what a model owner indexes
    assert sorted((e["args"]["anchored"], e["args"]["rows"], e["args"]["ref"]) for e in mine) == sorted(
        [(False, mlp_package.batch_size, to_bytes32(mlp_proofs[2].proof_hash)), (True, 2, root)]
    )
    with pytest.raises(TxReverted, match="LengthMismatch"):
        registry.chain.transact(registry.anchor_call(keccak(b"m"), 1, [mlp_package.model_id], []), registry.abi)
    with pytest.raises(TxReverted, match="RowsTooLarge"):
        registry.chain.transact(registry.anchor_call(keccak(b"big"), 1, [mlp_package.model_id], [2**128]), registry.abi)
    with pytest.raises(TxReverted, match="CountTooLarge"):
        registry.chain.transact(registry.anchor_call(keccak(b"n"), 2**48, [mlp_package.model_id], [1]), registry.abi)


@pytest.mark.parametrize("tamper", ["byte", "output", "other_model"])
def test_tampered_proof_reverts_and_records_nothing(registry, mlp_package, mlp_proofs, cnn_proof, tamper):
    proof = mlp_proofs[7]
    bad = {
        "byte": lambda: tamper_byte(proof),
        "output": lambda: tamper_output(proof),
        "other_model": lambda: relabel(cnn_proof, mlp_package.model_id),
    }[tamper]()
    before = len(events(registry, "Attested"))
    with pytest.raises(TxReverted, match="ProofRejected"):
        attest(registry, mlp_package.model_id, bad)
    assert registry.attestation(bad.proof_hash)["block_number"] == 0
    assert len(events(registry, "Attested")) == before


def test_attest_records_once(registry, mlp_package, mlp_proofs):
    proof = mlp_proofs[0]
    receipt = attest(registry, mlp_package.model_id, proof)
    record = registry.attestation(proof.proof_hash)
    assert record["block_number"] == receipt["blockNumber"]
    assert record["model_id"] == mlp_package.model_id
    assert record["instances_hash"] == "0x" + instances_hash(proof.instances).hex()
    logs = [e for e in events(registry, "Attested") if e["args"]["proofHash"] == to_bytes32(proof.proof_hash)]
    assert len(logs) == 1 and logs[0]["args"]["leaf"] == leaf_for(mlp_package, proof)
    again = attest(registry, mlp_package.model_id, proof)  # a retry: no revert, no second record
    assert again["status"] == 1
    assert len([e for e in events(registry, "Attested") if e["args"]["proofHash"] == to_bytes32(proof.proof_hash)]) == 1
    with pytest.raises(TxReverted, match="ProofRejected"):  # same bytes, other outputs: still refused
        attest(registry, mlp_package.model_id, tamper_output(proof))


def test_anchor_and_inclusion_match_python_tree(registry, mlp_package):
    items = [keccak(os.urandom(8)) for _ in range(5)]
    tree = MerkleTree.build(items)
    for index, leaf in enumerate(items):  # not anchored yet
        assert not registry.is_anchored(leaf, tree.path(index), tree.root)
    registry.chain.transact(
        registry.anchor_call(tree.root, len(items), [mlp_package.model_id], [len(items)]), registry.abi
    )
    for index, leaf in enumerate(items):
        assert registry.is_anchored(leaf, tree.path(index), tree.root)
        assert registry.contract.functions.processMerklePath(leaf, tree.path(index)).call() == tree.root
    assert not registry.is_anchored(items[0], tree.path(1), tree.root)
    assert not registry.is_anchored(keccak(b"outsider"), tree.path(0), tree.root)
    assert registry.anchor_info(tree.root)["count"] == 5
    assert registry.anchor_info(tree.root)["anchorer"] == registry.chain.address  # anchored by whom
    before = len(events(registry, "Anchored"))
    registry.chain.transact(
        registry.anchor_call(tree.root, len(items), [mlp_package.model_id], [len(items)]), registry.abi
    )
    assert len(events(registry, "Anchored")) == before  # re-anchoring is a no-op
    with pytest.raises(TxReverted, match="UnknownModel"):
        registry.chain.transact(registry.anchor_call(keccak(b"r"), 1, [os.urandom(32)], [1]), registry.abi)
