"""ONNX model -> circuit package: EZKL settings, calibration, circuit, keys, verifier, manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ezkl
import numpy as np
import onnx
import onnxruntime as ort

from circuits import package as pkg
from circuits.evm import build_verifier
from circuits.hashing import model_id_of, sha256_file
from circuits.package import CircuitPackage, PackageError
from circuits.paths import state_paths
from circuits.prover import write_input_json
from circuits.solidity import solc_version
from circuits.srs import SrsSource

VISIBILITIES = {"input": ("public", "hashed", "private"), "output": ("public", "hashed", "private"),
                "param": ("fixed", "hashed", "private")}
TOLERANCE_ROWS = 16  # calibration rows checked to set the output tolerance


class CompileError(RuntimeError):
    """The model cannot become a circuit; the message says which stage and why."""


@dataclass(frozen=True)
class CompileOptions:
    batch: int = 1
    input_visibility: str = "public"
    output_visibility: str = "public"
    param_visibility: str = "fixed"
    # 128**4 covers the same 2**28 range as EZKL's default 16384**2 with a 128x smaller
    # lookup table: logrows ~10 instead of 15+ on small models, ~20x faster proving.
    decomp_base: int = 128
    decomp_legs: int = 4
    max_logrows: int | None = None
    scales: tuple[int, ...] | None = None  # input/param scales calibration may pick from
    disable_freivalds: bool | None = None  # None: on for batches > 1, where it was measured to pay off
    calibration_target: str = "resources"  # or "accuracy"
    version: str = "1"
    srs: Path | None = None  # None -> locally generated, insecure dev SRS
    extra_run_args: dict = field(default_factory=dict)

    def validate(self) -> None:
        for kind, allowed in VISIBILITIES.items():
            value = getattr(self, f"{kind}_visibility")
            if value not in allowed:
                raise CompileError(f"--{kind}-visibility must be one of {', '.join(allowed)}, not {value!r}")
        if self.batch < 1:
            raise CompileError(f"--batch must be >= 1, not {self.batch}")
        if self.srs is not None and not Path(self.srs).is_file():
            raise CompileError(f"SRS file {self.srs} does not exist")

    def cache_dict(self) -> dict:
        d = asdict(self)
        d["srs"] = SrsSource(self.srs).cache_token()
        return d


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list  # first dimension is the batch
    dtype: str
    dynamic_batch: str | None  # the ONNX dim_param naming the batch, if dynamic


def _tensor_specs(values) -> list[TensorSpec]:
    specs = []
    for value in values:
        dims = value.type.tensor_type.shape.dim
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
        batch_param = dims[0].dim_param if dims and dims[0].dim_param else None
        shape = [d.dim_value if d.dim_value else d.dim_param for d in dims]
        specs.append(TensorSpec(value.name, shape, dtype, batch_param))
    return specs


def inspect_model(onnx_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    try:
        model = onnx.load(str(onnx_path))
    except Exception as error:  # onnx raises several types for a bad file
        raise CompileError(f"{onnx_path} is not a readable ONNX model: {error}") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    return _tensor_specs(inputs), _tensor_specs(model.graph.output)


def _load_calibration(path: Path | None, inputs: list[TensorSpec], batch: int) -> tuple[list[np.ndarray], str]:
    """Calibration rows per input: .npy (one input) or .npz (by input name), else random."""
    if path is None:
        warnings.warn("no --calibration data: calibrating on random inputs in [-1, 1]; "
                      "scales and tolerance may not fit real data", stacklevel=3)
        rng = np.random.default_rng(0)
        rows = max(4 * batch, 8)
        return [rng.uniform(-1, 1, (rows, *_row_shape(spec))) for spec in inputs], "random"
    path = Path(path)
    if path.suffix == ".npz":
        archive = np.load(path)
        missing = [spec.name for spec in inputs if spec.name not in archive]
        if missing:
            raise CompileError(f"calibration file {path} has no array for input(s) {', '.join(missing)}")
        arrays = [archive[spec.name] for spec in inputs]
    else:
        if len(inputs) != 1:
            raise CompileError(f"the model has {len(inputs)} inputs: give calibration as .npz keyed by input name")
        arrays = [np.load(path)]
    for array, spec in zip(arrays, inputs, strict=False):
        if list(array.shape[1:]) != _row_shape(spec):
            raise CompileError(f"calibration rows for {spec.name!r} have shape {list(array.shape[1:])}, "
                               f"the model wants {_row_shape(spec)}")
    return [_whole_batches(a.astype(np.float64), batch) for a in arrays], sha256_file(path)


def _whole_batches(rows: np.ndarray, batch: int) -> np.ndarray:
    """EZKL calibrates on whole batches: repeat rows up to the next multiple of the batch."""
    wanted = -(-len(rows) // batch) * batch
    return rows if wanted == len(rows) else np.resize(rows, (wanted, *rows.shape[1:]))


def _row_shape(spec: TensorSpec) -> list[int]:
    rest = spec.shape[1:]
    if any(not isinstance(d, int) for d in rest):
        raise CompileError(f"input {spec.name!r} has dynamic dimensions beyond the batch: {spec.shape}")
    return rest


def _cache_key(onnx_path: Path, calibration_token: str, options: CompileOptions) -> str:
    material = json.dumps({
        "format": pkg.FORMAT_VERSION, "onnx": sha256_file(onnx_path), "calibration": calibration_token,
        "options": options.cache_dict(), "ezkl": ezkl.__version__, "solc": solc_version(),
    }, sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()


class Stages:
    """Runs named stages, timing each and turning EZKL's errors into CompileError."""

    def __init__(self, on_stage: Callable[[str], None] | None):
        self.timings: dict[str, float] = {}
        self._on_stage = on_stage or (lambda name: None)

    def run(self, name: str, action: Callable):
        self._on_stage(name)
        start = time.perf_counter()
        try:
            result = action()
        except (CompileError, PackageError):
            raise
        except Exception as error:  # EZKL raises RuntimeError/ValueError/panics as exceptions
            raise CompileError(f"stage {name!r} failed: {str(error).strip() or type(error).__name__}") from None
        if result is False:
            raise CompileError(f"stage {name!r} failed: EZKL returned False")
        self.timings[name] = round(time.perf_counter() - start, 4)
        return result


STAGES = ("inspect", "settings", "calibrate", "circuit", "srs", "setup", "tolerance", "verifier", "manifest")


@dataclass
class ModelInputs:
    """What compilation reads from the user: the model's signature and its calibration rows."""

    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    calibration: list[np.ndarray]
    calibration_token: str  # sha256 of the calibration file, or "random"
    calibration_source: str


def prepare(onnx_path: str | Path, options: CompileOptions, calibration: str | Path | None,
            stages: Stages) -> ModelInputs:
    onnx_path = Path(onnx_path).resolve()
    if not onnx_path.is_file():
        raise CompileError(f"model file {onnx_path} does not exist")
    options.validate()
    inputs, outputs = stages.run("inspect", lambda: inspect_model(onnx_path))
    _check_batch(inputs, options.batch)
    arrays, token = _load_calibration(Path(calibration) if calibration else None, inputs, options.batch)
    return ModelInputs(onnx_path, inputs, outputs, arrays, token, str(calibration) if calibration else "random")


def build_circuit(model: ModelInputs, options: CompileOptions, work: Path, stages: Stages) -> dict:
    """Settings, calibration, circuit, SRS, keys and tolerance into `work` (named as in a package)."""
    paths = {kind: work / filename for kind, filename in pkg.FILES.items()}
    shutil.copyfile(model.path, paths["onnx"])
    onnx_file, settings_file = str(paths["onnx"]), str(paths["settings"])
    run_args = _run_args(options, model.inputs)
    stages.run("settings", lambda: ezkl.gen_settings(onnx_file, settings_file, py_run_args=run_args))
    cal_json = write_input_json(model.calibration, work / "calibration.json")
    scales = list(options.scales) if options.scales else None
    stages.run("calibrate", lambda: ezkl.calibrate_settings(
        str(cal_json), onnx_file, settings_file, options.calibration_target, scales=scales,
        max_logrows=options.max_logrows))
    cal_json.unlink()
    stages.run("circuit", lambda: ezkl.compile_circuit(onnx_file, str(paths["compiled"]), settings_file))
    settings = json.loads(paths["settings"].read_text())
    logrows = settings["run_args"]["logrows"]
    srs_entry = stages.run("srs", lambda: SrsSource(options.srs).materialize(logrows, state_paths().srs, paths["srs"]))
    stages.run(
        "setup", lambda: ezkl.setup(str(paths["compiled"]), str(paths["vk"]), str(paths["pk"]), str(paths["srs"]))
    )
    tolerance = stages.run("tolerance", lambda: _measure_tolerance(model.path, paths["compiled"], model.calibration,
                                                                   options.batch, settings, work))
    return {"paths": paths, "settings": settings, "srs": srs_entry, "tolerance": tolerance}


def compile_model(
    onnx_path: str | Path,
    name: str,
    options: CompileOptions = CompileOptions(),
    calibration: str | Path | None = None,
    out_dir: str | Path | None = None,
    on_stage: Callable[[str], None] | None = None,
    manifest_extra: dict | None = None,
) -> CircuitPackage:
    """Compiles `onnx_path` into a circuit package; reuses a cached package for equal inputs."""
    stages = Stages(on_stage)
    model = prepare(onnx_path, options, calibration, stages)
    cache_key = _cache_key(model.path, model.calibration_token, options)
    out = Path(out_dir) if out_dir else state_paths().circuits / f"{name}-{cache_key[:12]}"
    cached = _reuse(out, cache_key)
    if cached is not None:
        return cached

    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    built = build_circuit(model, options, work, stages)
    paths, settings, tolerance = built["paths"], built["settings"], built["tolerance"]
    verifier = stages.run("verifier", lambda: build_verifier(paths["vk"], paths["settings"], paths["srs"],
                                                             paths["verifier_sol"]))
    paths["verifier_artifact"].write_text(json.dumps(verifier.to_json()))

    def write_manifest() -> None:
        logrows = settings["run_args"]["logrows"]
        manifest = {
            "format": pkg.FORMAT_VERSION,
            "name": name,
            "version": options.version,
            "model_id": model_id_of(paths["vk"]),
            "cache_key": cache_key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source_onnx": str(model.path),
            "batch_size": options.batch,
            "inputs": [_entry(spec, options.batch, scale)
                       for spec, scale in zip(model.inputs, settings["model_input_scales"], strict=False)],
            "outputs": [_entry(spec, options.batch, scale)
                        for spec, scale in zip(model.outputs, settings["model_output_scales"], strict=False)],
            "visibility": {"input": options.input_visibility, "output": options.output_visibility,
                           "param": options.param_visibility},
            "logrows": logrows,
            "run_args": settings["run_args"],
            "calibration": {"source": model.calibration_source, "rows": len(model.calibration[0]), **tolerance},
            "tolerance": tolerance["tolerance"],
            "srs": {**built["srs"], "logrows": logrows},
            "insecure_srs": built["srs"]["insecure"],
            "verifier": {"contract": verifier.name, "deployed_size": verifier.deployed_size, "solc": solc_version()},
            "toolchain": {"ezkl": ezkl.__version__, "onnxruntime": ort.__version__, "solc": solc_version()},
            "timings_s": stages.timings,
            **(manifest_extra or {}),
            "files": {path.name: sha256_file(path) for path in paths.values() if path.name != pkg.MANIFEST},
        }
        (work / pkg.MANIFEST).write_text(json.dumps(manifest, indent=2))

    stages.run("manifest", write_manifest)
    shutil.rmtree(out, ignore_errors=True)
    work.replace(out)
    return CircuitPackage.load(out)


def _check_batch(inputs: list[TensorSpec], batch: int) -> None:
    for spec in inputs:
        fixed = spec.shape[0] if spec.dynamic_batch is None else None
        if fixed is not None and fixed not in (0, batch):
            raise CompileError(f"input {spec.name!r} has a fixed batch of {fixed}; compile with --batch {fixed} "
                               f"or export the model with a dynamic batch dimension")


def _run_args(options: CompileOptions, inputs: list[TensorSpec]):
    run_args = ezkl.PyRunArgs()
    run_args.input_visibility = options.input_visibility
    run_args.output_visibility = options.output_visibility
    run_args.param_visibility = options.param_visibility
    run_args.decomp_base = options.decomp_base
    run_args.decomp_legs = options.decomp_legs
    # every dynamic dimension named in the model becomes the requested batch size
    names = sorted({spec.dynamic_batch for spec in inputs if spec.dynamic_batch})
    run_args.variables = [(name, options.batch) for name in names] or [("batch_size", options.batch)]
    run_args.disable_freivalds = options.batch > 1 if options.disable_freivalds is None else options.disable_freivalds
    for key, value in options.extra_run_args.items():
        setattr(run_args, key, value)
    return run_args


def _entry(spec: TensorSpec, batch: int, scale: int) -> dict:
    return {"name": spec.name, "shape": [batch, *spec.shape[1:]], "dtype": spec.dtype, "scale": scale}


def _measure_tolerance(onnx_path: Path, compiled: Path, cal_arrays: list[np.ndarray], batch: int,
                       settings: dict, work: Path) -> dict:
    """Max |proven - float| output error over calibration rows; tolerance leaves headroom."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    rows = min(len(cal_arrays[0]), TOLERANCE_ROWS)
    rows -= rows % batch or 0
    rows = max(rows, batch)
    worst = 0.0
    for start in range(0, rows, batch):
        chunk = [a[start:start + batch] for a in cal_arrays]
        if len(chunk[0]) < batch:
            break
        expected = session.run(None, {n: c.astype(np.float32) for n, c in zip(names, chunk, strict=False)})
        witness_path = work / "tolerance-witness.json"
        ezkl.gen_witness(str(write_input_json(chunk, work / "tolerance-input.json")), str(compiled), str(witness_path))
        witness = json.loads(witness_path.read_text())
        for felts, scale, want in zip(witness["outputs"], settings["model_output_scales"], expected, strict=False):
            got = np.array([ezkl.felt_to_float(f, scale) for f in felts])
            worst = max(worst, float(np.max(np.abs(got - np.ravel(want)))))
    for leftover in ("tolerance-witness.json", "tolerance-input.json"):
        (work / leftover).unlink(missing_ok=True)
    out_scale = min(settings["model_output_scales"])
    # 2x the worst calibration error plus one quantization step of the output scale
    return {"max_abs_error": worst, "tolerance": 2 * worst + 2.0 ** -out_scale}


def _reuse(out: Path, cache_key: str) -> CircuitPackage | None:
    if not (out / pkg.MANIFEST).is_file():
        return None
    try:
        existing = CircuitPackage.load(out)
    except PackageError:
        return None  # a damaged cache entry is rebuilt, never trusted
    return existing if existing.manifest.get("cache_key") == cache_key else None
