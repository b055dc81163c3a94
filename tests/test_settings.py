"""The config schema and the state paths: unit tests, no server started."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuits.paths import StatePaths
from serve.config import load_config
from serve.settings import (
    RAY_SERVE_KEYS,
    AttestMode,
    ConfigError,
    ProofBatching,
    Settings,
    load_settings,
    settings_from_document,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zkserve.yaml"
    path.write_text(text)
    return path


def test_defaults_are_typed_and_resolved(tmp_path):
    settings = load_settings(environ={"ZKSERVE_HOME": str(tmp_path)})
    assert settings.serving.default_attest is AttestMode.ASYNC
    assert settings.serving.proof_batching is ProofBatching.PER_REQUEST
    assert settings.ingress.port == 9000 and settings.verifier.port == 9100
    assert settings.state_dir == tmp_path.resolve()
    assert settings.chain.local and settings.chain.url == "http://127.0.0.1:8545"


def test_file_then_environment_override_typed(tmp_path):
    path = write(tmp_path, "applications: []\nproxy_location: EveryNode\n"
                           "zkserve:\n  verifier:\n    port: 9300\n    confirmations: 2\n")
    settings = load_settings(path, environ={"ZKSERVE_VERIFIER_PORT": "9400", "ZKSERVE_SERVING_SUBMIT_PROOFS": "false",
                                            "ZKSERVE_SERVING_MODELS": "[demo-mlp, /pkgs/credit]",
                                            "ZKSERVE_SERVING_PROVER_CORES": "null",
                                            "ZKSERVE_SERVING_DEFAULT_ATTEST": "sync"})
    assert settings.verifier.port == 9400  # the environment wins over the file
    assert settings.verifier.confirmations == 2  # the file wins over the default
    assert settings.serving.submit_proofs is False
    assert settings.serving.models == ["demo-mlp", "/pkgs/credit"]
    assert settings.serving.prover_cores is None
    assert settings.serving.default_attest is AttestMode.SYNC
    assert settings.ray == {"applications": [], "proxy_location": "EveryNode"}  # Ray Serve's keys pass through


def test_string_settings_stay_strings_from_the_environment():
    settings = load_settings(environ={"ZKSERVE_INGRESS_HOST": "0", "ZKSERVE_SERVING_MODELS": "demo-cnn"})
    assert settings.ingress.host == "0"
    assert settings.serving.models == ["demo-cnn"]  # one name is a list of one


@pytest.mark.parametrize(("yaml_text", "expected"), [
    ("zkserve:\n  serving:\n    max_batchsize: 8\n", r"zkserve\.serving\.max_batchsize; did you mean max_batch_size\?"),
    ("zkserve:\n  verifierr: {}\n", r"zkserve\.verifierr; did you mean verifier\?"),
    ("zkserve:\n  chain:\n    rpcurl: http://x\n", r"zkserve\.chain\.rpcurl; did you mean rpc_url\?"),
    ("grpc_option: {}\n", r"top-level key grpc_option; did you mean grpc_options\?"),
])
def test_typos_are_refused_with_the_nearest_key(tmp_path, yaml_text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_settings(write(tmp_path, yaml_text), environ={})


def test_environment_typos_are_refused_with_the_nearest_variable():
    with pytest.raises(ConfigError, match=r"ZKSERVE_SERVING_MAX_BATCHSIZE is not a zkserve setting; "
                                          r"did you mean ZKSERVE_SERVING_MAX_BATCH_SIZE\?"):
        load_settings(environ={"ZKSERVE_SERVING_MAX_BATCHSIZE": "8"})
    with pytest.raises(ConfigError, match=r"ZKSERVE_SERVNG_MAX_BATCH_SIZE .*ZKSERVE_SERVING_MAX_BATCH_SIZE"):
        load_settings(environ={"ZKSERVE_SERVNG_MAX_BATCH_SIZE": "8"})
    # variables that are not settings, or belong to nobody we know, are left alone
    load_settings(environ={"ZKSERVE_HOME": "/tmp", "ZKSERVE_CHAIN_PRIVATE_KEY": "0x00", "ZKSERVE_TEST_HOME": "/t",
                           "ZKSERVE_SOMETHING_ELSE": "1"})


@pytest.mark.parametrize(("yaml_text", "expected"), [
    ("zkserve:\n  serving:\n    default_attest: maybe\n",
     r"zkserve\.serving\.default_attest: Input should be 'none', 'async' or 'sync', got 'maybe'"),
    ("zkserve:\n  serving:\n    proof_batching: together\n", r"zkserve\.serving\.proof_batching: Input should be"),
    ("zkserve:\n  serving:\n    max_batch_size: 0\n",
     r"zkserve\.serving\.max_batch_size: .*greater than or equal to 1"),
    ("zkserve:\n  ingress:\n    port: 70000\n", r"zkserve\.ingress\.port: .*less than or equal to 65535"),
    ("zkserve:\n  serving:\n    models: []\n", r"zkserve\.serving\.models: .*at least 1 item"),
    ("zkserve:\n  serving:\n    models: [a, a]\n", r"listed more than once: a"),
    ("zkserve:\n  verifier:\n    retry_base_s: 5\n    retry_max_s: 1\n", r"retry_max_s \(1\.0\) is below retry_base_s"),
    ("zkserve:\n  chain:\n    rpc_url: localhost:8545\n", r"zkserve\.chain\.rpc_url: String should match"),
    ("zkserve:\n  serving: 3\n", r"zkserve\.serving must be a mapping"),
])
def test_values_out_of_range_or_choice_are_refused(tmp_path, yaml_text, expected):
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError, match=expected) as raised:
        load_settings(path, environ={})
    assert str(path) in str(raised.value)  # the error says which file


def test_environment_errors_name_the_variable():
    with pytest.raises(ConfigError, match=r"ZKSERVE_VERIFIER_PORT \(setting zkserve\.verifier\.port\): "
                                          r"Input should be a valid integer.*got 'ninety'"):
        load_settings(environ={"ZKSERVE_VERIFIER_PORT": "ninety"})
    with pytest.raises(ConfigError, match=r"ZKSERVE_SERVING_DEFAULT_ATTEST .*got 'maybe'"):
        load_settings(environ={"ZKSERVE_SERVING_DEFAULT_ATTEST": "maybe"})
    with pytest.raises(ConfigError, match=r"ZKSERVE_SERVING_SUBMIT_PROOFS .*valid boolean"):
        load_settings(environ={"ZKSERVE_SERVING_SUBMIT_PROOFS": "perhaps"})


def test_file_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "zkserve: [\n"), environ={})
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_settings(write(tmp_path, "- 1\n"), environ={})


def test_config_path_from_the_environment(tmp_path):
    path = write(tmp_path, "zkserve:\n  ingress:\n    port: 9555\n")
    assert load_settings(environ={"ZKSERVE_CONFIG": str(path)}).ingress.port == 9555


def test_assignment_is_validated():
    settings = Settings()
    with pytest.raises(ValueError, match="default_attest"):
        settings.serving.default_attest = "maybe"


def test_compat_document_round_trips(tmp_path):
    path = write(tmp_path, "applications: []\nzkserve:\n  serving:\n    default_attest: sync\n")
    document = load_config(path, environ={"ZKSERVE_HOME": str(tmp_path / "home")})
    assert document["applications"] == []
    assert document["zkserve"]["serving"]["default_attest"] == "sync"  # plain data, not an enum
    assert document["zkserve"]["state_dir"] == str((tmp_path / "home").resolve())
    again = settings_from_document(document)
    assert again.serving.default_attest is AttestMode.SYNC and again.ray == {"applications": []}
    assert again.paths.root == (tmp_path / "home").resolve()


def test_ray_serve_keys_match_the_installed_ray():
    from ray.serve.schema import ServeDeploySchema

    assert set(ServeDeploySchema.model_fields) == RAY_SERVE_KEYS


# ---- state paths ----

def test_state_dir_precedence(tmp_path):
    home, explicit = tmp_path / "home", tmp_path / "explicit"
    assert StatePaths.resolve(explicit, {"ZKSERVE_HOME": str(home)}).root == explicit.resolve()
    assert StatePaths.resolve(None, {"ZKSERVE_HOME": str(home)}).root == home.resolve()
    assert StatePaths.resolve(None, {}, cwd=tmp_path).root == (tmp_path / ".zkserve").resolve()
    assert StatePaths.resolve("rel", {}, cwd=tmp_path).root == (tmp_path / "rel").resolve()


def test_settings_state_dir_precedence(tmp_path):
    home = tmp_path / "home"
    path = write(tmp_path, f"zkserve:\n  state_dir: {tmp_path / 'yaml'}\n")
    assert load_settings(path, environ={"ZKSERVE_HOME": str(home)}).paths.root == (tmp_path / "yaml").resolve()
    assert load_settings(path, environ={"ZKSERVE_HOME": str(home), "ZKSERVE_STATE_DIR": str(tmp_path / "env")}
                         ).paths.root == (tmp_path / "env").resolve()
    assert load_settings(environ={"ZKSERVE_HOME": str(home)}).paths.root == home.resolve()


def test_every_state_file_lives_under_the_root(tmp_path):
    paths = StatePaths.resolve(tmp_path)
    files = {name: getattr(paths, name) for name in dir(StatePaths)
             if isinstance(getattr(StatePaths, name, None), property)}
    assert {"circuits", "srs", "contracts", "proofs", "outbox", "anvil_state", "deployments", "logs",
            "keys_file", "resolved_config", "verifier_log", "ray_logs"} <= set(files)
    for name, path in files.items():
        assert path.is_relative_to(paths.root), name
    assert len(set(files.values())) == len(files)  # no two concepts share a path


def test_export_makes_the_compile_cache_follow_the_yaml_state_dir(tmp_path, monkeypatch):
    """A package compiled after `up --config` resolved its state dir lands where the verifier looks."""
    from circuits.paths import state_paths

    monkeypatch.setenv("ZKSERVE_HOME", str(tmp_path / "home"))
    settings = load_settings(write(tmp_path, f"zkserve:\n  state_dir: {tmp_path / 'yaml'}\n"))
    settings.paths.export()
    assert state_paths().circuits == (tmp_path / "yaml" / "circuits").resolve()
    assert load_settings().paths.root == (tmp_path / "yaml").resolve()  # and children read the same
