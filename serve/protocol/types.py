"""The neutral request, response and proof record every protocol adapter converts to and from.

Adapters (``oip``, ``native``, ``rest``) are pure functions between these frozen dataclasses and
one wire format; the data plane sees only these types. Sizes are bounded while decoding, before
anything is allocated (``Limits``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

from serve.errors import InvalidArgument, PayloadTooLarge


class AttestMode(StrEnum):
    """What a prediction comes with: nothing, a proof id at once, or the proof itself."""

    NONE = "none"
    ASYNC = "async"
    SYNC = "sync"

    @classmethod
    def parse(cls, value: object) -> AttestMode:
        """The mode a client named; InvalidArgument (naming the choices) for anything else."""
        if not isinstance(value, str):
            raise InvalidArgument(f"request parameter 'attest' must be a string (none, async or sync), "
                                  f"not {type(value).__name__}")
        mode = _ATTEST_MODES.get(value)  # the exact spelling: a dict lookup, no Enum call
        if mode is not None:
            return mode
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise InvalidArgument(f"request parameter 'attest' must be none, async or sync, not {value!r}") from None


_ATTEST_MODES = {mode.value: mode for mode in AttestMode}


class ProofStatus(StrEnum):
    QUEUED = "queued"
    PROVING = "proving"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (ProofStatus.DONE, ProofStatus.FAILED)


# Open Inference Protocol datatypes and the numpy dtypes that hold them (BYTES: object arrays
# of ``bytes``). Raw contents are little-endian, so the dtypes are too.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("bool"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
DATATYPE_OF_NUMPY: dict[str, str] = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "object": "BYTES", "bytes": "BYTES",
}
MAX_DIMENSIONS = 8


DATATYPE_OF_DTYPE: dict[np.dtype, str] = {np.dtype(name): datatype for name, datatype in DATATYPE_OF_NUMPY.items()
                                          if name != "bytes"}


def datatype_of(array: np.ndarray) -> str:
    found = DATATYPE_OF_DTYPE.get(array.dtype.newbyteorder("=") if array.dtype.byteorder == ">" else array.dtype)
    if found is not None:  # a dict lookup: dtype.name costs tens of microseconds
        return found
    if array.dtype.kind == "S":
        return "BYTES"
    try:
        return DATATYPE_OF_NUMPY[array.dtype.name]
    except KeyError:
        raise InvalidArgument(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype") from None


def numpy_dtype(datatype: str, tensor: str) -> np.dtype:
    try:
        return NUMPY_DTYPES[datatype]
    except KeyError:
        raise InvalidArgument(f"tensor {tensor!r} has datatype {datatype or '(empty)'}; the Open Inference Protocol "
                              f"datatypes are {', '.join(NUMPY_DTYPES)}") from None


@dataclass(frozen=True)
class Limits:
    """Bounds checked before a tensor is allocated."""

    max_elements: int = 16 * 1024 * 1024  # per request, over all tensors
    max_bytes: int = 4 * 1024 * 1024  # the request as received on the wire

    def check_bytes(self, size: int) -> None:
        if size > self.max_bytes:
            raise PayloadTooLarge(f"request is {size} bytes; the limit is {self.max_bytes} "
                                  f"(zkserve.ingress.max_request_bytes): send fewer rows per request")


def checked_shape(name: str, shape, limits: Limits, budget: list[int] | None = None) -> tuple[int, ...]:
    """The shape as ints, refused when a dimension is negative or the element count is over the
    bound (checked with Python ints, so a huge shape cannot overflow into a small one)."""
    dims = tuple(map(int, shape))
    if len(dims) > MAX_DIMENSIONS:
        raise InvalidArgument(f"tensor {name!r} has {len(dims)} dimensions; at most {MAX_DIMENSIONS}")
    if dims and min(dims) < 0:
        raise InvalidArgument(f"tensor {name!r} has shape {list(dims)}: dimensions must be >= 0")
    count = math.prod(dims)
    left = budget[0] if budget is not None else limits.max_elements
    if count > left:
        raise PayloadTooLarge(f"tensor {name!r} of shape {list(dims)} has {count} elements; a request may carry "
                              f"at most {limits.max_elements}: send fewer rows per request")
    if budget is not None:
        budget[0] -= count
    return dims


@dataclass(frozen=True)
class Tensor:
    """A named tensor; ``data`` has the numpy dtype of ``datatype`` and the given shape."""

    name: str
    datatype: str
    data: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @classmethod
    def of(cls, name: str, array) -> Tensor:
        array = np.asarray(array)
        datatype = datatype_of(array)
        if datatype == "BYTES":
            array = _bytes_array(array)
        return cls(name, datatype, array)

    def __eq__(self, other: object) -> bool:  # numpy arrays do not compare to one bool
        if not isinstance(other, Tensor):
            return NotImplemented
        if (self.name, self.datatype, self.shape) != (other.name, other.datatype, other.shape):
            return False
        if self.datatype == "BYTES":
            return self.data.ravel().tolist() == other.data.ravel().tolist()
        return bool(np.array_equal(self.data, other.data, equal_nan=self.data.dtype.kind == "f"))

    __hash__ = None  # type: ignore[assignment]


def _bytes_array(array: np.ndarray) -> np.ndarray:
    items = [item if isinstance(item, bytes) else str(item).encode() for item in array.ravel().tolist()]
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(array.shape)


@dataclass(frozen=True)
class InferRequest:
    model: str
    inputs: tuple[Tensor, ...]
    version: str = ""
    id: str = ""
    outputs: tuple[str, ...] = ()  # the outputs asked for; empty: all
    attest: AttestMode | None = None  # None: the server's default
    raw_output: bool = False  # answer in raw contents (OIP gRPC clients that sent raw)

    @property
    def rows(self) -> int:
        return self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else 0


ParameterValue = str | bool | int | float


@dataclass(frozen=True)
class InferResponse:
    model: str
    outputs: tuple[Tensor, ...]
    version: str = "1"
    id: str = ""
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    raw_output: bool = False


def new_proof_id() -> str:
    """128 random bits, 32 hex digits (a uuid4's hex without its six fixed bits)."""
    return os.urandom(16).hex()


@dataclass(frozen=True)
class ProofRecord:
    """One attested request's proof as the app holds it: the store persists it (``to_dict``),
    the adapters send it (zkserve.v1 ProofRecord, OIP response parameters), clients read it."""

    proof_id: str
    model: str
    model_id: str
    status: ProofStatus
    rows: int
    created_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    row_offset: int = 0  # where this request's rows sit in a shared proof
    proof_hash: str = ""
    proven_outputs_match: bool = False
    # decoded from the proof's public instances, this request's rows: name -> (shape, values)
    proven_outputs: Mapping[str, tuple[tuple[int, ...], tuple[float, ...]]] = field(default_factory=dict)
    error: str = ""
    proof: bytes = b""  # the proof JSON (circuits.Proof.to_json), when DONE and loaded

    def evolve(self, **changes) -> ProofRecord:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready, without the proof bytes (stored once per proof hash). Written out by hand:
        dataclasses.asdict deep-copies, which cost more than the rest of an attested request."""
        document = {name: getattr(self, name) for name in RECORD_FIELDS}
        document["status"] = self.status.value
        document["proven_outputs"] = {k: {"shape": list(s), "values": list(v)}
                                      for k, (s, v) in self.proven_outputs.items()}
        return document

    @classmethod
    def from_dict(cls, document: dict) -> ProofRecord:
        fields = dict(document)
        fields["status"] = ProofStatus(fields["status"])
        fields["proven_outputs"] = {k: (tuple(v["shape"]), tuple(v["values"]))
                                    for k, v in (fields.get("proven_outputs") or {}).items()}
        fields.pop("proof", None)
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in fields.items() if k in known})

    def proven_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64).reshape(s) for k, (s, v) in self.proven_outputs.items()}


RECORD_FIELDS = tuple(f for f in ProofRecord.__dataclass_fields__ if f != "proof")


# Response parameters of an attested prediction, the same over gRPC and REST.
def proof_parameters(record: ProofRecord | None, model_id: str, insecure_srs: bool) -> dict[str, ParameterValue]:
    parameters: dict[str, ParameterValue] = {"model_id": model_id}
    if insecure_srs:
        parameters["insecure_srs"] = True
    if record is None:
        return parameters
    parameters["proof_id"] = record.proof_id
    parameters["proof_status"] = record.status.value
    if record.status is ProofStatus.DONE:
        parameters["proof_hash"] = record.proof_hash
        parameters["proven_outputs_match"] = record.proven_outputs_match
    elif record.status is ProofStatus.FAILED:
        parameters["proof_error"] = record.error
    return parameters


PROOF_TENSOR = "zk_proof"
