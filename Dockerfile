# zkserve on a GPU host: ONNX Runtime's CUDA provider (onnxruntime-gpu 1.31 wants CUDA 13
# and cuDNN 9), Ray Serve, EZKL, and the pinned EVM toolchain (solc-js, anvil) from npm.
# Set-up is the Makefile's own `setup` target, the same one `make test` and `make demo` use.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHON=python3 \
    ZKSERVE_HOME=/var/lib/zkserve \
    PATH=/opt/zkserve/.venv/bin:$PATH

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc make nodejs npm ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/zkserve
COPY pyproject.toml package.json package-lock.json Makefile README.md ./
COPY proto ./proto
COPY circuits ./circuits
COPY contracts ./contracts
COPY serve ./serve
RUN make setup

# gRPC ingress (Open Inference Protocol + zkserve.v1), verifier service, local chain
EXPOSE 9000 9100 8545
VOLUME ["/var/lib/zkserve"]
ENTRYPOINT ["zkserve"]
CMD ["up"]
