"""`zkserve compile --tune`: search EZKL's run-arg knobs for the fastest accurate circuit.

Coordinate descent over the knobs that change proving cost: each knob in turn takes every
value in its list while the others hold their best values so far. A candidate counts only
if its outputs stay within `max_error` of ONNX Runtime on the calibration rows; among those
the fastest prover wins. Every try (accepted, too inaccurate or failed) goes into the table
written to the package manifest.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ezkl

from circuits.compile import CompileError, CompileOptions, ModelInputs, Stages, build_circuit, compile_model, prepare
from circuits.package import CircuitPackage
from circuits.prover import write_input_json

# (option field, candidate values); decomposition pairs all cover a >= 2**28 range
KNOBS: list[tuple[str, list]] = [
    ("decomp", [(16384, 2), (1024, 3), (128, 4), (64, 5), (32, 6)]),
    ("scales", [(13,), (10,), (7,)]),
    ("num_inner_cols", [1, 2, 4]),
    ("disable_freivalds", [False, True]),
]
DEFAULT_MAX_ERROR = 0.01  # absolute, on the model's float outputs


@dataclasses.dataclass
class Trial:
    knobs: dict
    status: str  # "ok", "inaccurate", "failed"
    logrows: int | None = None
    max_abs_error: float | None = None
    setup_s: float | None = None
    prove_s: float | None = None
    error: str | None = None


def _apply(options: CompileOptions, knobs: dict) -> CompileOptions:
    changes = dict(knobs)
    extra = dict(options.extra_run_args)
    if "decomp" in changes:
        changes["decomp_base"], changes["decomp_legs"] = changes.pop("decomp")
    if "num_inner_cols" in changes:
        extra["num_inner_cols"] = changes.pop("num_inner_cols")
    return dataclasses.replace(options, **changes, extra_run_args=extra)


def _time_prove(work: Path, model: ModelInputs, batch: int) -> float:
    """Seconds for one witness + proof of the first calibration batch."""
    rows = [a[:batch] for a in model.calibration]
    witness = work / "witness.json"
    start = time.perf_counter()
    ezkl.gen_witness(str(write_input_json(rows, work / "input.json")), str(work / "model.compiled"), str(witness))
    ezkl.prove(str(witness), str(work / "model.compiled"), str(work / "pk.key"), str(work / "proof.json"),
               str(work / "kzg.srs"))
    return time.perf_counter() - start


def _try(model: ModelInputs, options: CompileOptions, knobs: dict, max_error: float) -> Trial:
    with tempfile.TemporaryDirectory(prefix="zkserve-tune-") as tmp:
        work = Path(tmp)
        stages = Stages(None)
        try:
            built = build_circuit(model, _apply(options, knobs), work, stages)
            prove_s = _time_prove(work, model, options.batch)
        except (CompileError, RuntimeError, ValueError) as error:
            return Trial(knobs, "failed", error=str(error)[:300])
    error = built["tolerance"]["max_abs_error"]
    return Trial(knobs, "ok" if error <= max_error else "inaccurate",
                 logrows=built["settings"]["run_args"]["logrows"], max_abs_error=error,
                 setup_s=stages.timings.get("setup"), prove_s=round(prove_s, 4))


def tune_and_compile(
    onnx_path: str | Path,
    name: str,
    options: CompileOptions = CompileOptions(),
    calibration: str | Path | None = None,
    out_dir: str | Path | None = None,
    max_error: float = DEFAULT_MAX_ERROR,
    knobs: list[tuple[str, list]] = KNOBS,
    on_trial: Callable[[Trial], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> CircuitPackage:
    model = prepare(onnx_path, options, calibration, Stages(None))
    options = dataclasses.replace(options, batch=model.batch)
    best: dict = {}
    best_trial: Trial | None = None
    trials: list[Trial] = []
    seen: set[str] = set()
    for knob, values in knobs:
        for value in values:
            candidate = {**best, knob: value}
            key = json.dumps(candidate, sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            trial = _try(model, options, candidate, max_error)
            trials.append(trial)
            if on_trial:
                on_trial(trial)
            if trial.status == "ok" and (best_trial is None or trial.prove_s < best_trial.prove_s):
                best_trial = trial
        if best_trial is not None:
            best = dict(best_trial.knobs)
    if best_trial is None:
        raise CompileError(
            f"no candidate stayed within max error {max_error}; "
            f"closest: {min((t.max_abs_error for t in trials if t.max_abs_error is not None), default=None)}"
        )
    table = {"max_error": max_error, "chosen": best_trial.knobs, "trials": [dataclasses.asdict(t) for t in trials]}
    return compile_model(
        model.source_path,
        name,
        _apply(options, best_trial.knobs),
        calibration=calibration,
        out_dir=out_dir,
        on_stage=on_stage,
        manifest_extra={"tuning": table},
    )
