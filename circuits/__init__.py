"""circuits: ONNX models -> EZKL circuit packages, and proving/verifying with them."""

from circuits.compile import CompileError, CompileOptions, compile_model
from circuits.domain import DomainViolation, InputDomain
from circuits.instances import (
    bind,
    decode_inputs,
    decode_outputs,
    input_hash,
    proven_fields,
    proven_input_hash,
    proven_rows,
)
from circuits.package import CircuitPackage, PackageError
from circuits.proof import Proof
from circuits.prover import InputError, Prover, verify_proof

__all__ = [
    "CircuitPackage", "CompileError", "CompileOptions", "DomainViolation", "InputDomain", "InputError", "PackageError",
    "Proof", "Prover", "bind", "compile_model", "decode_inputs", "decode_outputs", "input_hash", "proven_fields",
    "proven_input_hash", "proven_rows", "verify_proof",
]
