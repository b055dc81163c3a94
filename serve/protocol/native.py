"""zkserve.v1 (``Attestation``) messages <-> the neutral types."""

from __future__ import annotations

import numpy as np
from zkserve.v1 import attestation_pb2 as pb

from serve.errors import InvalidArgument
from serve.protocol.oip import decode_bytes_elements, encode_bytes_elements
from serve.protocol.types import (
    AttestMode,
    InferRequest,
    Limits,
    ProofRecord,
    ProofStatus,
    Tensor,
    checked_shape,
    numpy_dtype,
)

ATTEST_OF_ENUM = {pb.ATTEST_MODE_NONE: AttestMode.NONE, pb.ATTEST_MODE_ASYNC: AttestMode.ASYNC,
                  pb.ATTEST_MODE_SYNC: AttestMode.SYNC}
ENUM_OF_ATTEST = {mode: enum for enum, mode in ATTEST_OF_ENUM.items()}
STATUS_ENUM = {ProofStatus.QUEUED: pb.PROOF_STATUS_QUEUED, ProofStatus.PROVING: pb.PROOF_STATUS_PROVING,
               ProofStatus.DONE: pb.PROOF_STATUS_DONE, ProofStatus.FAILED: pb.PROOF_STATUS_FAILED}
STATUS_OF_ENUM = {enum: status for status, enum in STATUS_ENUM.items()}


def decode_tensor(message: pb.Tensor, limits: Limits, budget: list[int]) -> Tensor:
    datatype = message.datatype or "FP32"
    dtype = numpy_dtype(datatype, message.name)
    shape = checked_shape(message.name, message.shape, limits, budget)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if message.raw_contents or (count and not message.values and datatype != "FP32"):
        if message.values:
            raise InvalidArgument(f"input {message.name!r} sets both values and raw_contents; send one")
        if datatype == "BYTES":
            items = decode_bytes_elements(message.name, message.raw_contents, count)
            return Tensor(message.name, datatype, items.reshape(shape))
        want = count * dtype.itemsize
        if len(message.raw_contents) != want:
            raise InvalidArgument(f"input {message.name!r}: raw_contents hold {len(message.raw_contents)} bytes, "
                                  f"shape {list(shape)} of {datatype} needs {want}")
        return Tensor(message.name, datatype, np.frombuffer(message.raw_contents, dtype=dtype).reshape(shape))
    if datatype != "FP32":
        raise InvalidArgument(f"input {message.name!r}: values carry FP32 only; send {datatype} as raw_contents")
    if len(message.values) != count:
        raise InvalidArgument(f"input {message.name!r}: {len(message.values)} values, "
                              f"shape {list(shape)} needs {count}")
    return Tensor(message.name, "FP32", np.asarray(message.values, dtype=np.float32).reshape(shape))


def encode_tensor(tensor: Tensor) -> pb.Tensor:
    message = pb.Tensor(name=tensor.name, shape=list(tensor.shape))
    if tensor.datatype == "FP32":
        message.values.extend(np.asarray(tensor.data, dtype=np.float32).ravel().tolist())
        return message
    message.datatype = tensor.datatype
    if tensor.datatype == "BYTES":
        message.raw_contents = encode_bytes_elements(tensor.data.ravel().tolist())
    else:
        dtype = numpy_dtype(tensor.datatype, tensor.name)
        message.raw_contents = np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()
    return message


def decode_predict(message: pb.PredictRequest, limits: Limits = Limits(), size: int | None = None) -> InferRequest:
    limits.check_bytes(message.ByteSize() if size is None else size)
    if message.attest not in (pb.ATTEST_MODE_UNSPECIFIED, *ATTEST_OF_ENUM):
        raise InvalidArgument(f"attest {message.attest} is not an AttestMode; use NONE, ASYNC or SYNC")
    budget = [limits.max_elements]
    return InferRequest(model=message.model, inputs=tuple(decode_tensor(t, limits, budget) for t in message.inputs),
                        attest=ATTEST_OF_ENUM.get(message.attest))


def encode_predict(request: InferRequest) -> pb.PredictRequest:
    return pb.PredictRequest(model=request.model, inputs=[encode_tensor(t) for t in request.inputs],
                             attest=ENUM_OF_ATTEST.get(request.attest, pb.ATTEST_MODE_UNSPECIFIED))


def encode_record(record: ProofRecord) -> pb.ProofRecord:
    message = pb.ProofRecord(
        proof_id=record.proof_id, model=record.model, model_id=record.model_id, status=STATUS_ENUM[record.status],
        proof_hash=record.proof_hash, proven_outputs_match=record.proven_outputs_match, row_offset=record.row_offset,
        rows=record.rows, error=record.error, created_at=record.created_at, finished_at=record.finished_at,
        proof=record.proof,
    )
    for name, (shape, values) in record.proven_outputs.items():
        message.proven_outputs.add(name=name, shape=list(shape), values=list(values))
    return message


def decode_record(message: pb.ProofRecord) -> ProofRecord:
    return ProofRecord(
        proof_id=message.proof_id, model=message.model, model_id=message.model_id,
        status=STATUS_OF_ENUM[message.status], rows=message.rows, created_at=message.created_at,
        finished_at=message.finished_at, row_offset=message.row_offset, proof_hash=message.proof_hash,
        proven_outputs_match=message.proven_outputs_match, error=message.error, proof=message.proof,
        proven_outputs={t.name: (tuple(t.shape), tuple(t.values)) for t in message.proven_outputs},
    )
