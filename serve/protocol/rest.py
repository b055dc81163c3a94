"""KServe v2 REST (the Open Inference Protocol over HTTP, JSON tensors) <-> the neutral types.

A tensor's ``data`` is row-major, flat or nested; BYTES elements are JSON strings (UTF-8).
The proof, a BYTES output, is its JSON text as that string. Errors answer ``{"error": message}``
with the HTTP status of ``serve.errors.http_status``.
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np

from serve.errors import InvalidArgument, ServeError, http_status
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


def decode_request(body: bytes, model: str, version: str = "", limits: Limits = Limits()) -> InferRequest:
    """The neutral request from a ``POST /v2/models/{model}[/versions/{v}]/infer`` body."""
    limits.check_bytes(len(body))
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidArgument(f"request body is not JSON: {error}") from None
    document = _object(document, "the request body")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("the request body needs \"inputs\": a list of tensors with name, shape, datatype, data")
    budget = [limits.max_elements]
    tensors = []
    for index, item in enumerate(inputs):
        item = _object(item, f"inputs[{index}]")
        name, datatype = item.get("name"), item.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(item.get("shape"), list):
            raise InvalidArgument(f"inputs[{index}] needs \"name\" (string), \"shape\" (list) "
                                  "and \"datatype\" (string)")
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in item["shape"]):
            raise InvalidArgument(f"input {name!r}: shape must be a list of integers")
        shape = checked_shape(name, item["shape"], limits, budget)
        if "data" not in item:
            raise InvalidArgument(f"input {name!r} has no \"data\" (the binary tensor extension is not supported)")
        tensors.append(Tensor(name, datatype, _values(name, datatype, shape, item["data"])))
    parameters = _object(document.get("parameters") or {}, "\"parameters\"")
    attest = AttestMode.parse(parameters["attest"]) if "attest" in parameters else None
    outputs = document.get("outputs") or []
    named = isinstance(outputs, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    if not named:
        raise InvalidArgument("\"outputs\" must be a list of objects with a \"name\"")
    request_id = document.get("id", "")
    return InferRequest(model=model, version=version, id=str(request_id), inputs=tuple(tensors),
                        outputs=tuple(o["name"] for o in outputs), attest=attest)


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


def decode_response(document: dict) -> InferResponse:
    outputs = []
    for item in document.get("outputs", []):
        shape = tuple(int(d) for d in item["shape"])
        data = _values(item["name"], item["datatype"], shape, item["data"])
        outputs.append(Tensor(item["name"], item["datatype"], data))
    return InferResponse(model=document.get("model_name", ""), version=document.get("model_version", ""),
                         id=document.get("id", ""), outputs=tuple(outputs), parameters=document.get("parameters") or {})


def error_body(error: BaseException, message: str) -> tuple[int, dict]:
    """The HTTP status and JSON body of a failed call (``message`` already safe to show)."""
    return http_status(error) if isinstance(error, ServeError) else 500, {"error": message}
