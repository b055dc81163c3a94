// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// The EZKL-generated Halo2 verifier. `verifyProof` is not `view` (it uses the scratch
/// memory of precompile calls), so it is called with a normal CALL.
interface IHalo2Verifier {
    function verifyProof(bytes calldata proof, uint256[] calldata instances) external returns (bool);
}

/// @title AttestationRegistry
/// @notice Binds model ids to their EZKL verifier contracts and records which proofs were
/// verified, in one of two modes with two different trust models:
///
/// - `attest` (onchain mode): the contract runs the model's verifier on the proof itself.
///   Trustless given the circuit's SRS: nobody's word is involved, and anyone may call it.
/// - `anchor` (anchor mode): an account holding ANCHORER_ROLE records the Merkle root of a
///   batch of proofs it says it verified off chain. An anchored proof is that anchorer's
///   word, nothing more; `anchors(root)` says who anchored it and when. Anyone can upgrade
///   an anchored proof to trustless by calling `attest` with its bytes and instances.
///
/// A leaf commits to the model, the proof and its public instances, so a consumer that
/// checks a leaf also knows which outputs were proven:
///     leaf = keccak256(abi.encode(modelId, keccak256(proof), keccak256(abi.encodePacked(instances))))
///
/// Roles, with OpenZeppelin AccessControl semantics (`hasRole`, `grantRole`, `revokeRole`,
/// `renounceRole`, `RoleGranted`/`RoleRevoked`) and Ownable2Step ownership:
/// - owner (holds DEFAULT_ADMIN_ROLE, the admin of every role): grants and revokes the two
///   roles below; changes hands only in two steps (`transferOwnership`, `acceptOwnership`).
/// - REGISTRAR_ROLE: binds a model id to a verifier (once, forever) and may deprecate it.
/// - ANCHORER_ROLE: anchors batch roots and states each batch's row count per model.
///
/// Usage: per model, the rows proven under anchored roots (as the anchorer states them) and
/// under attested proofs, with a `Usage` event per model per anchor or attestation that a model
/// owner can filter by model id. An attested proof counts the rows its public inputs prove: the
/// circuit's batch less the trailing rows whose inputs are all zero (the prover's padding), read
/// from the instances with the layout the registrar stated when binding the circuit. A circuit
/// whose inputs are not public cannot show its padding: each of its proofs counts the batch.
contract AttestationRegistry {
    bytes32 public constant DEFAULT_ADMIN_ROLE = 0x00;
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");
    bytes32 public constant ANCHORER_ROLE = keccak256("ANCHORER_ROLE");

    struct Model {
        uint64 registeredAt; // block number; 0 = not registered
        uint64 deprecatedAt; // block number; 0 = in use
        uint128 anchoredRows; // checked arithmetic: overflow reverts, never wraps
        address verifier;
        uint96 rowsPerProof; // the circuit's batch: the most rows one proof proves
        address registrar;
        uint256 attestedRows;
        string metadataURI;
        // Felts per row of each public input, in instance order (input i fills rowsPerProof *
        // inputRowWidths[i] felts, row-major); empty when the inputs are not public.
        uint32[] inputRowWidths;
    }

    struct Attestation {
        bytes32 modelId;
        bytes32 instancesHash;
        address submitter;
        uint64 blockNumber; // 0 = not attested
    }

    struct Anchor {
        address anchorer;
        uint48 blockNumber; // 0 = not anchored
        uint48 count; // leaves in the batch; larger batches are refused, never truncated
    }

    address private _owner;
    address private _pendingOwner;
    mapping(bytes32 => mapping(address => bool)) private _roles;
    mapping(bytes32 => Model) private _models;
    mapping(bytes32 => Attestation) private _attestations; // by keccak256(proof)
    mapping(bytes32 => Anchor) private _anchors; // by Merkle root

    event RoleGranted(bytes32 indexed role, address indexed account, address indexed sender);
    event RoleRevoked(bytes32 indexed role, address indexed account, address indexed sender);
    event RoleAdminChanged(bytes32 indexed role, bytes32 indexed previousAdminRole, bytes32 indexed newAdminRole);
    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event ModelRegistered(
        bytes32 indexed modelId, address indexed verifier, address indexed registrar, uint256 rowsPerProof, string metadataURI
    );
    event ModelDeprecated(bytes32 indexed modelId, address indexed registrar, string reason);
    event Attested(bytes32 indexed proofHash, bytes32 indexed modelId, address indexed submitter, bytes32 leaf);
    event Anchored(bytes32 indexed root, uint256 count, address indexed anchorer);
    /// Rows proven for `modelId`: under the anchored root `ref` (anchored = true, the
    /// anchorer's statement) or by the attested proof `ref` (anchored = false).
    event Usage(bytes32 indexed modelId, bytes32 indexed ref, bool anchored, uint256 rows);

    error AccessControlUnauthorizedAccount(address account, bytes32 neededRole);
    error AccessControlBadConfirmation();
    error AccessControlEnforcedDefaultAdminRules();
    error OwnableUnauthorizedAccount(address account);
    error OwnableInvalidOwner(address owner);
    error ZeroAddress();
    error NoVerifierCode(address verifier);
    error ZeroRows();
    error ModelAlreadyRegistered(bytes32 modelId);
    error UnknownModel(bytes32 modelId);
    error DeprecatedModel(bytes32 modelId);
    error ProofRecordedUnderOtherModel(bytes32 proofHash, bytes32 modelId);
    error ProofRejected(bytes32 modelId);
    error EmptyBatch();
    error LengthMismatch(uint256 modelIds, uint256 rows);
    error CountTooLarge(uint256 count);
    error RowsTooLarge(uint256 rows);

    modifier onlyRole(bytes32 role) {
        if (!_roles[role][msg.sender]) revert AccessControlUnauthorizedAccount(msg.sender, role);
        _;
    }

    modifier onlyOwner() {
        if (msg.sender != _owner) revert OwnableUnauthorizedAccount(msg.sender);
        _;
    }

    /// @param registrar first holder of REGISTRAR_ROLE (may be the deployer, or zero for none)
    /// @param anchorer first holder of ANCHORER_ROLE (may be the deployer, or zero for none)
    /// The deployer becomes the owner.
    constructor(address registrar, address anchorer) {
        _owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
        _grant(DEFAULT_ADMIN_ROLE, msg.sender);
        if (registrar != address(0)) _grant(REGISTRAR_ROLE, registrar);
        if (anchorer != address(0)) _grant(ANCHORER_ROLE, anchorer);
    }

    // ---- ownership (Ownable2Step) ----

    /// @notice The account that administers the roles.
    function owner() external view returns (address) {
        return _owner;
    }

    /// @notice The account offered ownership, until it accepts (zero when none).
    function pendingOwner() external view returns (address) {
        return _pendingOwner;
    }

    /// @notice Step one of an ownership change: offers ownership to `newOwner`, who must
    /// call `acceptOwnership`. Offering to zero cancels a pending offer.
    function transferOwnership(address newOwner) external onlyOwner {
        _pendingOwner = newOwner;
        emit OwnershipTransferStarted(_owner, newOwner);
    }

    /// @notice Step two: the pending owner takes ownership and the admin role with it.
    function acceptOwnership() external {
        if (msg.sender != _pendingOwner) revert OwnableUnauthorizedAccount(msg.sender);
        address previous = _owner;
        delete _pendingOwner;
        _owner = msg.sender;
        _revoke(DEFAULT_ADMIN_ROLE, previous);
        _grant(DEFAULT_ADMIN_ROLE, msg.sender);
        emit OwnershipTransferred(previous, msg.sender);
    }

    // ---- roles (AccessControl) ----

    function hasRole(bytes32 role, address account) public view returns (bool) {
        return _roles[role][account];
    }

    /// @notice Every role is administered by DEFAULT_ADMIN_ROLE, which only the owner holds.
    function getRoleAdmin(bytes32) public pure returns (bytes32) {
        return DEFAULT_ADMIN_ROLE;
    }

    /// @notice Owner only. DEFAULT_ADMIN_ROLE follows ownership and cannot be granted.
    function grantRole(bytes32 role, address account) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (role == DEFAULT_ADMIN_ROLE) revert AccessControlEnforcedDefaultAdminRules();
        if (account == address(0)) revert ZeroAddress();
        _grant(role, account);
    }

    /// @notice Owner only. DEFAULT_ADMIN_ROLE follows ownership and cannot be revoked.
    function revokeRole(bytes32 role, address account) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (role == DEFAULT_ADMIN_ROLE) revert AccessControlEnforcedDefaultAdminRules();
        _revoke(role, account);
    }

    /// @notice A holder gives up its own role; `callerConfirmation` must be the caller.
    function renounceRole(bytes32 role, address callerConfirmation) external {
        if (callerConfirmation != msg.sender) revert AccessControlBadConfirmation();
        if (role == DEFAULT_ADMIN_ROLE) revert AccessControlEnforcedDefaultAdminRules();
        _revoke(role, msg.sender);
    }

    function _grant(bytes32 role, address account) private {
        if (_roles[role][account]) return;
        _roles[role][account] = true;
        emit RoleGranted(role, account, msg.sender);
    }

    function _revoke(bytes32 role, address account) private {
        if (!_roles[role][account]) return;
        _roles[role][account] = false;
        emit RoleRevoked(role, account, msg.sender);
    }

    // ---- models ----

    /// @notice Registrar only. Binds `modelId` to `verifier` once and for ever: whoever binds
    /// a model id decides what "proven under this model" means, so it is never first-come
    /// and never rebound (not even after deprecation). `rowsPerProof` is the circuit's batch;
    /// `inputRowWidths` the felts per row of each public input (empty when the inputs are not
    /// public): what `attest` needs to tell a proof's real rows from its zero padding.
    function registerModel(
        bytes32 modelId,
        address verifier,
        uint256 rowsPerProof,
        uint32[] calldata inputRowWidths,
        string calldata metadataURI
    ) external onlyRole(REGISTRAR_ROLE) {
        if (verifier == address(0)) revert ZeroAddress();
        if (verifier.code.length == 0) revert NoVerifierCode(verifier);
        if (rowsPerProof == 0) revert ZeroRows();
        if (rowsPerProof > type(uint96).max) revert RowsTooLarge(rowsPerProof);
        Model storage model = _models[modelId];
        if (model.registeredAt != 0) revert ModelAlreadyRegistered(modelId);
        model.registeredAt = uint64(block.number);
        model.verifier = verifier;
        model.rowsPerProof = uint96(rowsPerProof);
        model.registrar = msg.sender;
        model.metadataURI = metadataURI;
        model.inputRowWidths = inputRowWidths;
        emit ModelRegistered(modelId, verifier, msg.sender, rowsPerProof, metadataURI);
    }

    /// @notice Registrar only. No new attestation or anchor may name the model afterwards;
    /// records made before stay. The binding itself is never released.
    function deprecateModel(bytes32 modelId, string calldata reason) external onlyRole(REGISTRAR_ROLE) {
        Model storage model = _models[modelId];
        if (model.registeredAt == 0) revert UnknownModel(modelId);
        if (model.deprecatedAt != 0) return;
        model.deprecatedAt = uint64(block.number);
        emit ModelDeprecated(modelId, msg.sender, reason);
    }

    function models(bytes32 modelId) external view returns (Model memory) {
        return _models[modelId];
    }

    function isRegistered(bytes32 modelId) public view returns (bool) {
        return _models[modelId].registeredAt != 0;
    }

    function isDeprecated(bytes32 modelId) public view returns (bool) {
        return _models[modelId].deprecatedAt != 0;
    }

    /// @notice Rows proven for the model: under anchored roots (the anchorers' statements)
    /// and under attested proofs (verified by this contract).
    function usage(bytes32 modelId) external view returns (uint256 anchoredRows, uint256 attestedRows) {
        Model storage model = _models[modelId];
        return (model.anchoredRows, model.attestedRows);
    }

    // ---- on-chain attestation (full verification) ----

    /// @notice Anyone. Verifies the proof with the model's verifier and records it: trustless
    /// given the circuit's SRS. Attesting a proof already attested with the same model and
    /// instances is a no-op (retries never revert, even after deprecation); a proof hash
    /// already recorded under another model reverts. Counts the rows the proof's inputs prove.
    function attest(bytes32 modelId, bytes calldata proof, uint256[] calldata instances)
        external
        returns (bytes32 proofHash)
    {
        proofHash = keccak256(proof);
        bytes32 instancesHash = keccak256(abi.encodePacked(instances));
        Attestation storage existing = _attestations[proofHash];
        bool recorded = existing.blockNumber != 0;
        if (recorded) {
            if (existing.modelId != modelId) revert ProofRecordedUnderOtherModel(proofHash, existing.modelId);
            if (existing.instancesHash == instancesHash) return proofHash;
        }
        Model storage model = _models[modelId];
        if (model.registeredAt == 0) revert UnknownModel(modelId);
        if (model.deprecatedAt != 0) revert DeprecatedModel(modelId);
        _verify(model.verifier, modelId, proof, instances);
        if (recorded) return proofHash; // same bytes verified before: keep the first record
        _record(model, modelId, proofHash, instancesHash, provenRows(model, instances));
    }

    /// The rows a verified proof proves: the batch less its trailing all-zero input rows (at
    /// least one row is real). Without a public input layout (or with instances shorter than
    /// it, which the model's verifier would not have accepted) the whole batch counts.
    function provenRows(Model storage model, uint256[] calldata instances) private view returns (uint256 rows) {
        uint256 batch = model.rowsPerProof;
        uint32[] storage widths = model.inputRowWidths;
        uint256 inputs = widths.length;
        uint256 needed;
        for (uint256 i = 0; i < inputs; ++i) needed += batch * widths[i];
        if (inputs == 0 || instances.length < needed) return batch;
        for (rows = batch; rows > 1; --rows) {
            uint256 offset;
            for (uint256 i = 0; i < inputs; ++i) {
                uint256 width = widths[i];
                uint256 start = offset + (rows - 1) * width;
                for (uint256 j = start; j < start + width; ++j) {
                    if (instances[j] != 0) return rows;
                }
                offset += batch * width;
            }
        }
    }

    /// The EZKL verifier reverts on most bad proofs and returns false on others; both reject.
    function _verify(address verifier, bytes32 modelId, bytes calldata proof, uint256[] calldata instances) private {
        (bool ok, bytes memory result) = verifier.call(abi.encodeCall(IHalo2Verifier.verifyProof, (proof, instances)));
        if (!ok || result.length < 32 || !abi.decode(result, (bool))) revert ProofRejected(modelId);
    }

    function _record(Model storage model, bytes32 modelId, bytes32 proofHash, bytes32 instancesHash, uint256 rows)
        private
    {
        _attestations[proofHash] = Attestation(modelId, instancesHash, msg.sender, uint64(block.number));
        model.attestedRows += rows;
        emit Attested(proofHash, modelId, msg.sender, leafOf(modelId, proofHash, instancesHash));
        emit Usage(modelId, proofHash, false, rows);
    }

    function attestations(bytes32 proofHash) external view returns (Attestation memory) {
        return _attestations[proofHash];
    }

    function isAttested(bytes32 proofHash) external view returns (bool) {
        return _attestations[proofHash].blockNumber != 0;
    }

    // ---- anchoring (verified off chain, one root per batch) ----

    /// @notice Anchorer only. Records the Merkle root of `count` leaves the anchorer verified
    /// off chain, and `rows[i]` rows proven for `modelIds[i]`: both are the anchorer's word.
    /// Anchoring a root twice is a no-op, so a resent transaction never reverts or double-counts.
    function anchor(bytes32 root, uint256 count, bytes32[] calldata modelIds, uint256[] calldata rows)
        external
        onlyRole(ANCHORER_ROLE)
    {
        if (_anchors[root].blockNumber != 0) return;
        if (count == 0 || root == bytes32(0) || modelIds.length == 0) revert EmptyBatch();
        if (count > type(uint48).max) revert CountTooLarge(count);
        if (rows.length != modelIds.length) revert LengthMismatch(modelIds.length, rows.length);
        for (uint256 i = 0; i < modelIds.length; ++i) {
            Model storage model = _models[modelIds[i]];
            if (model.registeredAt == 0) revert UnknownModel(modelIds[i]);
            if (model.deprecatedAt != 0) revert DeprecatedModel(modelIds[i]);
            if (rows[i] > type(uint128).max) revert RowsTooLarge(rows[i]);
            model.anchoredRows += uint128(rows[i]); // checked: reverts on overflow
            emit Usage(modelIds[i], root, true, rows[i]);
        }
        _anchors[root] = Anchor(msg.sender, uint48(block.number), uint48(count));
        emit Anchored(root, count, msg.sender);
    }

    /// @notice Who anchored `root`, in which block, and how many leaves it holds.
    function anchors(bytes32 root) external view returns (Anchor memory) {
        return _anchors[root];
    }

    /// @notice True when `root` is anchored and `leaf` is under it: the anchorer's word that
    /// the proof verified off chain (see `anchors(root).anchorer`).
    function isAnchored(bytes32 leaf, bytes32[] calldata proofPath, bytes32 root) public view returns (bool) {
        return _anchors[root].blockNumber != 0 && processMerklePath(leaf, proofPath) == root;
    }

    /// @notice True when the proof was attested on chain (trustless), or its leaf is under
    /// an anchored root (the anchorer's word). Consumers that want only the former call
    /// `attestations`; those that trust only some anchorers check `anchors(root).anchorer`.
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
