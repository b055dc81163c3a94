"""The KubeRay manifests under deploy/ parse, and name only images, commands, ports, config
keys and import paths that exist in this project (no cluster is started)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml

from serve.config import load_config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "kuberay"


def _documents() -> list[dict]:
    return [doc for path in sorted(DEPLOY.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def _containers(node):
    if isinstance(node, dict):
        if "containers" in node:
            yield from node["containers"]
        for value in node.values():
            yield from _containers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _containers(value)


def test_manifests_parse_and_hold_the_expected_objects():
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in _documents()}
    assert kinds == {("RayService", "zkserve"), ("Deployment", "zkserve-verifier"), ("Service", "zkserve-verifier"),
                     ("PersistentVolumeClaim", "zkserve-verifier-state")}
    service = next(doc for doc in _documents() if doc["kind"] == "RayService")
    groups = {g["groupName"]: g for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert set(groups) == {"predictors-gpu", "provers-cpu"}
    gpu = groups["predictors-gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"
    verifier = next(doc for doc in _documents() if doc["kind"] == "Deployment")
    volumes = verifier["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["persistentVolumeClaim"]["claimName"] == "zkserve-verifier-state"


def test_images_commands_and_import_path_exist():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["zkserve"]' in dockerfile
    for container in _containers(_documents()):
        assert container["image"] == "zkserve:latest"  # built from the Dockerfile (README)
        for arg in container.get("args", []):
            if not arg.startswith("ulimit"):
                from serve.cli import app

                names = {command.name or command.callback.__name__ for command in app.registered_commands}
                assert arg in names, f"zkserve has no command {arg!r}"
    service = next(doc for doc in _documents() if doc["kind"] == "RayService")
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    module, name = serve_config["applications"][0]["import_path"].split(":")
    assert callable(getattr(importlib.import_module(module), name))


def test_ports_and_environment_match_the_project():
    exposed = {int(p) for p in re.findall(r"\d+", re.search(r"EXPOSE (.*)", (REPO / "Dockerfile").read_text())[1])}
    defaults = load_config(environ={})["zkserve"]
    known = exposed | {defaults["ingress"]["http_port"], defaults["verifier"]["metrics_port"], 6379, 8265}
    for container in _containers(_documents()):
        for port in container.get("ports", []):
            assert port["containerPort"] in known, port
        environ = {e["name"]: e.get("value", "x") for e in container.get("env", []) if e["name"].startswith("ZKSERVE_")}
        environ.pop("ZKSERVE_HOME", None)
        environ.pop("ZKSERVE_CHAIN_PRIVATE_KEY", None)
        environ.pop("ZKSERVE_API_KEY", None)  # a client's token, not a setting
        environ = {k: ("http://chain:8545" if k.endswith("RPC_URL") else v) for k, v in environ.items()}
        config = load_config(environ=environ)["zkserve"]  # an unknown key would not land in its section
        for key, value in environ.items():
            section, _, field = key.removeprefix("ZKSERVE_").lower().partition("_")
            assert str(config[section][field]) == str(value), key
        # a pod that listens beyond loopback must require API keys (the services refuse otherwise)
        for section in ("ingress", "verifier"):
            if environ.get(f"ZKSERVE_{section.upper()}_HOST") == "0.0.0.0":
                assert config[section]["auth_enabled"] is True, (container["name"], section)
