"""The Dockerfile cannot be built here (no Docker engine): lint it and check its references."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def _instructions(keyword: str) -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.upper().startswith(keyword + " ")]


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(REPO / ".venv" / "bin" / "hadolint")
    done = subprocess.run([hadolint, "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_copied_path_exists():
    for args in _instructions("COPY"):
        for source in args.split()[:-1]:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"


def test_make_targets_it_runs_exist_in_the_makefile():
    targets = set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.M))
    for command in _instructions("RUN"):
        for target in re.findall(r"(?:^|&&|;)\s*make (\w+)", command):
            assert target in targets, f"Dockerfile runs `make {target}`, the Makefile has no such target"


def test_base_image_is_official_cuda_runtime_matching_onnxruntime_gpu():
    (base,) = _instructions("FROM")
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base.strip())
    assert match, f"base image {base} is not an official CUDA runtime image with cuDNN"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"onnxruntime-gpu==1.31.1"' in pyproject and match.group(1) == "13", \
        "onnxruntime-gpu 1.31 is built for CUDA 13: change the base image and the pin together"


def test_entrypoint_is_the_cli_script_pyproject_installs():
    assert 'zkserve = "serve.cli:app"' in (REPO / "pyproject.toml").read_text()
    assert _instructions("ENTRYPOINT") == ['["zkserve"]']
