"""Packages travel by model_id, never by path (no Ray started here): what a spec carries, the
node-local cache, the deployment overrides that place replicas, and `score --prover-resource`."""

from __future__ import annotations

import pickle

import pytest
import typer

from circuits import PackageError
from circuits.transport import PackageRef, materialize, pack_package
from serve.app.builder import build_app
from serve.app.models import ModelSpec, resolve_models
from serve.commands.scoring import _resources
from serve.config import load_config


class Unreachable:
    """An object store entry that must not be fetched: the package is in the node's cache."""

    def future(self):
        raise AssertionError("fetched from the object store although the node's cache holds the package")


def test_a_spec_carries_no_path_of_the_builder(mlp_package):
    spec = ModelSpec.from_package(mlp_package, PackageRef(mlp_package.model_id, None))
    assert str(mlp_package.root).encode() not in pickle.dumps(spec)


def test_a_replica_loads_from_its_node_cache(mlp_package, tmp_path, monkeypatch):
    monkeypatch.setenv("ZKSERVE_PACKAGE_CACHE", str(tmp_path / "cache"))
    materialize(mlp_package.model_id, pack_package(mlp_package))
    spec = ModelSpec.from_package(mlp_package, PackageRef(mlp_package.model_id, Unreachable()))
    loaded = spec.load_package()
    assert loaded.model_id == mlp_package.model_id and loaded.root.parent == tmp_path / "cache"
    assert spec.onnx_path == str(loaded.onnx_path)


def test_specs_built_without_ray_refuse_to_load(demo_packages, monkeypatch):
    import ray

    # a driver with no Ray (the suite's own serving app may have Ray up in this process)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    spec = resolve_models(["demo-mlp"])["demo-mlp"]
    assert spec.package is None
    with pytest.raises(PackageError, match="not put in the object store"):
        spec.load_package()


def test_a_placement_override_keeps_the_provers_runtime_env(demo_packages):
    section = load_config(environ={})["zkserve"]
    section["serving"].update(models=["demo-mlp"])
    overrides = {"Prover-demo-mlp": {"ray_actor_options": {"resources": {"node2": 0.1}}}}
    _, _, provers, _ = build_app(section, overrides)._bound_deployment.init_args
    options = provers["demo-mlp"]._bound_deployment.ray_actor_options
    assert options["resources"] == {"node2": 0.1} and options["num_cpus"] == 0.5
    assert int(options["runtime_env"]["env_vars"]["RAYON_NUM_THREADS"]) >= 1


def test_prover_resources_are_parsed_or_refused():
    assert _resources(["node2=0.1", "gpu_box = 1"]) == {"node2": 0.1, "gpu_box": 1.0}
    for bad in ("node2", "node2=lots", "=1", "node2=0"):
        with pytest.raises(typer.BadParameter, match="NAME=AMOUNT"):
            _resources([bad])
