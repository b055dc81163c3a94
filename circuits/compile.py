"""ONNX model -> circuit package: EZKL settings, calibration, circuit, keys, verifier, manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import ezkl
import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort

from circuits import domain as dom
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
DOMAIN_CORNERS = 32  # domain corners checked at compile time (all of them when there are fewer)
DOMAIN_RANDOM = 32  # uniform random domain points checked at compile time
DOMAIN_CALIBRATION_POINTS = 9  # domain points (centre + corners) added to EZKL's calibration rows


class CompileError(RuntimeError):
    """The model cannot become a circuit; the message says which stage and why."""


@dataclass(frozen=True)
class CompileOptions:
    batch: int | None = None  # rows per proof; None: the model's fixed batch dimension, else 1
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
    # The input domain the circuit is proven accurate on: the calibration rows widened by
    # `domain_margin` x span, unless given explicitly for all features or per feature (file).
    input_range: tuple[float, float] | None = None
    input_ranges_file: Path | None = None
    domain_margin: float = dom.DEFAULT_MARGIN
    # Largest output error (vs ONNX Runtime) accepted anywhere in the domain; None: 1% of the
    # outputs' span over the checked points, at least 16 quantization steps of the output scale.
    domain_max_error: float | None = None

    def validate(self) -> None:
        for kind, allowed in VISIBILITIES.items():
            value = getattr(self, f"{kind}_visibility")
            if value not in allowed:
                raise CompileError(f"--{kind}-visibility must be one of {', '.join(allowed)}, not {value!r}")
        if self.batch is not None and self.batch < 1:
            raise CompileError(f"--batch must be >= 1, not {self.batch}")
        if self.srs is not None and not Path(self.srs).is_file():
            raise CompileError(f"SRS file {self.srs} does not exist")
        if self.input_range is not None and self.input_ranges_file is not None:
            raise CompileError("--input-range and --input-ranges exclude each other")
        if not (self.domain_margin >= 0 and np.isfinite(self.domain_margin)):
            raise CompileError(f"--domain-margin must be a finite number >= 0, not {self.domain_margin}")
        if self.domain_max_error is not None and not self.domain_max_error > 0:
            raise CompileError(f"--domain-max-error must be > 0, not {self.domain_max_error}")

    def cache_dict(self) -> dict:
        d = asdict(self)
        d["srs"] = SrsSource(self.srs).cache_token()
        if self.input_ranges_file is not None:
            d["input_ranges_file"] = sha256_file(Path(self.input_ranges_file))
        return d


@dataclass(frozen=True)
class OnnxTensor:
    """A graph input or output as the ONNX file declares it (the serving side's per-row view is
    ``serve.app.models.TensorSpec``)."""

    name: str
    shape: list  # first dimension is the batch
    dtype: str
    dynamic_batch: str | None  # the ONNX dim_param naming the batch, if dynamic


def _tensor_specs(values) -> list[OnnxTensor]:
    specs = []
    for value in values:
        dims = value.type.tensor_type.shape.dim
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
        batch_param = dims[0].dim_param if dims and dims[0].dim_param else None
        shape = [d.dim_value if d.dim_value else d.dim_param for d in dims]
        specs.append(OnnxTensor(value.name, shape, dtype, batch_param))
    return specs


def inspect_model(onnx_path: Path) -> tuple[list[OnnxTensor], list[OnnxTensor]]:
    try:
        model = onnx.load(str(onnx_path))
    except Exception as error:  # onnx raises several types for a bad file
        raise CompileError(f"{onnx_path} is not a readable ONNX model: {error}") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    return _tensor_specs(inputs), _tensor_specs(model.graph.output)


def _load_calibration(path: Path | None, inputs: list[OnnxTensor], batch: int,
                      explicit: dict[str, dom.InputRange] | None) -> tuple[list[np.ndarray], str]:
    """Calibration rows per input: .npy (one input) or .npz (by input name), else random
    (uniform inside an explicit domain, or in [-1, 1] when there is none)."""
    if path is None:
        rng = np.random.default_rng(0)
        rows = max(4 * batch, 8)
        if explicit is not None:
            return [rng.uniform(explicit[spec.name].low, explicit[spec.name].high,
                                (rows, explicit[spec.name].low.size)).reshape(rows, *_row_shape(spec))
                    for spec in inputs], "random"
        warnings.warn("no --calibration data: calibrating on random inputs in [-1, 1]; "
                      "scales and tolerance may not fit real data", stacklevel=3)
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


def _row_shape(spec: OnnxTensor) -> list[int]:
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


# ONNX Runtime has dropped the kernels of some old operator versions (Gemm 6, AveragePool 1,
# BatchNormalization 6, PRelu 6, ...): such models are upgraded with onnx's version converter.
UPGRADE_OPSET = 13  # the demo models' opset, the one EZKL and ONNX Runtime are tested on here

STAGES = ("inspect", "upgrade", "settings", "calibrate", "circuit", "srs", "setup", "tolerance", "verifier", "manifest")


@dataclass
class ModelInputs:
    """What compilation reads from the user: the model's signature, its calibration rows and
    the input domain the circuit must hold."""

    path: Path
    inputs: list[OnnxTensor]
    outputs: list[OnnxTensor]
    calibration: list[np.ndarray]
    calibration_token: str  # sha256 of the calibration file, or "random"
    calibration_source: str
    domain: dict[str, dom.InputRange]
    batch: int  # the circuit's rows per proof: --batch, else the model's fixed batch, else 1
    source_path: Path  # the file the user gave (path may be its opset-upgraded copy)
    upgrade: dict | None = None  # {"from": opset, "to": opset, "reason": ...} when upgraded

    def domain_points(self) -> list[np.ndarray]:
        """The points of the domain the compile-time check runs the circuit on."""
        return dom.sample(self.domain, [_row_shape(spec) for spec in self.inputs], DOMAIN_CORNERS, DOMAIN_RANDOM)


def prepare(onnx_path: str | Path, options: CompileOptions, calibration: str | Path | None,
            stages: Stages) -> ModelInputs:
    source = Path(onnx_path).resolve()
    if not source.is_file():
        raise CompileError(f"model file {source} does not exist")
    options.validate()
    inputs, outputs = stages.run("inspect", lambda: inspect_model(source))
    path, upgrade = stages.run("upgrade", lambda: upgrade_if_needed(source))
    batch = _circuit_batch(inputs, options.batch)
    try:
        explicit = _explicit_domain(options, inputs)
        arrays, token = _load_calibration(Path(calibration) if calibration else None, inputs, batch, explicit)
        names = [spec.name for spec in inputs]
        # random calibration rows stand for the box they were drawn from, [-1, 1] per feature
        bounds = arrays if calibration else [np.stack([-np.ones(a.shape[1:]), np.ones(a.shape[1:])]) for a in arrays]
        domain = explicit or dom.from_calibration(names, bounds, options.domain_margin)
    except dom.DomainError as error:
        raise CompileError(str(error)) from None
    return ModelInputs(path, inputs, outputs, arrays, token, str(calibration) if calibration else "random",
                       domain, batch, source, upgrade)


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def upgrade_if_needed(path: Path) -> tuple[Path, dict | None]:
    """The model itself when ONNX Runtime can load it, else a copy upgraded to UPGRADE_OPSET
    (kept in the state directory, named by the original's hash); with a record of the upgrade."""
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return path, None
    except Exception as error:  # noqa: BLE001 - ORT raises its own exception types per failure
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    model = onnx.load(str(path))
    opset = _opset(model)
    if opset >= UPGRADE_OPSET:
        raise CompileError(f"ONNX Runtime cannot load {path.name} (opset {opset}): {reason}")
    try:
        upgraded = onnx.version_converter.convert_version(model, UPGRADE_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as error:  # noqa: BLE001 - the converter raises bare RuntimeErrors per op
        raise CompileError(f"ONNX Runtime cannot run {path.name} at opset {opset} ({reason}) and onnx's version "
                           f"converter could not upgrade it to opset {UPGRADE_OPSET}: {error}") from None
    target = state_paths().root / "upgraded" / f"{sha256_file(path)[:16]}-opset{UPGRADE_OPSET}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    onnx.save(upgraded, str(partial))
    partial.replace(target)
    try:
        ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001
        raise CompileError(f"{path.name} upgraded from opset {opset} to {UPGRADE_OPSET} still does not load in "
                           f"ONNX Runtime: {str(error).strip()[:300]}") from None
    return target, {"from": opset, "to": UPGRADE_OPSET, "reason": reason}


def _explicit_domain(options: CompileOptions, inputs: list[OnnxTensor]) -> dict[str, dom.InputRange] | None:
    names = [spec.name for spec in inputs]
    if options.input_range is not None:
        low, high = options.input_range
        spec = {name: (low, high) for name in names}
    elif options.input_ranges_file is not None:
        spec = dom.load_ranges_file(Path(options.input_ranges_file), names)
    else:
        return None
    return dom.explicit(names, [int(np.prod(_row_shape(s))) for s in inputs], spec)


def build_circuit(model: ModelInputs, options: CompileOptions, work: Path, stages: Stages) -> dict:
    """Settings, calibration, circuit, SRS, keys and tolerance into `work` (named as in a package)."""
    options = replace(options, batch=model.batch)
    paths = {kind: work / filename for kind, filename in pkg.FILES.items()}
    shutil.copyfile(model.path, paths["onnx"])
    onnx_file, settings_file = str(paths["onnx"]), str(paths["settings"])
    run_args = _run_args(options, model.inputs)
    stages.run("settings", lambda: ezkl.gen_settings(onnx_file, settings_file, py_run_args=run_args))
    # EZKL sizes scales and lookup ranges from what it calibrates on: the domain's centre and
    # extreme corners go in beside the user's rows, so the whole domain fits the circuit.
    points = model.domain_points()
    extremes = [p[:DOMAIN_CALIBRATION_POINTS] for p in points]
    cal_rows = [_whole_batches(np.concatenate([rows, extra]), options.batch)
                for rows, extra in zip(model.calibration, extremes, strict=False)]
    cal_json = write_input_json(cal_rows, work / "calibration.json")
    scales = list(options.scales) if options.scales else None
    stages.run("calibrate", lambda: ezkl.calibrate_settings(
        str(cal_json), onnx_file, settings_file, options.calibration_target, scales=scales,
        max_logrows=options.max_logrows))
    cal_json.unlink()
    stages.run("circuit", lambda: ezkl.compile_circuit(onnx_file, str(paths["compiled"]), settings_file))
    settings = json.loads(paths["settings"].read_text())
    logrows = settings["run_args"]["logrows"]
    srs_entry = stages.run("srs", lambda: SrsSource(options.srs).materialize(logrows, state_paths().srs, paths["srs"]))
    stages.run("setup", lambda: ezkl.setup(str(paths["compiled"]), str(paths["vk"]), str(paths["pk"]),
                                           str(paths["srs"])))
    checker = AccuracyCheck(model.path, paths["compiled"], options.batch, settings, work)
    tolerance = stages.run("tolerance", lambda: checker.measure(model, points, options.domain_max_error))
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
    options = replace(options, batch=model.batch)
    cache_key = _cache_key(model.source_path, model.calibration_token, options)
    out = Path(out_dir) if out_dir else state_paths().circuits / f"{name}-{cache_key[:12]}"
    cached = _reuse(out, cache_key)
    if cached is not None:
        return cached

    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    built = build_circuit(model, options, work, stages)
    paths, settings, tolerance = built["paths"], built["settings"], built["tolerance"]
    verifier = stages.run(
        "verifier", lambda: build_verifier(paths["vk"], paths["settings"], paths["srs"], paths["verifier_sol"])
    )
    paths["verifier_artifact"].write_text(json.dumps(verifier.to_json()))

    def write_manifest() -> None:
        logrows = settings["run_args"]["logrows"]
        manifest = {
            "format": pkg.FORMAT_VERSION,
            "name": name,
            "version": options.version,
            "model_id": model_id_of(paths["vk"], paths["settings"], paths["srs"]),
            "cache_key": cache_key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source_onnx": str(model.source_path),
            "opset_upgrade": model.upgrade,
            "batch_size": options.batch,
            "inputs": [
                _entry(spec, options.batch, scale)
                for spec, scale in zip(model.inputs, settings["model_input_scales"], strict=False)
            ],
            "outputs": [
                _entry(spec, options.batch, scale)
                for spec, scale in zip(model.outputs, settings["model_output_scales"], strict=False)
            ],
            "visibility": {
                "input": options.input_visibility,
                "output": options.output_visibility,
                "param": options.param_visibility,
            },
            "logrows": logrows,
            "run_args": settings["run_args"],
            "calibration": {
                "source": model.calibration_source,
                "rows": len(model.calibration[0]),
                "max_abs_error": tolerance["max_abs_error"],
                "tolerance": tolerance["tolerance"],
            },
            "tolerance": tolerance["tolerance"],
            "input_domain": dom.InputDomain(name, model.domain).to_manifest(),
            "domain_check": tolerance["domain_check"],
            "srs": {**built["srs"], "logrows": logrows},
            "insecure_srs": built["srs"]["insecure"],  # as seen at compile; loaders decide from the hash
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


def _circuit_batch(inputs: list[OnnxTensor], requested: int | None) -> int:
    """--batch, else the batch the model fixes (a model exported with a batch of N proves N
    rows per proof), else 1. A fixed batch other than --batch cannot be proven."""
    fixed = {
        spec.shape[0]
        for spec in inputs
        if spec.dynamic_batch is None and spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0
    }
    if len(fixed) > 1:
        raise CompileError(f"the model's inputs fix different batch sizes {sorted(fixed)}")
    if not fixed:
        return requested or 1
    (batch,) = fixed
    if requested is not None and requested != batch:
        name = next(spec.name for spec in inputs if spec.shape and spec.shape[0] == batch)
        raise CompileError(
            f"input {name!r} has a fixed batch of {batch}; compile with --batch {batch} (or without "
            f"--batch) or export the model with a dynamic batch dimension"
        )
    return batch


def _run_args(options: CompileOptions, inputs: list[OnnxTensor]):
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


def _entry(spec: OnnxTensor, batch: int, scale: int) -> dict:
    return {"name": spec.name, "shape": [batch, *spec.shape[1:]], "dtype": spec.dtype, "scale": scale}


class DomainNotHeld(CompileError):
    """The circuit cannot reproduce the model's outputs somewhere in the requested domain."""


class AccuracyCheck:
    """Runs the compiled circuit (witness generation only: no proof is needed to read its
    outputs) against ONNX Runtime on calibration rows and on points of the input domain."""

    def __init__(self, onnx_path: Path, compiled: Path, batch: int, settings: dict, work: Path):
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.compiled, self.batch, self.work = compiled, batch, work
        self.out_scales = settings["model_output_scales"]

    def errors(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Per-row max |circuit - ONNX Runtime| output error (inf where the circuit cannot
        run the row), and ONNX Runtime's outputs; rows are checked in whole circuit batches."""
        count = len(arrays[0])
        padded = [_whole_batches(a, self.batch) for a in arrays]
        row_errors = np.zeros(len(padded[0]))
        expected_all = []
        witness_path, input_path = self.work / "check-witness.json", self.work / "check-input.json"
        for start in range(0, len(padded[0]), self.batch):
            chunk = [a[start : start + self.batch] for a in padded]
            expected = self.session.run(
                None, {n: c.astype(np.float32) for n, c in zip(self.names, chunk, strict=False)}
            )
            expected_all.append(expected)
            try:
                ezkl.gen_witness(str(write_input_json(chunk, input_path)), str(self.compiled), str(witness_path))
            except (RuntimeError, ValueError):  # a value outside the circuit's range: it cannot prove the row
                row_errors[start : start + self.batch] = np.inf
                continue
            witness = json.loads(witness_path.read_text())
            for felts, scale, want in zip(witness["outputs"], self.out_scales, expected, strict=False):
                got = np.array([ezkl.felt_to_float(f, scale) for f in felts]).reshape(self.batch, -1)
                diff = np.max(np.abs(got - np.asarray(want, dtype=np.float64).reshape(self.batch, -1)), axis=1)
                row_errors[start : start + self.batch] = np.maximum(row_errors[start : start + self.batch], diff)
        for leftover in (witness_path, input_path):
            leftover.unlink(missing_ok=True)
        outputs = [np.concatenate([e[i] for e in expected_all])[:count] for i in range(len(self.out_scales))]
        return row_errors[:count], outputs

    def measure(self, model: ModelInputs, points: list[np.ndarray], max_error: float | None) -> dict:
        """Worst error over calibration rows and domain points; fails when the domain is not held."""
        rows = max(min(len(model.calibration[0]), TOLERANCE_ROWS), self.batch)
        cal_errors, _ = self.errors([a[:rows] for a in model.calibration])
        domain_errors, outputs = self.errors(points)
        step = 2.0 ** -min(self.out_scales)
        span = max((float(np.ptp(o)) for o in outputs if o.size), default=0.0)
        limit = max_error if max_error is not None else max(0.01 * span, 16 * step)
        worst_at = int(np.argmax(domain_errors))
        worst_domain = float(domain_errors[worst_at])
        if not worst_domain <= limit:
            where = ", ".join(
                f"{spec.name}={np.array2string(p[worst_at].ravel()[:8], precision=4)}"
                for spec, p in zip(model.inputs, points, strict=False)
            )
            found = (
                "the circuit cannot run it (a value overflows its lookup range)"
                if np.isinf(worst_domain)
                else f"its outputs differ from ONNX Runtime by {worst_domain:.4g} (limit {limit:.4g})"
            )
            raise DomainNotHeld(
                f"the circuit does not hold the input domain ({dom.InputDomain('', model.domain).describe()}): "
                f"at the domain point {where} {found}; narrow the domain (--input-range / --input-ranges, "
                f"--domain-margin), raise --domain-max-error, or give more decomposition range (--decomp-legs)"
            )
        worst = max(float(np.max(cal_errors, initial=0.0)), worst_domain)
        return {
            "max_abs_error": worst,
            # 2x the worst error seen anywhere checked plus one quantization step of the output scale
            "tolerance": 2 * worst + step,
            "domain_check": {
                "points": len(points[0]),
                "corners": len(points[0]) - 1 - DOMAIN_RANDOM,
                "random": DOMAIN_RANDOM,
                "max_abs_error": worst_domain,
                "limit": limit,
                "calibration_rows": rows,
                "calibration_max_abs_error": float(np.max(cal_errors, initial=0.0)),
            },
        }


def _reuse(out: Path, cache_key: str) -> CircuitPackage | None:
    if not (out / pkg.MANIFEST).is_file():
        return None
    try:
        existing = CircuitPackage.load(out)
    except PackageError:
        return None  # a damaged cache entry is rebuilt, never trusted
    return existing if existing.manifest.get("cache_key") == cache_key else None
