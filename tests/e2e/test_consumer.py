"""ExampleConsumer on a real anvil with real proofs of a hashed-input demo MLP: a decision
needs a proof of the score of exactly the input the lender committed to, once per
application, from an allowed caller. The old exploit (anyone's high-scoring proof approving
any application, or a low one resetting someone else's) reverts."""

from __future__ import annotations

import pytest

from circuits import CompileOptions, Prover
from circuits.demo import ensure_demo_packages
from circuits.instances import input_hash, proven_input_hash
from circuits.proof import felt_to_uint
from serve.chain.registry import deploy_consumer, to_bytes32
from serve.chain.rpc import TxReverted
from serve.merkle import MerkleTree, instances_hash, leaf_of
from tests.e2e.conftest import OUTSIDER_KEY, dev_chain, setup_registry, tamper_output

pytestmark = pytest.mark.e2e
ZERO = b"\x00" * 32


@pytest.fixture(scope="session")
def hashed_package():
    """demo-mlp with hashed input visibility: instance 0 is the Poseidon digest of the input."""
    package = ensure_demo_packages(["demo-mlp"], CompileOptions(input_visibility="hashed"))["demo-mlp"]
    assert package.manifest["visibility"]["input"] == "hashed" and package.manifest["logrows"] <= 15
    return package


@pytest.fixture(scope="session")
def applicants(hashed_package, mlp_rows):
    """Four applicants: (input row, proof of its score), proven once per session."""
    prover = Prover(hashed_package)
    return [(mlp_rows[i][None, :], prover.prove(mlp_rows[i][None, :])) for i in range(4)]


def commitment(package, row) -> int:
    """What the lender computes from the input the applicant sent: the circuit's input digest."""
    return felt_to_uint(input_hash(package, [row]))


def score(proof) -> int:
    value = proof.instances[-1]
    modulus = 21888242871839275222246617145695360494939400904740379587287990663435116740617
    return value - modulus if value > modulus // 2 else value


@pytest.fixture
def lender(module_anvil, tmp_path, hashed_package, applicants):
    """Registry with the hashed model, and a consumer approving scores above the lowest one."""
    registry = setup_registry(module_anvil.url, tmp_path, [hashed_package])
    scores = [score(proof) for _, proof in applicants]
    assert len(set(scores)) > 1, f"the demo rows all score the same: {scores}"
    consumer, abi = deploy_consumer(registry.chain, registry, hashed_package.model_id, input_index=0,
                                    score_index=len(applicants[0][1].instances) - 1, approve_above=min(scores),
                                    approved_limit=5000)
    return registry, consumer, abi


def test_commitment_is_the_proven_input_digest(hashed_package, applicants):
    for row, proof in applicants:
        assert proof.instances[0] == commitment(hashed_package, row)
        assert proof.instances[0] == felt_to_uint(proven_input_hash(hashed_package, proof))
    assert applicants[0][1].instances[0] != applicants[1][1].instances[0]


def test_someone_elses_proof_cannot_decide_an_application(lender, hashed_package, applicants, module_anvil):
    registry, consumer, abi = lender
    chain = registry.chain
    by_score = sorted(applicants, key=lambda item: score(item[1]))
    (low_row, low_proof), (high_row, high_proof) = by_score[0], by_score[-1]
    for proof in (low_proof, high_proof):
        chain.transact(registry.attest_call(hashed_package.model_id, proof.proof_bytes, proof.instances), registry.abi)

    def decide(app: bytes, proof, instances=None, path=(), root=ZERO, client=chain, contract=consumer):
        call = contract.functions.decide(app, to_bytes32(proof.proof_hash), instances or proof.instances,
                                         [to_bytes32(p) for p in path], root)
        return client.transact(call, abi)

    alice, bob = b"\xa1" * 32, b"\xb0" * 32
    with pytest.raises(TxReverted, match="UnknownApplication"):  # nothing decided before the lender commits
        decide(alice, low_proof)
    chain.transact(consumer.functions.registerApplication(alice, commitment(hashed_package, low_row)), abi)
    chain.transact(consumer.functions.registerApplication(bob, commitment(hashed_package, high_row)), abi)

    # the old exploit: Mallory's own high-scoring (and valid, attested) proof for Alice's application
    with pytest.raises(TxReverted, match="InputMismatch"):
        decide(alice, high_proof)
    # and a low proof of someone else's input against Bob's application
    with pytest.raises(TxReverted, match="InputMismatch"):
        decide(bob, low_proof)
    # an outsider cannot decide, nor commit
    outsider = dev_chain(module_anvil.url, OUTSIDER_KEY)
    as_outsider = outsider.contract(consumer.address, abi)
    with pytest.raises(TxReverted, match="NotCaller"):
        decide(bob, high_proof, client=outsider, contract=as_outsider)
    with pytest.raises(TxReverted, match="NotLender"):
        outsider.transact(as_outsider.functions.registerApplication(b"\x0e" * 32, 1), abi)
    # the committed input with outputs other than the proven ones is not proven
    with pytest.raises(TxReverted, match="NotProven"):
        decide(bob, high_proof, instances=tamper_output(high_proof).instances)

    decide(alice, low_proof)
    decide(bob, high_proof)
    assert consumer.functions.creditLimit(alice).call() == 0
    assert consumer.functions.creditLimit(bob).call() == 5000
    with pytest.raises(TxReverted, match="AlreadyDecided"):  # a decision cannot be reset
        decide(bob, low_proof)
    assert consumer.functions.creditLimit(bob).call() == 5000


def test_anchored_proof_decides_only_its_own_application(lender, hashed_package, applicants):
    registry, consumer, abi = lender
    chain = registry.chain
    (row_a, proof_a), (_, proof_b) = applicants[1], applicants[2]
    leaves = [leaf_of(to_bytes32(hashed_package.model_id), to_bytes32(p.proof_hash), instances_hash(p.instances))
              for p in (proof_a, proof_b)]
    tree = MerkleTree.build(leaves)
    chain.transact(registry.anchor_call(tree.root, 2, [hashed_package.model_id], [2]), registry.abi)
    carol = b"\xca" * 32
    chain.transact(consumer.functions.registerApplication(carol, commitment(hashed_package, row_a)), abi)

    def decide(proof, index):
        call = consumer.functions.decide(carol, to_bytes32(proof.proof_hash), proof.instances,
                                         tree.path(index), tree.root)
        return chain.transact(call, abi)

    with pytest.raises(TxReverted, match="InputMismatch"):
        decide(proof_b, 1)
    decide(proof_a, 0)
    expected = 5000 if score(proof_a) > consumer.functions.approveAbove().call() else 0
    assert consumer.functions.creditLimit(carol).call() == expected
