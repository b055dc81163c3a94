"""How the app is put together, without starting it: the CPU shape (ORT in the ingress, no
Predictor), the GPU shape (a Predictor per model holding a GPU share), the prover sizing, and
the environment every Ray process of the app gets."""

from __future__ import annotations

import pytest

from serve.app.builder import build_app
from serve.config import load_config


def zkserve_section(**serving) -> dict:
    section = load_config(environ={})["zkserve"]
    section["serving"].update(models=["demo-mlp"], **serving)
    return section


def ingress_args(app):
    bound = app._bound_deployment
    return bound, bound.init_args


def test_cpu_node_runs_onnx_runtime_in_the_ingress(demo_packages):
    bound, (specs, predictors, provers, settings) = ingress_args(build_app(zkserve_section()))
    assert predictors is None and set(specs) == {"demo-mlp"}
    assert settings["host"] == "127.0.0.1" and settings["port"] == 9000 and settings["http_port"] == 8000
    assert settings["max_queued_proofs"] == 1024 and settings["proofs_in_flight"] == {"demo-mlp": 2}
    env = bound.ray_actor_options["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"  # the replica serves itself, no Ray proxy
    prover = provers["demo-mlp"]._bound_deployment
    assert prover.name == "Prover-demo-mlp" and prover.max_ongoing_requests == 2
    assert int(prover.ray_actor_options["runtime_env"]["env_vars"]["RAYON_NUM_THREADS"]) >= 1


def test_gpu_node_gives_each_model_a_predictor_holding_the_gpu(demo_packages):
    _, (_, predictors, _, _) = ingress_args(build_app(zkserve_section(num_gpus=0.5), gpus_visible=True))
    predictor = predictors["demo-mlp"]._bound_deployment
    assert predictor.name == "Predictor-demo-mlp"
    assert predictor.ray_actor_options["num_gpus"] == 0.5 and predictor.ray_actor_options["num_cpus"] == 0


def test_bad_serving_values_fail_naming_the_key(demo_packages):
    with pytest.raises(Exception, match="none, async or sync"):
        build_app(zkserve_section(default_attest="maybe"))
    with pytest.raises(ValueError, match="proof_batching"):
        build_app(zkserve_section(proof_batching="sometimes"))
