"""Open Inference Protocol tensors <-> numpy, with the checks a request must pass."""

from __future__ import annotations

import struct

import numpy as np
from inference import grpc_service_pb2 as oip

from serve.app.errors import invalid
from serve.app.models import OIP_DATATYPES, ModelSpec

NUMPY_OF_DATATYPE = {datatype: np.dtype(name) for name, datatype in OIP_DATATYPES.items()}
# Which InferTensorContents field carries each datatype when sent typed.
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def decode_inputs(spec: ModelSpec, request: oip.ModelInferRequest) -> dict[str, np.ndarray]:
    """Inputs by name as arrays of the model's dtypes; raises RequestError naming the problem."""
    expected = {t.name: t for t in spec.inputs}
    if len(request.inputs) != len(expected):
        raise invalid(
            f"model {spec.name} takes {len(expected)} input(s) ({', '.join(expected)}), got {len(request.inputs)}"
        )
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise invalid(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    arrays: dict[str, np.ndarray] = {}
    rows = None
    for index, tensor in enumerate(request.inputs):
        target = expected.get(tensor.name)
        if target is None:
            raise invalid(f"model {spec.name} has no input named {tensor.name!r}; inputs: {', '.join(expected)}")
        if tensor.name in arrays:
            raise invalid(f"input {tensor.name!r} is given twice")
        if tensor.datatype != target.datatype:
            raise invalid(
                f"input {tensor.name!r} has datatype "
                f"{tensor.datatype or '(empty)'}, model {spec.name} wants {target.datatype}"
            )
        shape = tuple(int(d) for d in tensor.shape)
        if len(shape) != 1 + len(target.row_shape) or shape[1:] != target.row_shape or shape[0] < 1:
            raise invalid(
                f"input {tensor.name!r} has shape {list(shape)}, model {spec.name} wants "
                f"[batch>=1, {', '.join(map(str, target.row_shape))}]"
            )
        if rows is not None and shape[0] != rows:
            raise invalid(f"inputs disagree on the batch size ({rows} vs {shape[0]} rows)")
        rows = shape[0]
        array = (
            _read_raw(tensor.name, raw[index], target.numpy_dtype, shape)
            if raw
            else _read_typed(tensor, target.numpy_dtype, shape)
        )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise invalid(f"input {tensor.name!r} holds NaN or infinite values")
        arrays[tensor.name] = array
    return arrays


def _read_raw(name: str, data: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    want = int(np.prod(shape)) * dtype.itemsize
    if len(data) != want:
        raise invalid(
            f"input {name!r}: raw contents hold {len(data)} bytes, shape {list(shape)} of {dtype.name} needs {want}"
        )
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _read_typed(tensor, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    values = getattr(tensor.contents, CONTENTS_FIELD[tensor.datatype])
    want = int(np.prod(shape))
    if len(values) != want:
        raise invalid(f"input {tensor.name!r}: contents hold {len(values)} values, shape {list(shape)} needs {want}")
    return np.asarray(values, dtype=dtype).reshape(shape)


def encode_bytes_raw(items: list[bytes]) -> bytes:
    """BYTES tensors travel as a 4-byte little-endian length before each element."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def add_output(response: oip.ModelInferResponse, name: str, array: np.ndarray, raw: bool) -> None:
    datatype = OIP_DATATYPES[array.dtype.name]
    tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
    if raw:
        response.raw_output_contents.append(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    else:
        getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(array.ravel().tolist())


def add_bytes_output(response: oip.ModelInferResponse, name: str, items: list[bytes], raw: bool) -> None:
    tensor = response.outputs.add(name=name, datatype="BYTES", shape=[len(items)])
    if raw:
        response.raw_output_contents.append(encode_bytes_raw(items))
    else:
        tensor.contents.bytes_contents.extend(items)
