"""ONNX Runtime sessions: CUDA when this replica was given a usable GPU, CPU otherwise."""

from __future__ import annotations

import logging

import onnxruntime as ort

logger = logging.getLogger("ray.serve")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# TF32 matmuls (ORT's CUDA default on Ampere and later) differed from the CPU by 7e-4 on the demo
# CNN on an H200, against 2e-7 with it off, for 5-19% of GPU time: the circuit's tolerance is
# checked against CPU float32, so served outputs keep full float32 precision (bench/bench_gpu.py).
CUDA_OPTIONS = {"use_tf32": "0"}


def _options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no provider-fallback warnings per session
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def create_session(onnx_path: str, use_gpu: bool, threads: int | None = None) -> ort.InferenceSession:
    """A session whose ``get_providers()`` says what really runs the model.

    ``get_available_providers()`` lists CUDA even when the CUDA/cuDNN libraries are missing,
    so CUDA is only tried when a GPU was assigned, and kept only if the session took it.
    """
    if use_gpu and CUDA in ort.get_available_providers():
        # the failed CUDA load is logged by ORT's default logger (not the session's), in red, before
        # any session option applies; our one warning below says it instead
        ort.set_default_logger_severity(3)
        try:
            ort.preload_dlls()  # CUDA 13 / cuDNN 9 from the nvidia pip wheels, when installed
        except Exception:  # noqa: BLE001 - the session below reports what it got
            pass
        try:
            session = ort.InferenceSession(onnx_path, _options(threads), providers=[(CUDA, CUDA_OPTIONS), CPU])
            if CUDA in session.get_providers():
                return session
            logger.warning("a GPU was assigned but ONNX Runtime could not use CUDA; running %s on CPU", onnx_path)
        except Exception as error:  # noqa: BLE001 - fall back to CPU once, with one line
            logger.warning("CUDA session failed (%s); running %s on CPU", error, onnx_path)
    return ort.InferenceSession(onnx_path, _options(threads), providers=[CPU])
