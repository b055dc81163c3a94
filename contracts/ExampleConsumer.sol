// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

interface IAttestationRegistry {
    function isProven(bytes32 modelId, bytes32 proofHash, bytes32 instancesHash, bytes32[] calldata proofPath, bytes32 root)
        external
        view
        returns (bool);
}

/// Example consumer: a credit-limit gate that trusts a model's score only when its proof
/// was attested or anchored in the registry. The score is read from the proof's public
/// instances (never from a side channel), so it is exactly the value the circuit proved.
contract ExampleConsumer {
    // BN254 scalar field: EZKL encodes a negative quantized value v as P - |v|.
    uint256 private constant FIELD_MODULUS =
        21888242871839275222246617145695360494939400904740379587287990663435116740617;

    IAttestationRegistry public immutable registry;
    bytes32 public immutable modelId;
    uint256 public immutable scoreIndex; // which instance holds the score
    int256 public immutable approveAbove; // quantized score threshold
    uint256 public immutable approvedLimit;

    mapping(bytes32 => bool) public used; // a proof decides one application only
    mapping(bytes32 => uint256) public creditLimit; // by application id

    event Decided(bytes32 indexed applicationId, bytes32 indexed proofHash, int256 score, uint256 limit);

    error NotProven(bytes32 proofHash);
    error AlreadyUsed(bytes32 proofHash);
    error NoScore(uint256 instances, uint256 scoreIndex);

    constructor(address registry_, bytes32 modelId_, uint256 scoreIndex_, int256 approveAbove_, uint256 approvedLimit_) {
        registry = IAttestationRegistry(registry_);
        modelId = modelId_;
        scoreIndex = scoreIndex_;
        approveAbove = approveAbove_;
        approvedLimit = approvedLimit_;
    }

    /// `proofPath`/`root` locate the proof in an anchored batch; pass empty/zero when the
    /// proof was attested on chain.
    function decide(
        bytes32 applicationId,
        bytes32 proofHash,
        uint256[] calldata instances,
        bytes32[] calldata proofPath,
        bytes32 root
    ) external returns (uint256 limit) {
        if (used[proofHash]) revert AlreadyUsed(proofHash);
        bytes32 instancesHash = keccak256(abi.encodePacked(instances));
        if (!registry.isProven(modelId, proofHash, instancesHash, proofPath, root)) revert NotProven(proofHash);
        if (scoreIndex >= instances.length) revert NoScore(instances.length, scoreIndex);
        used[proofHash] = true;
        int256 score = toSigned(instances[scoreIndex]);
        limit = score > approveAbove ? approvedLimit : 0;
        creditLimit[applicationId] = limit;
        emit Decided(applicationId, proofHash, score, limit);
    }

    function toSigned(uint256 felt) public pure returns (int256) {
        return felt > FIELD_MODULUS / 2 ? -int256(FIELD_MODULUS - felt) : int256(felt);
    }
}
