"""circuits: ONNX models -> EZKL circuit packages, and proving/verifying with them."""

from circuits.compile import CompileError, CompileOptions, compile_model
from circuits.instances import decode_inputs, decode_outputs, input_hash, proven_input_hash
from circuits.package import CircuitPackage, PackageError
from circuits.proof import Proof
from circuits.prover import InputError, Prover, verify_proof

__all__ = [
    "CircuitPackage", "CompileError", "CompileOptions", "InputError", "PackageError", "Proof", "Prover",
    "compile_model", "decode_inputs", "decode_outputs", "input_hash", "proven_input_hash", "verify_proof",
]
