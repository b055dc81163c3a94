"""The signing key of the chain client: from ``$ZKSERVE_CHAIN_PRIVATE_KEY`` or a key file.

The key is held only inside this process: taken out of the environment when first read (so
anvil, node, Ray and Ray's workers, started later, never inherit it) and then kept in an
eth-account ``LocalAccount``. Nothing here logs it, puts it in an exception message, or
returns it from ``repr``. Errors name where the key came from, never what it was. A key file
others can read is refused.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from serve.security.files import InsecureFile, require_private
from serve.security.redact import redact_url

KEY_ENV = "ZKSERVE_CHAIN_PRIVATE_KEY"

# anvil's first default dev account (mnemonic "test test ... junk"); public knowledge, so it
# is only ever used for the local chain zkserve starts itself.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

_taken: str | None = None  # the key this process took out of its environment


class SigningKeyError(ValueError):
    """The signing key is missing or malformed (message never contains key material)."""


def take_key_from_environ(environ: MutableMapping[str, str] | None = None) -> None:
    """Moves ``$ZKSERVE_CHAIN_PRIVATE_KEY`` out of the process environment into this module.
    Call it first thing in every entry point: children started afterwards do not see it."""
    global _taken
    value = (os.environ if environ is None else environ).pop(KEY_ENV, None)
    if value and value.strip():
        _taken = value.strip()


def child_env(base: MutableMapping[str, str] | None = None, with_key: bool = False) -> dict[str, str]:
    """An environment for a child process: without the key, unless the child is the one that
    signs (the verifier service ``zkserve up`` starts)."""
    env = dict(os.environ if base is None else base)
    env.pop(KEY_ENV, None)
    if with_key and _taken:
        env[KEY_ENV] = _taken
    return env


def _account_from_text(text: str, source: str) -> LocalAccount:
    candidate = text.strip()
    try:
        return Account.from_key(candidate)
    except Exception:  # noqa: BLE001 - eth-account's errors may echo the input
        raise SigningKeyError(f"the private key in {source} is not a 32-byte hex key") from None


def load_signer(chain_config: dict, local_chain: bool, environ: dict[str, str] | None = None) -> LocalAccount:
    """``$ZKSERVE_CHAIN_PRIVATE_KEY``, else ``chain.private_key_file``, else (local chain only)
    anvil's first dev key. With ``environ`` None the process environment is read (and scrubbed)."""
    if environ is None:
        take_key_from_environ()
        value = _taken
    else:
        value = environ.get(KEY_ENV, "").strip()
    if value:
        return _account_from_text(value, f"${KEY_ENV}")
    key_file = chain_config.get("private_key_file")
    if key_file:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise SigningKeyError(f"chain.private_key_file {path} does not exist")
        try:
            require_private(path, "chain.private_key_file")
        except InsecureFile as error:
            raise SigningKeyError(str(error)) from None
        return _account_from_text(path.read_text(), f"chain.private_key_file {path}")
    if local_chain:
        return Account.from_key(ANVIL_DEV_KEY)
    raise SigningKeyError(
        f"no signing key for {redact_url(chain_config.get('rpc_url'))}: set ${KEY_ENV} or chain.private_key_file"
    )
