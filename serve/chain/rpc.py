"""JSON-RPC client of an EVM chain: one signing account, transactions built, signed and sent.

web3.py does the encoding and the RPC; this module adds what zkserve wants on top: revert
reasons decoded from the contract's custom errors, connection failures reported as one
exception type (``ChainUnavailable``), and no signing key anywhere in messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests
from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, TransactionNotFound, Web3RPCError

from serve.security.redact import redact, redact_url, register_secret_url

log = logging.getLogger(__name__)

GAS_MARGIN = 1.2  # estimates are exact for the estimating state; leave room for a changed one


class ChainError(RuntimeError):
    pass


class ChainUnavailable(ChainError):
    """The RPC endpoint did not answer, or answered with a transport/server error."""


class NonceTooLow(ChainError):
    """The node already has a transaction with this nonce from us (mined or replaced)."""


class TxReverted(ChainError):
    """The contract refused the call (at estimation or in a mined transaction)."""

    def __init__(self, reason: str, tx_hash: str | None = None):
        super().__init__(f"reverted: {reason}" + (f" (tx {tx_hash})" if tx_hash else ""))
        self.reason, self.tx_hash = reason, tx_hash


def _error_types(abi: list) -> dict[bytes, tuple[str, list[str]]]:
    errors = {}
    for entry in abi:
        if entry.get("type") == "error":
            types = [arg["type"] for arg in entry.get("inputs", [])]
            selector = function_signature_to_4byte_selector(f"{entry['name']}({','.join(types)})")
            errors[selector] = (entry["name"], types)
    return errors


def decode_revert(abi: list, data: str | bytes | None) -> str:
    """``ProofRejected(0x12..)`` from revert data, using the contract's custom errors."""
    if isinstance(data, dict):  # some nodes nest it
        data = data.get("data")
    if not data:
        return "no reason given"
    raw = bytes.fromhex(data[2:] if data.startswith("0x") else data) if isinstance(data, str) else bytes(data)
    known = _error_types(abi)
    if raw[:4] in known:
        name, types = known[raw[:4]]
        try:
            values = abi_decode(types, raw[4:])
        except Exception:  # noqa: BLE001 - malformed data still deserves a name
            return name
        shown = ", ".join("0x" + v.hex() if isinstance(v, bytes) else str(v) for v in values)
        return f"{name}({shown})"
    if raw[:4] == bytes.fromhex("08c379a0"):  # Error(string)
        return abi_decode(["string"], raw[4:])[0]
    return "0x" + raw.hex()


def revert_reason(error: ContractLogicError, abi: list) -> str:
    return decode_revert(abi, error.data) if error.data else (error.message or str(error))


TRANSPORT_ERRORS = (requests.RequestException, ConnectionError, TimeoutError, OSError)


@dataclass(frozen=True)
class SignedTx:
    tx_hash: str
    raw: bytes
    nonce: int


class ChainClient:
    def __init__(self, rpc_url: str, signer: LocalAccount, timeout_s: float = 10.0):
        self.rpc_url = rpc_url
        self.endpoint = redact_url(rpc_url)  # what messages show: provider URLs often hold an API key
        register_secret_url(rpc_url)
        self._signer = signer
        # Retries are the outbox's job (with backoff and persistence); web3's own would hide outages.
        self.w3 = Web3(
            Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None)
        )
        self._chain_id: int | None = None

    def __repr__(self) -> str:
        return f"ChainClient({self.endpoint}, account={self.address})"

    @property
    def address(self) -> str:
        return self._signer.address

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.rpc(lambda: self.w3.eth.chain_id)
        return self._chain_id

    def rpc(self, call):
        """Runs one RPC call, turning transport and server failures into ChainUnavailable."""
        try:
            return call()
        except TRANSPORT_ERRORS as error:
            raise ChainUnavailable(f"{self.endpoint} unreachable: {type(error).__name__}") from None
        except Web3RPCError as error:
            if isinstance(error, (ContractLogicError, TransactionNotFound)):
                raise
            raise ChainUnavailable(f"{self.endpoint} answered an error: {redact(error.message or error)}") from None

    def contract(self, address: str, abi: list) -> Contract:
        return self.w3.eth.contract(address=to_checksum_address(address), abi=abi)

    def has_code(self, address: str) -> bool:
        return len(self.rpc(lambda: self.w3.eth.get_code(to_checksum_address(address)))) > 0

    def pending_nonce(self) -> int:
        return self.rpc(lambda: self.w3.eth.get_transaction_count(self.address, "pending"))

    def latest_nonce(self) -> int:
        return self.rpc(lambda: self.w3.eth.get_transaction_count(self.address, "latest"))

    def block_number(self) -> int:
        return self.rpc(lambda: self.w3.eth.block_number)

    def build_and_sign(self, call, nonce: int, abi: list, value: int = 0) -> SignedTx:
        """Estimates gas (raising TxReverted when the call would revert), fills fees, signs."""
        try:
            tx = self.rpc(
                lambda: call.build_transaction(
                    {"from": self.address, "nonce": nonce, "chainId": self.chain_id(), "value": value}
                )
            )
        except ContractLogicError as error:
            raise TxReverted(revert_reason(error, abi)) from None
        tx["gas"] = int(tx["gas"] * GAS_MARGIN)
        signed = self._signer.sign_transaction(tx)
        return SignedTx(
            tx_hash="0x" + signed.hash.hex().removeprefix("0x"), raw=bytes(signed.raw_transaction), nonce=nonce
        )

    def sign_deploy(self, abi: list, bytecode: str, args: tuple, nonce: int) -> SignedTx:
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        return self.build_and_sign(factory.constructor(*args), nonce, abi)

    def broadcast(self, signed: SignedTx) -> None:
        """Sends a signed transaction; 'already known' means an earlier send got through."""
        try:
            self.rpc(lambda: self.w3.eth.send_raw_transaction(signed.raw))
        except ChainUnavailable as error:
            text = str(error).lower()
            if "already known" in text or "already imported" in text:
                return
            if "nonce too low" in text or "nonce is too low" in text:
                raise NonceTooLow(f"nonce {signed.nonce} already used") from None
            raise

    def receipt(self, tx_hash: str):
        """The receipt, or None while the transaction is unknown or pending."""
        try:
            return self.rpc(lambda: self.w3.eth.get_transaction_receipt(tx_hash))
        except TransactionNotFound:
            return None

    def is_known(self, tx_hash: str) -> bool:
        try:
            self.rpc(lambda: self.w3.eth.get_transaction(tx_hash))
            return True
        except TransactionNotFound:
            return False

    def send_and_wait(self, signed: SignedTx, timeout_s: float = 120.0):
        """Broadcasts and waits for the receipt; raises TxReverted for a failed one."""
        self.broadcast(signed)
        try:
            receipt = self.rpc(
                lambda: self.w3.eth.wait_for_transaction_receipt(signed.tx_hash, timeout=timeout_s, poll_latency=0.1)
            )
        except TimeExhausted:
            raise ChainUnavailable(f"no receipt for {signed.tx_hash} within {timeout_s:.0f} s") from None
        if receipt["status"] != 1:
            raise TxReverted("the transaction failed when mined", signed.tx_hash)
        return receipt

    def transact(self, call, abi: list, timeout_s: float = 120.0):
        """One synchronous transaction (CLI, set-up, tests): sign with the next nonce, wait."""
        return self.send_and_wait(self.build_and_sign(call, self.pending_nonce(), abi), timeout_s)

    def deploy(self, abi: list, bytecode: str, *args, timeout_s: float = 120.0) -> tuple[str, dict]:
        receipt = self.send_and_wait(self.sign_deploy(abi, bytecode, args, self.pending_nonce()), timeout_s)
        return receipt["contractAddress"], receipt
