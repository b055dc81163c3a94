"""The local anvil under kill -9: the signal reaches the node itself (not only a launcher),
and blocks older than the state interval survive it."""

from __future__ import annotations

import time

import pytest

from serve.chain.anvil import AnvilProcess, anvil_binary, rpc_chain_id
from serve.chain.registry import Registry
from serve.ports import free_port
from tests.e2e.conftest import dev_chain

pytestmark = pytest.mark.e2e


def test_kill_9_stops_anvil_and_keeps_dumped_blocks(tmp_path):
    assert anvil_binary().name == "anvil" and "@foundry-rs" in str(anvil_binary())  # the native binary
    state = tmp_path / "state.json"
    node = AnvilProcess(state, port=free_port()).start()
    try:
        registry = Registry.ensure(dev_chain(node.url), tmp_path)
        block = registry.chain.block_number()
        time.sleep(node.state_interval_s + 1.5)  # one periodic dump after the deployment
        node.kill()
        assert rpc_chain_id(node.url, timeout=0.5) is None  # nothing left answering on the port
    finally:
        node.stop()
    with AnvilProcess(state, port=node.port) as again:
        chain = dev_chain(again.url)
        assert chain.block_number() >= block
        assert chain.has_code(registry.address)
