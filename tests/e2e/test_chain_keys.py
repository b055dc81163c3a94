"""The signing key: where it comes from, and that no message ever carries it."""

from __future__ import annotations

import pytest

from serve.chain.keys import ANVIL_DEV_KEY, KEY_ENV, SigningKeyError, load_signer
from serve.chain.rpc import ChainClient
from tests.e2e.conftest import OUTSIDER_KEY

REMOTE = {"rpc_url": "http://node.example:8545", "private_key_file": None}


def test_env_wins_then_file_then_dev_key_for_local_only(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(OUTSIDER_KEY + "\n")
    key_file.chmod(0o600)
    assert load_signer({**REMOTE, "private_key_file": str(key_file)}, False, {}).key.hex().endswith(OUTSIDER_KEY[2:])
    from_env = load_signer({**REMOTE, "private_key_file": str(key_file)}, False, {KEY_ENV: ANVIL_DEV_KEY})
    assert from_env.key.hex().endswith(ANVIL_DEV_KEY[2:])
    assert load_signer({"rpc_url": None, "private_key_file": None}, True, {}).address.startswith("0xf39F")
    with pytest.raises(SigningKeyError, match="ZKSERVE_CHAIN_PRIVATE_KEY"):
        load_signer(REMOTE, False, {})  # never the public dev key for a real chain


def test_malformed_keys_are_not_echoed(tmp_path):
    almost = ANVIL_DEV_KEY[:-1] + "z"  # one bad digit: close enough that an echo would leak it
    key_file = tmp_path / "key"
    key_file.write_text(almost)
    key_file.chmod(0o600)
    for attempt in (lambda: load_signer(REMOTE, False, {KEY_ENV: almost}),
                    lambda: load_signer({**REMOTE, "private_key_file": str(key_file)}, False, {})):
        with pytest.raises(SigningKeyError) as caught:
            attempt()
        assert almost[2:] not in str(caught.value) and caught.value.__cause__ is None
    client = ChainClient("http://127.0.0.1:1", load_signer(REMOTE, False, {KEY_ENV: ANVIL_DEV_KEY}))
    assert ANVIL_DEV_KEY[2:] not in repr(client) + repr(client.__dict__)
