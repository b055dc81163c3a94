"""Gas per proof: `attest` (full on-chain verification) vs `anchor` (one Merkle root per
batch, verified off chain, with the batch's row count per model for the usage counters) at
batch sizes 1, 16, 256, 1024, on a real anvil with the demo MLP's EZKL verifier. Prints a
table and writes bench/results/gas.json."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from eth_account import Account  # noqa: E402

from bench.common import save  # noqa: E402
from circuits import Prover  # noqa: E402
from circuits.demo import demo_files, ensure_demo_packages  # noqa: E402
from circuits.solidity import solc_version  # noqa: E402
from serve.chain.anvil import AnvilProcess, anvil_binary  # noqa: E402
from serve.chain.keys import ANVIL_DEV_KEY  # noqa: E402
from serve.chain.registry import Registry, to_bytes32  # noqa: E402
from serve.chain.rpc import ChainClient  # noqa: E402
from serve.merkle import MerkleTree, instances_hash, leaf_of  # noqa: E402
from serve.ports import free_port  # noqa: E402

BATCH_SIZES = (1, 16, 256, 1024)



def anvil_version() -> str:
    return subprocess.run([str(anvil_binary()), "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def main() -> None:
    package = ensure_demo_packages(["demo-mlp"])["demo-mlp"]
    rows = np.load(demo_files("demo-mlp")[1])
    proofs = [Prover(package).prove(rows[i][None, :]) for i in range(2)]
    model_id = to_bytes32(package.model_id)
    results: dict = {"model": package.name, "model_id": package.model_id, "proof_bytes": len(proofs[0].proof_bytes),
                     "instances": len(proofs[0].instances)}
    with tempfile.TemporaryDirectory() as tmp, AnvilProcess(Path(tmp) / "state.json", port=free_port()) as node:
        chain = ChainClient(node.url, Account.from_key(ANVIL_DEV_KEY))
        registry = Registry.ensure(chain, Path(tmp))
        registered = registry.register_model(package, Path(tmp))
        results["verifier_deploy_gas"] = registered["verifier_deploy_gas"]

        receipt = chain.transact(
            registry.attest_call(package.model_id, proofs[0].proof_bytes, proofs[0].instances), registry.abi
        )
        results["attest_gas"] = receipt["gasUsed"]
        verifier = chain.contract(registered["verifier"], package.verifier_artifact()["abi"])
        results["verify_proof_only_gas"] = chain.w3.eth.estimate_gas(
            verifier.functions.verifyProof(proofs[1].proof_bytes, proofs[1].instances).build_transaction(
                {"from": chain.address}
            )
        )

        real_leaf = leaf_of(model_id, to_bytes32(proofs[1].proof_hash), instances_hash(proofs[1].instances))
        anchors = {}
        for size in BATCH_SIZES:
            leaves = [real_leaf if size == 1 else os.urandom(32) for _ in range(size)]
            if size > 1:
                leaves[0] = os.urandom(32)  # keep the real leaf for one tree only
            tree = MerkleTree.build(leaves)
            # the anchorer states the rows the batch proves per model: here one model, one circuit batch per leaf
            rows = size * package.batch_size
            receipt = chain.transact(registry.anchor_call(tree.root, size, [package.model_id], [rows]), registry.abi)
            path = tree.path(size // 2)
            check = registry.contract.functions.isAnchored(leaves[size // 2], path, tree.root)
            anchors[str(size)] = {
                "anchor_tx_gas": receipt["gasUsed"],
                "gas_per_proof": round(receipt["gasUsed"] / size, 1),
                "path_length": len(path),
                "is_anchored_check_gas": chain.w3.eth.estimate_gas(check.build_transaction({"from": chain.address})),
            }
        results["anchor"] = anchors
        results["usage"] = registry.usage(package.model_id)  # rows counted on chain by the runs above
    # gas per proof of full on-chain verification over that of anchoring, by batch size
    speedup = {size: round(results["attest_gas"] / entry["gas_per_proof"], 1) for size, entry in anchors.items()}
    save(
        "gas",
        {
            "description": "gas per proof: attest (full on-chain verification) vs anchor (Merkle root)",
            "toolchain": {"solc": solc_version(), "anvil": anvil_version()},
            "results": results,
            "speedup": speedup,
        },
    )
    print(f"{'mode':<14}{'batch':>7}{'tx gas':>12}{'gas/proof':>12}{'vs attest':>11}")
    print(f"{'attest':<14}{1:>7}{results['attest_gas']:>12}{results['attest_gas']:>12}{'1.0x':>11}")
    for size, entry in anchors.items():
        ratio = speedup[size]
        print(f"{'anchor':<14}{size:>7}{entry['anchor_tx_gas']:>12}{entry['gas_per_proof']:>12}{ratio:>10}x")


if __name__ == "__main__":
    main()
