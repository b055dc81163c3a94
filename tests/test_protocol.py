"""The protocol adapters, without any server: OIP gRPC, zkserve.v1 and KServe v2 REST to and from
the neutral types, every datatype, bounds checked before allocating, and the error table."""

from __future__ import annotations

import json
import struct

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from inference import grpc_service_pb2 as oip_pb
from zkserve.v1 import attestation_pb2 as pb

from circuits.domain import InputDomain, InputRange
from serve import errors
from serve.app.models import ModelSpec, TensorSpec
from serve.protocol import native, oip, rest
from serve.protocol.types import (
    NUMPY_DTYPES,
    AttestMode,
    InferRequest,
    InferResponse,
    Limits,
    ProofRecord,
    ProofStatus,
    Tensor,
    proof_parameters,
)
from serve.protocol.validation import check_inputs, check_outputs

NUMERIC = [d for d in NUMPY_DTYPES if d != "BYTES"]
TYPED = [d for d in NUMERIC if d != "FP16"]  # FP16 has no typed contents field in the protocol


def sample(datatype: str, shape=(2, 3)) -> np.ndarray:
    if datatype == "BYTES":
        out = np.empty(int(np.prod(shape)), dtype=object)
        out[:] = [f"item-{i}".encode() for i in range(out.size)]
        return out.reshape(shape)
    dtype = NUMPY_DTYPES[datatype]
    if dtype.kind == "b":
        return (np.arange(np.prod(shape)) % 2 == 0).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = [int(info.min), int(info.max), 0, 1, int(info.max) // 2, int(info.min) // 2 if info.min else 7]
        return np.array(values[: int(np.prod(shape))], dtype=dtype).reshape(shape)
    return np.array([0.5, -1.25, 3.0, 1e-3, -0.0, 1e4][: np.prod(shape)], dtype=dtype).reshape(shape)


def request_with(*tensors: Tensor, attest=AttestMode.SYNC, outputs=()) -> InferRequest:
    return InferRequest(model="m", version="1", id="req-1", inputs=tensors, outputs=outputs, attest=attest)


# --- OIP gRPC ---------------------------------------------------------------------------------
@pytest.mark.parametrize("datatype", list(NUMPY_DTYPES))
def test_oip_raw_round_trip_every_datatype(datatype):
    request = request_with(Tensor("x", datatype, sample(datatype)))
    message = oip.encode_request(request, raw=True)
    assert len(message.raw_input_contents) == 1 and not message.inputs[0].HasField("contents")
    decoded = oip.decode_request(oip_pb.ModelInferRequest.FromString(message.SerializeToString()))
    assert decoded == request.__class__(**{**request.__dict__, "raw_output": True})


@pytest.mark.parametrize("datatype", TYPED + ["BYTES"])
def test_oip_typed_contents_decode_like_raw(datatype):
    request = request_with(Tensor("x", datatype, sample(datatype)))
    typed = oip.decode_request(oip.encode_request(request, raw=False))
    raw = oip.decode_request(oip.encode_request(request, raw=True))
    assert typed.inputs == raw.inputs == request.inputs
    assert typed.raw_output is False and raw.raw_output is True


def test_oip_raw_little_endian_as_tritonclient_sends():
    message = oip_pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="INT32", shape=[1, 2])
    message.raw_input_contents.append(struct.pack("<ii", -2, 70000))
    (tensor,) = oip.decode_request(message).inputs
    assert tensor.data.tolist() == [[-2, 70000]]


def test_oip_fp16_typed_is_refused_with_the_fix():
    message = oip_pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP16", shape=[1])
    with pytest.raises(errors.InvalidArgument, match="raw_input_contents"):
        oip.decode_request(message)


@pytest.mark.parametrize("case, words", [
    ("short raw", "bytes"), ("typed count", "needs"), ("unknown datatype", "datatypes are"),
    ("negative dim", ">= 0"), ("int8 out of range", "range of INT8"), ("raw count", "entries"),
    ("bytes overrun", "runs past"), ("attest int", "string"), ("attest word", "none, async or sync"),
])
def test_oip_bad_requests_name_the_problem(case, words):
    message = oip_pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    if case == "short raw":
        message.raw_input_contents.append(b"\0" * 10)
    elif case == "typed count":
        tensor.contents.fp32_contents.extend([1.0, 2.0])
    elif case == "unknown datatype":
        tensor.datatype = "FLOAT"
    elif case == "negative dim":
        tensor.shape[:] = [-1, 4]
    elif case == "int8 out of range":
        tensor.datatype, tensor.shape[:] = "INT8", [1]
        tensor.contents.int_contents.append(300)
    elif case == "raw count":
        message.raw_input_contents.extend([b"", b""])
    elif case == "bytes overrun":
        tensor.datatype, tensor.shape[:] = "BYTES", [1]
        message.raw_input_contents.append(struct.pack("<I", 99) + b"abc")
    elif case == "attest int":
        tensor.contents.fp32_contents.extend([0.0] * 4)
        message.parameters["attest"].int64_param = 2
    elif case == "attest word":
        tensor.contents.fp32_contents.extend([0.0] * 4)
        message.parameters["attest"].string_param = "maybe"
    with pytest.raises(errors.InvalidArgument, match=words):
        oip.decode_request(message)


def test_oip_sizes_are_bounded_before_allocating():
    message = oip_pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[1 << 40, 1 << 30])  # would be 2^70 floats
    message.raw_input_contents.append(b"")
    with pytest.raises(errors.PayloadTooLarge, match="elements") as raised:
        oip.decode_request(message)
    assert errors.http_status(raised.value) == 413
    with pytest.raises(errors.PayloadTooLarge, match="max_request_bytes"):
        oip.decode_request(message, Limits(max_bytes=10))


def test_oip_response_parameters_and_proof_tensor_round_trip():
    proof = b'{"proof": [1, 2]}'
    bytes_tensor = np.empty(1, dtype=object)
    bytes_tensor[:] = [proof]
    response = InferResponse(model="m", id="r", outputs=(Tensor("scores", "FP32", sample("FP32")),
                                                         Tensor("zk_proof", "BYTES", bytes_tensor)),
                             parameters={"model_id": "0xab", "proven_outputs_match": True, "rows": 2, "t": 0.5})
    for raw in (True, False):
        decoded = oip.decode_response(oip.encode_response(InferResponse(**{**response.__dict__, "raw_output": raw})))
        assert decoded.outputs == response.outputs and dict(decoded.parameters) == dict(response.parameters)
        assert oip.proof_of(decoded) == proof


# --- zkserve.v1 -------------------------------------------------------------------------------
@pytest.mark.parametrize("datatype", list(NUMPY_DTYPES))
def test_native_round_trip_every_datatype(datatype):
    request = InferRequest(model="m", inputs=(Tensor("x", datatype, sample(datatype)),), attest=AttestMode.ASYNC)
    message = pb.PredictRequest.FromString(native.encode_predict(request).SerializeToString())
    assert native.decode_predict(message) == request


def test_native_fp32_values_stay_compatible_with_old_clients():
    message = pb.PredictRequest(model="m", inputs=[pb.Tensor(name="x", shape=[1, 2], values=[1.5, -2.0])])
    (tensor,) = native.decode_predict(message).inputs
    assert tensor.datatype == "FP32" and tensor.data.tolist() == [[1.5, -2.0]]
    assert native.decode_predict(message).attest is None  # unspecified: the server's default
    with pytest.raises(errors.InvalidArgument, match="raw_contents"):
        native.decode_predict(pb.PredictRequest(model="m", inputs=[
            pb.Tensor(name="x", shape=[1], values=[1.0], datatype="INT64")]))


def test_proof_record_round_trips_through_store_and_wire():
    record = ProofRecord(proof_id="p1", model="m", model_id="0x1", status=ProofStatus.DONE, rows=1, created_at=1.0,
                         finished_at=2.0, proof_hash="0xfe", proven_outputs_match=True,
                         proven_outputs={"scores": ((1, 2), (0.25, 0.75))}, proof=b"{}")
    assert ProofRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record.evolve(proof=b"")
    assert native.decode_record(native.encode_record(record)) == record
    assert proof_parameters(record, "0x1", insecure_srs=True) == {
        "model_id": "0x1", "insecure_srs": True, "proof_id": "p1", "proof_status": "done", "proof_hash": "0xfe",
        "proven_outputs_match": True}
    failed = record.evolve(status=ProofStatus.FAILED, error="outputs disagree")
    assert proof_parameters(failed, "0x1", False)["proof_error"] == "outputs disagree"
    assert ProofStatus.FAILED.finished and not ProofStatus.PROVING.finished


# --- KServe v2 REST ---------------------------------------------------------------------------
@pytest.mark.parametrize("datatype", list(NUMPY_DTYPES))
def test_rest_round_trip_every_datatype(datatype):
    request = request_with(Tensor("x", datatype, sample(datatype)), outputs=("scores",))
    body = json.dumps(rest.encode_request(request)).encode()
    decoded = rest.decode_request(body, "m", "1")
    expected = request if datatype != "FP16" else request  # FP16 survives: its samples are exact in half precision
    assert decoded == expected


def test_rest_kserve_example_body_with_nested_data():
    body = json.dumps({"id": "42", "parameters": {"attest": "none"}, "inputs": [
        {"name": "input-0", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2.5], [3, 4]]}]}).encode()
    request = rest.decode_request(body, "m")
    assert request.id == "42" and request.attest is AttestMode.NONE
    assert request.inputs[0].data.tolist() == [[1.0, 2.5], [3.0, 4.0]]


def test_rest_response_is_kserve_v2_json_with_the_proof_as_text():
    proof = np.empty(1, dtype=object)
    proof[:] = [b'{"proof_hash": "0x1"}']
    response = InferResponse(model="m", id="7", outputs=(Tensor("scores", "FP32", np.array([[0.5, 0.25]], np.float32)),
                                                         Tensor("zk_proof", "BYTES", proof)),
                             parameters={"proof_status": "done"})
    document = json.loads(json.dumps(rest.encode_response(response)))
    assert document == {"model_name": "m", "model_version": "1", "id": "7", "parameters": {"proof_status": "done"},
                        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.25]},
                                    {"name": "zk_proof", "datatype": "BYTES", "shape": [1],
                                     "data": ['{"proof_hash": "0x1"}']}]}
    assert rest.decode_response(document).outputs == response.outputs


@pytest.mark.parametrize("body, words", [
    (b"{not json", "not JSON"), (b"[]", "JSON object"), (b"{}", "inputs"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}', "needs 2"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1.5]}]}', "integers"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}', "numbers"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', 'no "data"'),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": {"attest": 1}}',
     "string"),
    (b'{"inputs": [{"name": "x", "shape": ["1"], "datatype": "FP32", "data": [1]}]}', "integers"),
])
def test_rest_bad_bodies_name_the_problem(body, words):
    with pytest.raises(errors.InvalidArgument, match=words) as raised:
        rest.decode_request(body, "m")
    assert errors.http_status(raised.value) == 400
    assert rest.error_body(raised.value, raised.value.message) == (400, {"error": raised.value.message})


def test_rest_bounds_before_allocating():
    body = json.dumps({"inputs": [{"name": "x", "shape": [1 << 40], "datatype": "FP32", "data": [1]}]}).encode()
    with pytest.raises(errors.PayloadTooLarge):
        rest.decode_request(body, "m")
    with pytest.raises(errors.PayloadTooLarge) as raised:
        rest.decode_request(b" " * 100, "m", limits=Limits(max_bytes=10))
    assert errors.http_status(raised.value) == 413
    flood = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [0] * 10_000}]}).encode()
    with pytest.raises(errors.InvalidArgument, match="more than the 2"):
        rest.decode_request(flood, "m")


# --- KServe v2 REST binary tensor extension ---------------------------------------------------
@pytest.mark.parametrize("datatype", list(NUMPY_DTYPES))
def test_rest_binary_inputs_round_trip_every_datatype(datatype):
    request = request_with(Tensor("x", datatype, sample(datatype)), Tensor("y", "FP32", sample("FP32", (2, 1))))
    body, json_length = rest.encode_binary_request(request)
    head = json.loads(body[:json_length])
    assert all("data" not in item for item in head["inputs"])
    assert head["inputs"][1]["parameters"] == {"binary_data_size": 8}  # 2 x FP32, little-endian
    assert body[-8:] == sample("FP32", (2, 1)).astype("<f4").tobytes()
    decoded, binary = rest.decode_infer(body, "m", "1", json_length=rest.header_length(str(json_length), len(body)))
    assert decoded == request and binary == frozenset()


def test_rest_binary_bytes_input_is_length_prefixed_and_mixes_with_json():
    head = json.dumps({"inputs": [
        {"name": "t", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 4 + 2 + 4 + 0}},
        {"name": "n", "shape": [1, 2], "datatype": "INT32", "data": [[1, -2]]}]}).encode()
    body = head + struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0)
    request = rest.decode_request(body, "m", json_length=len(head))
    assert request.inputs[0].data.tolist() == [b"hi", b""] and request.inputs[1].data.tolist() == [[1, -2]]


def test_rest_binary_outputs_when_asked_for():
    proof = np.empty(1, dtype=object)
    proof[:] = [b'{"proof_hash": "0x1"}']
    scores = np.array([[0.5, 0.25]], np.float32)
    response = InferResponse(model="m", id="7", outputs=(Tensor("scores", "FP32", scores),
                                                         Tensor("zk_proof", "BYTES", proof)),
                             parameters={"proof_status": "done"})
    body, json_length = rest.encode_infer(response, frozenset({"zk_proof"}))
    head = json.loads(body[:json_length])
    assert head["outputs"][0]["data"] == [0.5, 0.25] and "data" not in head["outputs"][1]
    assert head["outputs"][1]["parameters"] == {"binary_data_size": 4 + len(proof[0])}
    assert body[json_length:] == struct.pack("<I", len(proof[0])) + proof[0]
    assert rest.decode_response(body, json_length).outputs == response.outputs
    body, json_length = rest.encode_infer(response, frozenset({rest.ALL_OUTPUTS}))
    assert body[json_length:json_length + 8] == scores.tobytes()
    assert rest.decode_response(body, json_length) == response
    assert rest.encode_infer(response) == (json.dumps(rest.encode_response(response), separators=(",", ":")).encode(),
                                           None)  # nothing asked: plain JSON


def test_rest_binary_output_wishes_are_read_from_the_request():
    tensor = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}
    per_output = json.dumps({"inputs": [tensor], "outputs": [{"name": "scores", "parameters": {"binary_data": True}},
                                                             {"name": "zk_proof"}]}).encode()
    assert rest.decode_infer(per_output, "m")[1] == frozenset({"scores"})
    every = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    assert rest.decode_infer(every, "m")[1] == frozenset({rest.ALL_OUTPUTS})
    with pytest.raises(errors.InvalidArgument, match="true or false"):
        rest.decode_infer(json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": "yes"}}).encode(), "m")


def _binary_body(size, tail: bytes, datatype="FP32", shape=(2,), data=None):
    item = {"name": "x", "shape": list(shape), "datatype": datatype, "parameters": {"binary_data_size": size}}
    if data is not None:
        item["data"] = data
    head = json.dumps({"inputs": [item]}).encode()
    return head + tail, len(head)


@pytest.mark.parametrize("body, words", [
    (_binary_body(8, b"\0" * 4), "runs past"),
    (_binary_body(4, b"\0" * 4), "needs 8"),
    (_binary_body(8, b"\0" * 12), "binary part holds 12 bytes"),
    (_binary_body(-1, b""), "byte count"),
    (_binary_body(True, b"\0"), "byte count"),
    (_binary_body(8, b"\0" * 8, data=[1, 2]), "both"),
    (_binary_body(6, struct.pack("<I", 9) + b"ab", datatype="BYTES", shape=(1,)), "runs past"),
])
def test_rest_bad_binary_bodies_name_the_problem(body, words):
    with pytest.raises(errors.InvalidArgument, match=words) as raised:
        rest.decode_request(body[0], "m", json_length=body[1])
    assert errors.http_status(raised.value) == 400


def test_rest_binary_header_is_checked():
    body, _ = _binary_body(8, b"\0" * 8)
    with pytest.raises(errors.InvalidArgument, match="needs the Inference-Header-Content-Length header"):
        rest.decode_request(body, "m")  # binary data without the header: the tail is not JSON
    head = body[:-8]
    with pytest.raises(errors.InvalidArgument, match="has no Inference-Header-Content-Length"):
        rest.decode_request(head, "m")  # binary_data_size in a plain JSON body
    for bad in ("-1", "abc", str(len(body) + 1)):
        with pytest.raises(errors.InvalidArgument, match="Inference-Header-Content-Length"):
            rest.header_length(bad, len(body))
    assert rest.header_length(None, len(body)) is None
    with pytest.raises(errors.PayloadTooLarge):  # the whole body is bounded before the split
        rest.decode_request(body, "m", limits=Limits(max_bytes=len(body) - 1), json_length=len(body) - 8)


# --- validation against the model -------------------------------------------------------------
SPEC = ModelSpec(name="m", model_id="0x1", inputs=(TensorSpec("x", (4,), "float32"),),
                 outputs=(TensorSpec("y", (2,), "float32"),), circuit_batch_size=1, tolerance=0.1, visibility={},
                 insecure_srs=True,
                 input_domain=InputDomain("m", {"x": InputRange(np.full(4, -1.0), np.full(4, 1.0), "explicit", 0.0)}))


@pytest.mark.parametrize(
    "tensor, words",
    [
        (Tensor("x", "FP32", np.zeros((1, 3), np.float32)), "shape"),
        (Tensor("x", "FP64", np.zeros((1, 4), np.float64)), "datatype FP64"),
        (Tensor("z", "FP32", np.zeros((1, 4), np.float32)), "no input named"),
        (Tensor("x", "FP32", np.full((1, 4), np.nan, np.float32)), "NaN"),
        (Tensor("x", "FP32", np.zeros((0, 4), np.float32)), "batch>=1"),
    ],
)
def test_inputs_checked_against_the_model(tensor, words):
    with pytest.raises(errors.InvalidArgument, match=words):
        check_inputs(request_with(tensor), SPEC)


def test_good_inputs_and_outputs_pass():
    arrays = check_inputs(request_with(Tensor("x", "FP32", np.ones((3, 4), np.float32))), SPEC)
    assert arrays["x"].shape == (3, 4) and arrays["x"].dtype == np.float32
    check_outputs(request_with(outputs=("y", "zk_proof")), SPEC, extra=("zk_proof",))
    with pytest.raises(errors.InvalidArgument, match="no output named 'q'"):
        check_outputs(request_with(outputs=("q",)), SPEC)


# --- the one error table ----------------------------------------------------------------------
def test_error_table_codes_and_names():
    assert errors.grpc_code(errors.OutOfRange("x")) == grpc.StatusCode.OUT_OF_RANGE
    assert errors.http_status(errors.NotFound("x")) == 404
    assert errors.http_status(errors.ResourceExhausted("x")) == 429
    assert errors.code_name(errors.InvalidArgument("x")) == "INVALID_ARGUMENT"
    assert errors.code_name(RuntimeError("bug")) == "INTERNAL" and errors.code_name(None) == "OK"


# --- properties -------------------------------------------------------------------------------
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


@st.composite
def tensors(draw):
    datatype = draw(st.sampled_from(list(NUMPY_DTYPES)))
    shape = draw(shapes)
    if datatype == "BYTES":
        items = draw(st.lists(st.binary(max_size=12), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        data = np.empty(len(items), dtype=object)
        data[:] = items
        return Tensor("t", datatype, data.reshape(shape))
    dtype = NUMPY_DTYPES[datatype]
    elements = hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False) if dtype.kind == "f" else None
    return Tensor("t", datatype, draw(hnp.arrays(dtype, shape, elements=elements)))


@settings(max_examples=150, deadline=None)
@given(tensors(), st.booleans(), st.sampled_from([None, *AttestMode]))
def test_property_oip_round_trip(tensor, raw, attest):
    if tensor.datatype == "FP16" and not raw:
        raw = True
    request = InferRequest(model="m", inputs=(tensor,), attest=attest, raw_output=raw)
    assert oip.decode_request(oip.encode_request(request, raw=raw)) == request


@settings(max_examples=150, deadline=None)
@given(tensors(), st.sampled_from([None, *AttestMode]))
def test_property_native_round_trip(tensor, attest):
    request = InferRequest(model="m", inputs=(tensor,), attest=attest)
    assert native.decode_predict(native.encode_predict(request)) == request


@settings(max_examples=150, deadline=None)
@given(tensors())
def test_property_rest_round_trip_of_text_and_numbers(tensor):
    if tensor.datatype == "BYTES":  # JSON strings are text: draw UTF-8 bytes
        text = np.empty(tensor.data.size, dtype=object)
        text[:] = [item.hex().encode() for item in tensor.data.ravel()]
        tensor = Tensor("t", "BYTES", text.reshape(tensor.shape))
    request = InferRequest(model="m", inputs=(tensor,), version="1")
    assert rest.decode_request(json.dumps(rest.encode_request(request)).encode(), "m", "1") == request


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_property_garbage_never_crashes_the_decoders(blob):
    """Arbitrary bytes are either a request or a ServeError, never another exception."""
    for decode in (
        lambda: oip.decode_request(oip_pb.ModelInferRequest.FromString(blob)),
        lambda: native.decode_predict(pb.PredictRequest.FromString(blob)),
        lambda: rest.decode_request(blob, "m"),
    ):
        try:
            decode()
        except errors.ServeError:
            pass
        except Exception as error:  # protobuf's own parse error is the transport's to report
            assert type(error).__name__ == "DecodeError", repr(error)
