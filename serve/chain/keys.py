"""The signing key of the chain client: from ``$ZKSERVE_CHAIN_PRIVATE_KEY`` or a key file.

The key is held only inside an eth-account ``LocalAccount``; nothing here logs it, puts it
in an exception message, or returns it from ``repr``. Errors name where the key came from,
never what it was.
"""

from __future__ import annotations

import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

KEY_ENV = "ZKSERVE_CHAIN_PRIVATE_KEY"

# anvil's first default dev account (mnemonic "test test ... junk"); public knowledge, so it
# is only ever used for the local chain zkserve starts itself.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


class SigningKeyError(ValueError):
    """The signing key is missing or malformed (message never contains key material)."""


def _account_from_text(text: str, source: str) -> LocalAccount:
    candidate = text.strip()
    try:
        return Account.from_key(candidate)
    except Exception:  # noqa: BLE001 - eth-account's errors may echo the input
        raise SigningKeyError(f"the private key in {source} is not a 32-byte hex key") from None


def load_signer(chain_config: dict, local_chain: bool, environ: dict[str, str] | None = None) -> LocalAccount:
    """``$ZKSERVE_CHAIN_PRIVATE_KEY``, else ``chain.private_key_file``, else (local chain only)
    anvil's first dev key."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get(KEY_ENV, "").strip():
        return _account_from_text(environ[KEY_ENV], f"${KEY_ENV}")
    key_file = chain_config.get("private_key_file")
    if key_file:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise SigningKeyError(f"chain.private_key_file {path} does not exist")
        return _account_from_text(path.read_text(), f"chain.private_key_file {path}")
    if local_chain:
        return Account.from_key(ANVIL_DEV_KEY)
    raise SigningKeyError(
        f"no signing key for {chain_config.get('rpc_url')}: set ${KEY_ENV} or chain.private_key_file"
    )
