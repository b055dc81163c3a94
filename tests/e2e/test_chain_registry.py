"""AttestationRegistry and ExampleConsumer on a real anvil, with real EZKL verifiers and
proofs, driven directly through serve.chain (no verifier service)."""

from __future__ import annotations

import os

import pytest
from eth_utils import keccak

from serve.chain.client import TxReverted
from serve.chain.registry import deploy_consumer, to_bytes32
from serve.merkle import MerkleTree, instances_hash, leaf_of
from tests.e2e.conftest import OUTSIDER_KEY, dev_chain, relabel, setup_registry, tamper_byte, tamper_output

pytestmark = pytest.mark.e2e
ZERO = b"\x00" * 32


@pytest.fixture(scope="module")
def registry(module_anvil, tmp_path_factory, mlp_package, cnn_package):
    return setup_registry(module_anvil.url, tmp_path_factory.mktemp("state"), [mlp_package, cnn_package])


def leaf_for(package, proof) -> bytes:
    return leaf_of(to_bytes32(package.model_id), to_bytes32(proof.proof_hash), instances_hash(proof.instances))


def attest(registry, model_id, proof):
    return registry.chain.transact(registry.attest_call(model_id, proof.proof_bytes, proof.instances), registry.abi)


def events(registry, name):
    return getattr(registry.contract.events, name).get_logs(from_block=0)


def test_model_registered_once(registry, mlp_package, tmp_path):
    info = registry.model(mlp_package.model_id)
    assert info["verifier"] != "0x" + "0" * 40 and info["owner"] == registry.chain.address
    again = registry.register_model(mlp_package, tmp_path)
    assert again["already_registered"] is True
    call = registry.contract.functions.registerModel(to_bytes32(mlp_package.model_id), info["verifier"], "dup")
    with pytest.raises(TxReverted, match="ModelAlreadyRegistered"):
        registry.chain.transact(call, registry.abi)


def test_only_attesters_register_and_anchor(registry, module_anvil):
    outsider = dev_chain(module_anvil.url, OUTSIDER_KEY)
    contract = outsider.contract(registry.address, registry.abi)
    with pytest.raises(TxReverted, match="NotAttester"):
        outsider.transact(contract.functions.registerModel(os.urandom(32), registry.address, "x"), registry.abi)
    with pytest.raises(TxReverted, match="NotAttester"):
        outsider.transact(contract.functions.anchor(os.urandom(32), 1, []), registry.abi)
    with pytest.raises(TxReverted, match="NotOwner"):
        outsider.transact(contract.functions.setAttester(outsider.address, True), registry.abi)


@pytest.mark.parametrize("tamper", ["byte", "output", "other_model"])
def test_tampered_proof_reverts_and_records_nothing(registry, mlp_package, mlp_proofs, cnn_proof, tamper):
    proof = mlp_proofs[7]
    bad = {"byte": lambda: tamper_byte(proof), "output": lambda: tamper_output(proof),
           "other_model": lambda: relabel(cnn_proof, mlp_package.model_id)}[tamper]()
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
    registry.chain.transact(registry.anchor_call(tree.root, len(items), [mlp_package.model_id]), registry.abi)
    for index, leaf in enumerate(items):
        assert registry.is_anchored(leaf, tree.path(index), tree.root)
        assert registry.contract.functions.processMerklePath(leaf, tree.path(index)).call() == tree.root
    assert not registry.is_anchored(items[0], tree.path(1), tree.root)
    assert not registry.is_anchored(keccak(b"outsider"), tree.path(0), tree.root)
    assert registry.anchor_info(tree.root)["count"] == 5
    before = len(events(registry, "Anchored"))
    registry.chain.transact(registry.anchor_call(tree.root, len(items), [mlp_package.model_id]), registry.abi)
    assert len(events(registry, "Anchored")) == before  # re-anchoring is a no-op
    with pytest.raises(TxReverted, match="UnknownModel"):
        registry.chain.transact(registry.anchor_call(keccak(b"r"), 1, [os.urandom(32)]), registry.abi)


def test_consumer_accepts_attested_and_anchored_only(registry, mlp_package, mlp_proofs):
    attested, anchored, unproven = mlp_proofs[1], mlp_proofs[2], mlp_proofs[3]
    score_index = len(attested.instances) - 1
    consumer, abi = deploy_consumer(registry.chain, registry, mlp_package.model_id, score_index,
                                    approve_above=-(2**200), approved_limit=5000)
    chain = registry.chain

    def decide(app: bytes, proof, path=(), root=ZERO, instances=None):
        call = consumer.functions.decide(
            app, to_bytes32(proof.proof_hash), instances or proof.instances, list(path), root
        )
        return chain.transact(call, abi)

    attest(registry, mlp_package.model_id, attested)
    decide(b"\x01" * 32, attested)
    assert consumer.functions.creditLimit(b"\x01" * 32).call() == 5000
    with pytest.raises(TxReverted, match="AlreadyUsed"):
        decide(b"\x09" * 32, attested)

    leaves = [leaf_for(mlp_package, anchored), keccak(b"x"), keccak(b"y")]
    tree = MerkleTree.build(leaves)
    chain.transact(registry.anchor_call(tree.root, 3, [mlp_package.model_id]), registry.abi)
    with pytest.raises(TxReverted, match="NotProven"):  # outputs other than the proven ones
        decide(b"\x02" * 32, anchored, tree.path(0), tree.root, instances=tamper_output(anchored).instances)
    decide(b"\x02" * 32, anchored, tree.path(0), tree.root)
    assert consumer.functions.creditLimit(b"\x02" * 32).call() == 5000

    with pytest.raises(TxReverted, match="NotProven"):
        decide(b"\x03" * 32, unproven, tree.path(0), tree.root)
