"""KServe v2 REST (the Open Inference Protocol over HTTP, JSON tensors) <-> the neutral types.

A tensor's ``data`` is row-major, flat or nested; BYTES elements are JSON strings (UTF-8).
The proof, a BYTES output, is its JSON text as that string. Errors answer ``{"error": message}``
with the HTTP status of ``serve.errors.http_status``.

The binary tensor extension (KServe v2 / Triton "binary data"): a body of JSON followed by raw
tensor bytes, the JSON's length in the ``Inference-Header-Content-Length`` header. An input
with ``parameters.binary_data_size`` and no ``data`` takes that many bytes of the binary part,
in the order of the inputs: little-endian values, BYTES elements each after a 4-byte
little-endian length (as OIP gRPC raw contents). Outputs come back the same way when the
request says ``parameters.binary_data_output: true`` (all outputs) or an output's
``parameters.binary_data: true``.
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np

from serve.errors import InvalidArgument, ServeError, http_status
from serve.protocol.oip import decode_bytes_elements, encode_bytes_elements
from serve.protocol.types import (
    AttestMode,
    InferRequest,
    InferResponse,
    Limits,
    Tensor,
    checked_shape,
    numpy_dtype,
)

JSON_TYPES = {"b": (bool,), "i": (int,), "u": (int,), "f": (int, float)}
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
ALL_OUTPUTS = "*"  # binary_data_output: every output travels binary


def _object(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return value


def _flatten(name: str, data, count: int) -> list:
    """Row-major elements of flat or nested lists; stops as soon as more than ``count`` appear."""
    if not isinstance(data, list):
        data = [data]
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > 16:
                    raise InvalidArgument(f"input {name!r}: data is nested too deeply")
                stack.append(iter(item))
                break
            out.append(item)
            if len(out) > count:
                raise InvalidArgument(f"input {name!r}: data holds more than the {count} values its shape needs")
        else:
            stack.pop()
    return out


def _values(name: str, datatype: str, shape: tuple[int, ...], data) -> np.ndarray:
    dtype = numpy_dtype(datatype, name)
    count = math.prod(shape)
    values = _flatten(name, data, count)
    if len(values) != count:
        raise InvalidArgument(f"input {name!r}: data holds {len(values)} values, shape {list(shape)} needs {count}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise InvalidArgument(f"input {name!r}: BYTES data must be strings")
        out = np.empty(count, dtype=object)
        out[:] = [v.encode() for v in values]
        return out.reshape(shape)
    allowed = JSON_TYPES[dtype.kind]
    if not all(isinstance(v, allowed) and (dtype.kind == "b" or not isinstance(v, bool)) for v in values):
        kind = {"b": "true/false", "i": "integers", "u": "integers", "f": "numbers"}[dtype.kind]
        raise InvalidArgument(f"input {name!r}: {datatype} data must be {kind}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if values and (min(values) < info.min or max(values) > info.max):
            raise InvalidArgument(f"input {name!r}: a value lies outside the range of {datatype} "
                                  f"[{info.min}, {info.max}]")
    return np.asarray(values, dtype=dtype).reshape(shape)


def header_length(value: str | None, body_size: int) -> int | None:
    """The ``Inference-Header-Content-Length`` header as the JSON part's length, or None."""
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) > body_size:
        raise InvalidArgument(f"{HEADER_LENGTH} is {value[:40]!r}: it must be the byte length of the JSON part, "
                              f"at most the body's {body_size} bytes")
    return int(value)


def decode_request(body: bytes, model: str, version: str = "", limits: Limits = Limits(),
                   json_length: int | None = None) -> InferRequest:
    """The neutral request from a ``POST /v2/models/{model}[/versions/{v}]/infer`` body; with
    ``json_length`` (the ``Inference-Header-Content-Length`` header) the body's binary part
    carries the inputs that give ``binary_data_size``."""
    return decode_infer(body, model, version, limits, json_length)[0]


def decode_infer(body: bytes, model: str, version: str = "", limits: Limits = Limits(),
                 json_length: int | None = None) -> tuple[InferRequest, frozenset[str]]:
    """The request and the names of the outputs to answer in binary (``ALL_OUTPUTS`` for all)."""
    limits.check_bytes(len(body))
    split = len(body) if json_length is None else json_length
    binary = memoryview(body)[split:]
    try:
        document = json.loads(body[:split])
    except (ValueError, UnicodeDecodeError) as error:
        hint = (f" (a body with binary tensor data needs the {HEADER_LENGTH} header)"
                if json_length is None and str(error).startswith("Extra data") else "")
        raise InvalidArgument(f"request body is not JSON: {error}{hint}") from None
    document = _object(document, "the request body")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("the request body needs \"inputs\": a list of tensors with name, shape, datatype, data")
    budget = [limits.max_elements]
    tensors, offset = [], 0
    for index, item in enumerate(inputs):
        item = _object(item, f"inputs[{index}]")
        name, datatype = item.get("name"), item.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(item.get("shape"), list):
            raise InvalidArgument(f"inputs[{index}] needs \"name\" (string), \"shape\" (list) "
                                  "and \"datatype\" (string)")
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in item["shape"]):
            raise InvalidArgument(f"input {name!r}: shape must be a list of integers")
        shape = checked_shape(name, item["shape"], limits, budget)
        size = _object(item.get("parameters") or {}, f"input {name!r}: \"parameters\"").get("binary_data_size")
        if size is not None:
            data, offset = _binary_input(name, datatype, shape, item, size, binary, offset, json_length)
        elif "data" not in item:
            raise InvalidArgument(f"input {name!r} has no \"data\" (nor parameters.binary_data_size with "
                                  f"the {HEADER_LENGTH} header)")
        else:
            data = _values(name, datatype, shape, item["data"])
        tensors.append(Tensor(name, datatype, data))
    if offset != len(binary):
        raise InvalidArgument(f"the body's binary part holds {len(binary)} bytes, its inputs' binary_data_size "
                              f"add up to {offset}")
    parameters = _object(document.get("parameters") or {}, "\"parameters\"")
    attest = AttestMode.parse(parameters["attest"]) if "attest" in parameters else None
    outputs = document.get("outputs") or []
    named = isinstance(outputs, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    if not named:
        raise InvalidArgument("\"outputs\" must be a list of objects with a \"name\"")
    wanted = {o["name"] for o in outputs if _flag(_object(o.get("parameters") or {}, f"output {o['name']!r}: "
                                                          "\"parameters\""), "binary_data")}
    if _flag(parameters, "binary_data_output"):
        wanted.add(ALL_OUTPUTS)
    request_id = document.get("id", "")
    request = InferRequest(model=model, version=version, id=str(request_id), inputs=tuple(tensors),
                           outputs=tuple(o["name"] for o in outputs), attest=attest)
    return request, frozenset(wanted)


def _flag(parameters: dict, key: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"parameter {key!r} must be true or false")
    return value


def _binary_input(name: str, datatype: str, shape: tuple[int, ...], item: dict, size, binary: memoryview,
                  offset: int, json_length: int | None) -> tuple[np.ndarray, int]:
    """The input's values from the binary part at ``offset``, and the offset after them."""
    if json_length is None:
        raise InvalidArgument(f"input {name!r} gives binary_data_size but the request has no {HEADER_LENGTH} header")
    if "data" in item:
        raise InvalidArgument(f"input {name!r} gives both \"data\" and binary_data_size; send one")
    if type(size) is not int or size < 0:  # noqa: E721 - bool is an int subclass, refused
        raise InvalidArgument(f"input {name!r}: binary_data_size must be a byte count (an integer >= 0)")
    if offset + size > len(binary):
        raise InvalidArgument(f"input {name!r}: binary_data_size {size} runs past the body's binary part "
                              f"({len(binary) - offset} bytes left)")
    raw = bytes(binary[offset:offset + size])
    dtype = numpy_dtype(datatype, name)
    count = math.prod(shape)
    if datatype == "BYTES":
        return decode_bytes_elements(name, raw, count).reshape(shape), offset + size
    if size != count * dtype.itemsize:
        raise InvalidArgument(f"input {name!r}: binary_data_size is {size} bytes, shape {list(shape)} of {datatype} "
                              f"needs {count * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape), offset + size


def _json_data(tensor: Tensor) -> list:
    if tensor.datatype == "BYTES":
        return [_text(item) for item in tensor.data.ravel().tolist()]
    return tensor.data.ravel().tolist()


def _text(item: bytes) -> str:
    try:
        return item.decode()
    except UnicodeDecodeError:  # not text: base64, which a client recognises by failing to parse it
        return base64.b64encode(item).decode()


def encode_response(response: InferResponse) -> dict:
    document = {"model_name": response.model, "model_version": response.version,
                "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": _json_data(t)}
                            for t in response.outputs]}
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = dict(response.parameters)
    return document


def binary_bytes(tensor: Tensor) -> bytes:
    """A tensor as the binary extension carries it."""
    if tensor.datatype == "BYTES":
        return encode_bytes_elements(tensor.data.ravel().tolist())
    return np.ascontiguousarray(tensor.data, dtype=numpy_dtype(tensor.datatype, tensor.name)).tobytes()


def encode_infer(response: InferResponse, binary: frozenset[str] = frozenset()) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length (for the ``Inference-Header-Content-Length``
    header) when outputs named in ``binary`` travel as binary data after it, else None."""
    document = encode_response(response)
    chunks = []
    for item, tensor in zip(document["outputs"], response.outputs, strict=True):
        if ALL_OUTPUTS in binary or tensor.name in binary:
            raw = binary_bytes(tensor)
            del item["data"]
            item["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
    head = _json(document)
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)


def encode_request(request: InferRequest) -> dict:
    document: dict = {"inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": _json_data(t)}
                                 for t in request.inputs]}
    if request.id:
        document["id"] = request.id
    if request.attest is not None:
        document["parameters"] = {"attest": request.attest.value}
    if request.outputs:
        document["outputs"] = [{"name": name} for name in request.outputs]
    return document


def _json(document: dict) -> bytes:
    """As Starlette's JSONResponse writes it (no NaN: JSON has none)."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def encode_binary_request(request: InferRequest, binary_output: bool = False) -> tuple[bytes, int]:
    """A request body with every input in the binary part (as a binary-extension client sends
    it), and the JSON part's length for the ``Inference-Header-Content-Length`` header."""
    document = encode_request(request)
    chunks = []
    for item, tensor in zip(document["inputs"], request.inputs, strict=True):
        raw = binary_bytes(tensor)
        del item["data"]
        item["parameters"] = {"binary_data_size": len(raw)}
        chunks.append(raw)
    if binary_output:
        document.setdefault("parameters", {})["binary_data_output"] = True
    head = _json(document)
    return head + b"".join(chunks), len(head)


def decode_response(document: dict | bytes, json_length: int | None = None) -> InferResponse:
    """A response from its JSON document, or from a body with the binary part after
    ``json_length`` bytes of JSON (a client of the binary extension)."""
    binary = b""
    if not isinstance(document, dict):
        split = len(document) if json_length is None else json_length
        document, binary = json.loads(document[:split]), document[split:]
    outputs, offset = [], 0
    for item in document.get("outputs", []):
        shape = tuple(int(d) for d in item["shape"])
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            data, offset = _binary_input(item["name"], item["datatype"], shape, item, size, memoryview(binary),
                                         offset, json_length)
        else:
            data = _values(item["name"], item["datatype"], shape, item["data"])
        outputs.append(Tensor(item["name"], item["datatype"], data))
    return InferResponse(model=document.get("model_name", ""), version=document.get("model_version", ""),
                         id=document.get("id", ""), outputs=tuple(outputs), parameters=document.get("parameters") or {})


def error_body(error: BaseException, message: str) -> tuple[int, dict]:
    """The HTTP status and JSON body of a failed call (``message`` already safe to show)."""
    return http_status(error) if isinstance(error, ServeError) else 500, {"error": message}
