"""Client side of the Open Inference Protocol as zkserve speaks it: requests with an `attest`
parameter, and responses whose `zk_proof` BYTES tensor carries the proof. Built on the same
adapters as the server (``serve.protocol``), so every datatype works both ways."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from inference import grpc_service_pb2 as oip_pb

from serve.protocol import oip
from serve.protocol.types import PROOF_TENSOR, AttestMode, InferRequest, Tensor

__all__ = ["PROOF_TENSOR", "Prediction", "infer_request", "output_array", "parameters", "proof_bytes"]


def infer_request(model: str, inputs: dict[str, np.ndarray], attest: str | None = None,
                  raw: bool = True) -> oip_pb.ModelInferRequest:
    """Tensors of the arrays' own datatypes, sent as raw contents (as stock Triton clients do)."""
    tensors = tuple(Tensor.of(name, np.ascontiguousarray(a)) for name, a in inputs.items())
    request = InferRequest(model=model, inputs=tensors,
                           attest=AttestMode.parse(attest) if attest is not None else None)
    return oip.encode_request(request, raw=raw)


def output_array(response: oip_pb.ModelInferResponse, name: str) -> np.ndarray:
    for tensor in oip.decode_response(response).outputs:
        if tensor.name == name:
            return tensor.data
    raise KeyError(name)


def proof_bytes(response: oip_pb.ModelInferResponse) -> bytes:
    """The single element of the BYTES tensor `zk_proof`."""
    proof = oip.proof_of(oip.decode_response(response))
    if proof is None:
        raise KeyError(PROOF_TENSOR)
    return proof


def parameters(response: oip_pb.ModelInferResponse) -> dict:
    return oip.parameters_of(response.parameters)


@dataclass
class Prediction:
    outputs: dict[str, np.ndarray]
    parameters: dict
    proof: bytes | None  # the zkserve proof JSON, when attest=sync

    @classmethod
    def from_response(cls, response: oip_pb.ModelInferResponse) -> Prediction:
        decoded = oip.decode_response(response)
        outputs = {t.name: t.data for t in decoded.outputs if t.name != PROOF_TENSOR}
        return cls(outputs, dict(decoded.parameters), oip.proof_of(decoded))
