// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

interface IAttestationRegistry {
    function isProven(bytes32 modelId, bytes32 proofHash, bytes32 instancesHash, bytes32[] calldata proofPath, bytes32 root)
        external
        view
        returns (bool);
}

/// @title ExampleConsumer
/// @notice A credit-limit gate that trusts a model's score only when its proof was attested
/// or anchored in the registry, and only for the applicant it was asked about.
///
/// The model must prove with hashed input visibility: instance `inputIndex` is the Poseidon
/// digest of the applicant's (quantized) input, as `circuits.instances.input_hash` computes
/// it. The lender registers that digest per application before any decision, so a proof
/// decides an application only when it proves the score of exactly that input: someone
/// else's high-scoring proof cannot approve it, and a low one cannot reset it. Each
/// application is decided once, by an allowed caller. The score is read from the proof's
/// public instances (never from a side channel), so it is exactly the value the circuit proved.
///
/// Trust: `isProven` is true for attested proofs (trustless) and for anchored ones (the
/// anchorer's word); a lender that trusts no anchorer should check `attestations` instead.
contract ExampleConsumer {
    // BN254 scalar field: EZKL encodes a negative quantized value v as P - |v|.
    uint256 private constant FIELD_MODULUS =
        21888242871839275222246617145695360494939400904740379587287990663435116740617;

    IAttestationRegistry public immutable registry;
    bytes32 public immutable modelId;
    uint256 public immutable inputIndex; // which instance holds the input's Poseidon digest
    uint256 public immutable scoreIndex; // which instance holds the score
    int256 public immutable approveAbove; // quantized score threshold
    uint256 public immutable approvedLimit;
    address public immutable lender;

    struct Application {
        uint256 inputCommitment; // Poseidon digest of the applicant's input; 0 = not registered
        bool decided;
        uint256 limit;
        bytes32 proofHash;
    }

    mapping(address => bool) public isCaller; // who may call `decide`
    mapping(bytes32 => Application) private _applications;
    mapping(bytes32 => bool) public used; // a proof decides one application only

    event CallerSet(address indexed account, bool allowed);
    event ApplicationRegistered(bytes32 indexed applicationId, uint256 inputCommitment);
    event Decided(bytes32 indexed applicationId, bytes32 indexed proofHash, int256 score, uint256 limit);

    error NotLender(address account);
    error NotCaller(address account);
    error UnknownApplication(bytes32 applicationId);
    error ApplicationExists(bytes32 applicationId);
    error AlreadyDecided(bytes32 applicationId);
    error ZeroCommitment();
    error InputMismatch(bytes32 applicationId);
    error NotProven(bytes32 proofHash);
    error AlreadyUsed(bytes32 proofHash);
    error NoInstance(uint256 instances, uint256 index);

    modifier onlyLender() {
        if (msg.sender != lender) revert NotLender(msg.sender);
        _;
    }

    /// The deployer is the lender and the first allowed caller.
    constructor(
        address registry_,
        bytes32 modelId_,
        uint256 inputIndex_,
        uint256 scoreIndex_,
        int256 approveAbove_,
        uint256 approvedLimit_
    ) {
        registry = IAttestationRegistry(registry_);
        modelId = modelId_;
        inputIndex = inputIndex_;
        scoreIndex = scoreIndex_;
        approveAbove = approveAbove_;
        approvedLimit = approvedLimit_;
        lender = msg.sender;
        isCaller[msg.sender] = true;
        emit CallerSet(msg.sender, true);
    }

    /// @notice Lender only: who may submit decisions.
    function setCaller(address account, bool allowed) external onlyLender {
        isCaller[account] = allowed;
        emit CallerSet(account, allowed);
    }

    /// @notice Lender only: the commitment (Poseidon digest, as a field element) to the
    /// input the lender received from the applicant. Set once per application.
    function registerApplication(bytes32 applicationId, uint256 inputCommitment) external onlyLender {
        if (inputCommitment == 0) revert ZeroCommitment();
        if (_applications[applicationId].inputCommitment != 0) revert ApplicationExists(applicationId);
        _applications[applicationId].inputCommitment = inputCommitment;
        emit ApplicationRegistered(applicationId, inputCommitment);
    }

    function applications(bytes32 applicationId) external view returns (Application memory) {
        return _applications[applicationId];
    }

    function creditLimit(bytes32 applicationId) external view returns (uint256) {
        return _applications[applicationId].limit;
    }

    /// @notice Allowed callers only. Decides a registered application once, from a proven
    /// score of the committed input. `proofPath`/`root` locate the proof in an anchored
    /// batch; pass empty/zero when the proof was attested on chain.
    function decide(
        bytes32 applicationId,
        bytes32 proofHash,
        uint256[] calldata instances,
        bytes32[] calldata proofPath,
        bytes32 root
    ) external returns (uint256 limit) {
        if (!isCaller[msg.sender]) revert NotCaller(msg.sender);
        Application storage application = _applications[applicationId];
        if (application.inputCommitment == 0) revert UnknownApplication(applicationId);
        if (application.decided) revert AlreadyDecided(applicationId);
        if (used[proofHash]) revert AlreadyUsed(proofHash);
        if (inputIndex >= instances.length) revert NoInstance(instances.length, inputIndex);
        if (scoreIndex >= instances.length) revert NoInstance(instances.length, scoreIndex);
        if (instances[inputIndex] != application.inputCommitment) revert InputMismatch(applicationId);
        bytes32 instancesHash = keccak256(abi.encodePacked(instances));
        if (!registry.isProven(modelId, proofHash, instancesHash, proofPath, root)) revert NotProven(proofHash);
        used[proofHash] = true;
        int256 score = toSigned(instances[scoreIndex]);
        limit = score > approveAbove ? approvedLimit : 0;
        application.decided = true;
        application.limit = limit;
        application.proofHash = proofHash;
        emit Decided(applicationId, proofHash, score, limit);
    }

    function toSigned(uint256 felt) public pure returns (int256) {
        return felt > FIELD_MODULUS / 2 ? -int256(FIELD_MODULUS - felt) : int256(felt);
    }
}
