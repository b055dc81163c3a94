"""Open Inference Protocol over gRPC (``inference.GRPCInferenceService``) <-> the neutral types.

Inputs arrive as ``raw_input_contents`` (little-endian bytes, what tritonclient sends) or as
typed ``contents``; both decode to the same arrays. FP16 has no typed field in the protocol,
so it travels raw only. BYTES elements travel raw as a 4-byte little-endian length before
each element.
"""

from __future__ import annotations

import math
import struct

import numpy as np
from inference import grpc_service_pb2 as oip

from serve.errors import InvalidArgument
from serve.protocol.types import (
    PROOF_TENSOR,
    AttestMode,
    InferRequest,
    InferResponse,
    Limits,
    ParameterValue,
    Tensor,
    checked_shape,
    numpy_dtype,
)

# Which InferTensorContents field carries each datatype when sent typed.
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


# --- parameters -------------------------------------------------------------------------------
def parameter_value(parameter: oip.InferParameter) -> ParameterValue | None:
    kind = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, kind) if kind else None


def set_parameter(parameters, key: str, value: ParameterValue) -> None:
    target = parameters[key]
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def parameters_of(parameters) -> dict[str, ParameterValue]:
    return {key: parameter_value(value) for key, value in parameters.items()}


# --- tensors ----------------------------------------------------------------------------------
def decode_bytes_elements(name: str, data: bytes, count: int) -> np.ndarray:
    """``count`` length-prefixed BYTES elements; the lengths are checked against the buffer."""
    items, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(data):
            raise InvalidArgument(f"input {name!r}: raw BYTES contents end inside an element's length")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidArgument(f"input {name!r}: raw BYTES element of {length} bytes runs past the contents")
        items.append(data[offset:offset + length])
        offset += length
    if offset != len(data):
        raise InvalidArgument(f"input {name!r}: raw BYTES contents hold {len(data) - offset} bytes beyond "
                              f"{count} element(s)")
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def encode_bytes_elements(items) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _from_raw(name: str, datatype: str, shape: tuple[int, ...], data: bytes) -> np.ndarray:
    dtype = numpy_dtype(datatype, name)
    count = math.prod(shape)  # Python ints: checked_shape bounded it already
    if datatype == "BYTES":
        return decode_bytes_elements(name, data, count).reshape(shape)
    want = count * dtype.itemsize
    if len(data) != want:
        raise InvalidArgument(f"input {name!r}: raw contents hold {len(data)} bytes, shape {list(shape)} of "
                              f"{datatype} needs {want}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _from_typed(name: str, datatype: str, shape: tuple[int, ...], contents: oip.InferTensorContents) -> np.ndarray:
    dtype = numpy_dtype(datatype, name)
    if datatype not in CONTENTS_FIELD:
        raise InvalidArgument(f"input {name!r}: {datatype} has no typed contents field in the protocol; "
                              f"send it as raw_input_contents")
    values = getattr(contents, CONTENTS_FIELD[datatype])
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidArgument(f"input {name!r}: contents hold {len(values)} values, shape {list(shape)} needs {count}")
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        out[:] = list(values)
        return out.reshape(shape)
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    array = np.asarray(values, dtype=np.int64 if dtype.kind == "i" else np.uint64 if dtype.kind == "u" else dtype)
    if info is not None and array.size and (array.min() < info.min or array.max() > info.max):
        raise InvalidArgument(f"input {name!r}: a value lies outside the range of {datatype} [{info.min}, {info.max}]")
    return array.astype(dtype).reshape(shape)


def _to_contents(tensor, array: np.ndarray, datatype: str) -> None:
    if datatype == "FP16":  # no typed field: callers send FP16 raw
        raise InvalidArgument("FP16 tensors travel only as raw contents")
    getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(array.ravel().tolist())


def _raw_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return encode_bytes_elements(tensor.data.ravel().tolist())
    dtype = numpy_dtype(tensor.datatype, tensor.name)
    data = tensor.data
    return (data if data.dtype == dtype else data.astype(dtype)).tobytes()  # tobytes: C order, any layout


# --- requests ---------------------------------------------------------------------------------
def decode_request(message: oip.ModelInferRequest, limits: Limits = Limits(), size: int | None = None) -> InferRequest:
    """The neutral request; InvalidArgument / PayloadTooLarge naming what is wrong."""
    limits.check_bytes(message.ByteSize() if size is None else size)
    raw, tensors = message.raw_input_contents, message.inputs  # read once: each access builds a view
    if raw and len(raw) != len(tensors):
        raise InvalidArgument(f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs")
    budget = [limits.max_elements]
    inputs = []
    for index, tensor in enumerate(tensors):
        name, datatype = tensor.name, tensor.datatype
        shape = checked_shape(name, tensor.shape, limits, budget)
        data = (_from_raw(name, datatype, shape, raw[index]) if raw
                else _from_typed(name, datatype, shape, tensor.contents))
        inputs.append(Tensor(name, datatype, data))
    attest = None
    parameters = message.parameters
    if "attest" in parameters:
        attest = AttestMode.parse(parameter_value(parameters["attest"]))
    wanted = message.outputs
    return InferRequest(model=message.model_name, version=message.model_version, id=message.id, inputs=tuple(inputs),
                        outputs=tuple([o.name for o in wanted]) if wanted else (), attest=attest,
                        raw_output=bool(raw))


def encode_request(request: InferRequest, raw: bool = True) -> oip.ModelInferRequest:
    message = oip.ModelInferRequest(model_name=request.model, model_version=request.version, id=request.id)
    _add_tensors(message.inputs, message.raw_input_contents, request.inputs, raw)
    for name in request.outputs:
        message.outputs.add(name=name)
    if request.attest is not None:
        message.parameters["attest"].string_param = request.attest.value
    return message


# --- responses --------------------------------------------------------------------------------
def encode_response(response: InferResponse) -> oip.ModelInferResponse:
    """Raw contents when the request came raw (or any output is FP16), typed otherwise."""
    raw = response.raw_output or any(t.datatype == "FP16" for t in response.outputs)
    message = oip.ModelInferResponse(model_name=response.model, model_version=response.version, id=response.id)
    parameters = message.parameters
    for key, value in response.parameters.items():
        set_parameter(parameters, key, value)
    _add_tensors(message.outputs, message.raw_output_contents, response.outputs, raw)
    return message


def _add_tensors(items, raw_contents, tensors, raw: bool) -> None:
    """Tensors into a request's inputs or a response's outputs: raw bytes beside the message,
    or typed contents inside each tensor."""
    for tensor in tensors:
        item = items.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
        if raw:
            raw_contents.append(_raw_bytes(tensor))
        else:
            _to_contents(item, tensor.data, tensor.datatype)


def decode_response(message: oip.ModelInferResponse) -> InferResponse:
    raw = list(message.raw_output_contents)
    outputs = []
    for index, tensor in enumerate(message.outputs):
        shape = tuple(int(d) for d in tensor.shape)
        data = (_from_raw(tensor.name, tensor.datatype, shape, raw[index]) if raw
                else _from_typed(tensor.name, tensor.datatype, shape, tensor.contents))
        outputs.append(Tensor(tensor.name, tensor.datatype, data))
    return InferResponse(model=message.model_name, version=message.model_version, id=message.id,
                         outputs=tuple(outputs), parameters=parameters_of(message.parameters), raw_output=bool(raw))


def proof_of(response: InferResponse) -> bytes | None:
    """The single element of the BYTES output ``zk_proof``, when the response carries one."""
    for tensor in response.outputs:
        if tensor.name == PROOF_TENSOR:
            return tensor.data.ravel()[0]
    return None
