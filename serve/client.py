"""Client side of the Open Inference Protocol as zkserve speaks it: requests with an
`attest` parameter, and responses whose `zk_proof` BYTES tensor carries the proof."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from inference import grpc_service_pb2 as oip

PROOF_TENSOR = "zk_proof"


def infer_request(model: str, inputs: dict[str, np.ndarray], attest: str | None = None) -> oip.ModelInferRequest:
    """FP32 tensors sent as raw contents, as stock Triton clients do."""
    request = oip.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        array = np.ascontiguousarray(array, dtype=np.float32)
        request.inputs.add(name=name, datatype="FP32", shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    if attest is not None:
        request.parameters["attest"].string_param = attest
    return request


def output_array(response: oip.ModelInferResponse, name: str) -> np.ndarray:
    for index, tensor in enumerate(response.outputs):
        if tensor.name == name:
            if response.raw_output_contents:
                return np.frombuffer(response.raw_output_contents[index], dtype=np.float32).reshape(tensor.shape)
            return np.asarray(tensor.contents.fp32_contents, dtype=np.float32).reshape(tensor.shape)
    raise KeyError(name)


def proof_bytes(response: oip.ModelInferResponse) -> bytes:
    """The single element of the BYTES tensor `zk_proof` (raw form: 4-byte length prefix)."""
    for index, tensor in enumerate(response.outputs):
        if tensor.name == PROOF_TENSOR:
            if response.raw_output_contents:
                raw = response.raw_output_contents[index]
                return raw[4:4 + int.from_bytes(raw[:4], "little")]
            return tensor.contents.bytes_contents[0]
    raise KeyError(PROOF_TENSOR)


def parameters(response: oip.ModelInferResponse) -> dict:
    return {key: getattr(value, value.WhichOneof("parameter_choice")) for key, value in response.parameters.items()}


@dataclass
class Prediction:
    outputs: dict[str, np.ndarray]
    parameters: dict
    proof: bytes | None  # the zkserve proof JSON, when attest=sync

    @classmethod
    def from_response(cls, response: oip.ModelInferResponse) -> Prediction:
        names = [t.name for t in response.outputs if t.name != PROOF_TENSOR]
        proof = proof_bytes(response) if any(t.name == PROOF_TENSOR for t in response.outputs) else None
        return cls({name: output_array(response, name) for name in names}, parameters(response), proof)
