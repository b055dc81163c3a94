// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// The EZKL-generated Halo2 verifier. `verifyProof` is not `view` (it uses the scratch
/// memory of precompile calls), so it is called with a normal CALL.
interface IHalo2Verifier {
    function verifyProof(bytes calldata proof, uint256[] calldata instances) external returns (bool);
}

/// Binds model ids (hash of a circuit's verification key) to their verifier contracts and
/// records which proofs were verified: one at a time on chain (`attest`, full verification)
/// or many at once off chain (`anchor`, a Merkle root of attestation leaves).
///
/// A leaf commits to the model, the proof and its public instances, so a consumer that
/// checks a leaf also knows which outputs were proven:
///     leaf = keccak256(abi.encode(modelId, keccak256(proof), keccak256(abi.encodePacked(instances))))
contract AttestationRegistry {
    struct Model {
        address verifier;
        address owner;
        uint64 registeredAt; // block number; 0 = not registered
        string metadataURI;
    }

    struct Attestation {
        bytes32 modelId;
        bytes32 instancesHash;
        address submitter;
        uint64 blockNumber; // 0 = not attested
    }

    struct Anchor {
        address attester;
        uint64 blockNumber; // 0 = not anchored
        uint64 count;
    }

    address public owner;
    mapping(address => bool) public isAttester;
    mapping(bytes32 => Model) private _models;
    mapping(bytes32 => Attestation) private _attestations; // by keccak256(proof)
    mapping(bytes32 => Anchor) private _anchors; // by Merkle root

    event AttesterSet(address indexed account, bool allowed);
    event ModelRegistered(bytes32 indexed modelId, address indexed verifier, address indexed owner, string metadataURI);
    event Attested(bytes32 indexed proofHash, bytes32 indexed modelId, address indexed submitter, bytes32 leaf);
    event Anchored(bytes32 indexed root, uint256 count, address indexed attester, bytes32[] modelIds);

    error NotOwner();
    error NotAttester(address account);
    error ZeroAddress();
    error ModelAlreadyRegistered(bytes32 modelId);
    error UnknownModel(bytes32 modelId);
    error ProofRejected(bytes32 modelId);
    error EmptyBatch();

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    modifier onlyAttester() {
        if (!isAttester[msg.sender]) revert NotAttester(msg.sender);
        _;
    }

    constructor() {
        owner = msg.sender;
        isAttester[msg.sender] = true;
        emit AttesterSet(msg.sender, true);
    }

    // ---- roles ----

    function setAttester(address account, bool allowed) external onlyOwner {
        if (account == address(0)) revert ZeroAddress();
        isAttester[account] = allowed;
        emit AttesterSet(account, allowed);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        owner = newOwner;
    }

    // ---- models ----

    /// Registration is gated on the attester role: whoever binds a model id to a verifier
    /// decides what "attested under this model" means, so it cannot be first-come.
    function registerModel(bytes32 modelId, address verifier, string calldata metadataURI) external onlyAttester {
        if (verifier == address(0) || verifier.code.length == 0) revert ZeroAddress();
        if (_models[modelId].registeredAt != 0) revert ModelAlreadyRegistered(modelId);
        _models[modelId] = Model(verifier, msg.sender, uint64(block.number), metadataURI);
        emit ModelRegistered(modelId, verifier, msg.sender, metadataURI);
    }

    function models(bytes32 modelId) external view returns (Model memory) {
        return _models[modelId];
    }

    function isRegistered(bytes32 modelId) public view returns (bool) {
        return _models[modelId].registeredAt != 0;
    }

    // ---- on-chain attestation (full verification) ----

    /// Verifies the proof with the model's verifier and records it. Re-attesting the same
    /// proof with the same model and instances is a no-op, so retries never revert.
    function attest(bytes32 modelId, bytes calldata proof, uint256[] calldata instances)
        external
        returns (bytes32 proofHash)
    {
        Model storage model = _models[modelId];
        if (model.registeredAt == 0) revert UnknownModel(modelId);
        proofHash = keccak256(proof);
        bytes32 instancesHash = keccak256(abi.encodePacked(instances));
        Attestation storage existing = _attestations[proofHash];
        if (existing.blockNumber != 0 && existing.modelId == modelId && existing.instancesHash == instancesHash) {
            return proofHash;
        }
        // The EZKL verifier reverts on most bad proofs and returns false on others; both reject.
        (bool ok, bytes memory result) =
            model.verifier.call(abi.encodeCall(IHalo2Verifier.verifyProof, (proof, instances)));
        if (!ok || result.length < 32 || !abi.decode(result, (bool))) revert ProofRejected(modelId);
        if (existing.blockNumber != 0) return proofHash; // same bytes verified before: keep the first record
        _attestations[proofHash] = Attestation(modelId, instancesHash, msg.sender, uint64(block.number));
        emit Attested(proofHash, modelId, msg.sender, leafOf(modelId, proofHash, instancesHash));
    }

    function attestations(bytes32 proofHash) external view returns (Attestation memory) {
        return _attestations[proofHash];
    }

    function isAttested(bytes32 proofHash) external view returns (bool) {
        return _attestations[proofHash].blockNumber != 0;
    }

    // ---- anchoring (verified off chain, one root per batch) ----

    /// Records the Merkle root of a batch of leaves verified off chain. Anchoring a root
    /// twice is a no-op, so a resent transaction never reverts or double-counts.
    function anchor(bytes32 root, uint256 count, bytes32[] calldata modelIds) external onlyAttester {
        if (count == 0 || root == bytes32(0)) revert EmptyBatch();
        for (uint256 i = 0; i < modelIds.length; ++i) {
            if (_models[modelIds[i]].registeredAt == 0) revert UnknownModel(modelIds[i]);
        }
        if (_anchors[root].blockNumber != 0) return;
        _anchors[root] = Anchor(msg.sender, uint64(block.number), uint64(count));
        emit Anchored(root, count, msg.sender, modelIds);
    }

    function anchors(bytes32 root) external view returns (Anchor memory) {
        return _anchors[root];
    }

    function isAnchored(bytes32 leaf, bytes32[] calldata proofPath, bytes32 root) public view returns (bool) {
        return _anchors[root].blockNumber != 0 && processMerklePath(leaf, proofPath) == root;
    }

    /// True when the proof was attested on chain, or its leaf is under an anchored root.
    function isProven(bytes32 modelId, bytes32 proofHash, bytes32 instancesHash, bytes32[] calldata proofPath, bytes32 root)
        external
        view
        returns (bool)
    {
        Attestation storage a = _attestations[proofHash];
        if (a.blockNumber != 0 && a.modelId == modelId && a.instancesHash == instancesHash) return true;
        return isAnchored(leafOf(modelId, proofHash, instancesHash), proofPath, root);
    }

    // ---- Merkle helpers (sorted-pair hashing, as OpenZeppelin's MerkleProof) ----

    function leafOf(bytes32 modelId, bytes32 proofHash, bytes32 instancesHash) public pure returns (bytes32) {
        return keccak256(abi.encode(modelId, proofHash, instancesHash));
    }

    function processMerklePath(bytes32 leaf, bytes32[] calldata proofPath) public pure returns (bytes32 node) {
        node = leaf;
        for (uint256 i = 0; i < proofPath.length; ++i) {
            node = _hashPair(node, proofPath[i]);
        }
    }

    function _hashPair(bytes32 a, bytes32 b) private pure returns (bytes32 out) {
        (bytes32 lo, bytes32 hi) = a < b ? (a, b) : (b, a);
        assembly ("memory-safe") {
            mstore(0x00, lo)
            mstore(0x20, hi)
            out := keccak256(0x00, 0x40)
        }
    }
}
