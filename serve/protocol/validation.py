"""Checks a neutral request against the model it names; the same rules for every protocol."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from serve.errors import InvalidArgument

if TYPE_CHECKING:
    from serve.app.models import ModelSpec
    from serve.protocol.types import InferRequest


def check_inputs(request: InferRequest, spec: ModelSpec) -> dict[str, np.ndarray]:
    """Inputs by name, as the model's dtypes; InvalidArgument naming the first problem."""
    expected = spec.inputs_by_name
    if len(request.inputs) != len(expected):
        raise InvalidArgument(f"model {spec.name} takes {len(expected)} input(s) ({', '.join(expected)}), "
                              f"got {len(request.inputs)}")
    arrays: dict[str, np.ndarray] = {}
    rows = None
    for tensor in request.inputs:
        target = expected.get(tensor.name)
        if target is None:
            raise InvalidArgument(f"model {spec.name} has no input named {tensor.name!r}; "
                                  f"inputs: {', '.join(expected)}")
        if tensor.name in arrays:
            raise InvalidArgument(f"input {tensor.name!r} is given twice")
        if tensor.datatype != target.datatype:
            raise InvalidArgument(f"input {tensor.name!r} has datatype {tensor.datatype or '(empty)'}, "
                                  f"model {spec.name} wants {target.datatype}")
        shape = tensor.shape
        if len(shape) != 1 + len(target.row_shape) or shape[1:] != target.row_shape or shape[0] < 1:
            raise InvalidArgument(f"input {tensor.name!r} has shape {list(shape)}, model {spec.name} wants "
                                  f"[batch>=1, {', '.join(map(str, target.row_shape))}]")
        if rows is not None and shape[0] != rows:
            raise InvalidArgument(f"inputs disagree on the batch size ({rows} vs {shape[0]} rows)")
        rows = shape[0]
        array = tensor.data
        # a finite sum means every element is finite (NaN and inf propagate); only a sum that
        # is not (an overflow, or a real NaN/inf) needs the element-wise check
        if array.dtype.kind == "f" and not math.isfinite(array.sum()) and not np.isfinite(array).all():
            raise InvalidArgument(f"input {tensor.name!r} holds NaN or infinite values")
        arrays[tensor.name] = np.asarray(array, dtype=target.numpy_dtype)
    return arrays


def check_outputs(request: InferRequest, spec: ModelSpec, extra: tuple[str, ...] = ()) -> None:
    if not request.outputs:  # all of them: nothing to check
        return
    known = {t.name for t in spec.outputs} | set(extra)
    if unknown := [name for name in request.outputs if name not in known]:
        raise InvalidArgument(f"model {spec.name} has no output named {', '.join(map(repr, unknown))}; "
                              f"outputs: {', '.join(sorted(known))}")
