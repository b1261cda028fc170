# Two entry points (README): `make demo` and `make test`. Both set up .venv first.
# TORCH_SPEC defaults to the CPU build that lies on these machines' disk; on a GPU box use e.g.
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup setup-gpu demo test test-slow test-gpu gpu-check lint bench clean

setup: $(VENV)/.installed

# The MJWarp backend's extra (mujoco-warp, warp-lang; about 400 MB): `make test` installs it so CI runs the `warp`
# tests on Warp's CPU device (tests/test_warp.py: ~80 s with a cold kernel cache, ~30 s warm, on 2 cores). Warp keeps
# compiled kernels in ~/.cache/warp (or $$WARP_CACHE_PATH).
setup-gpu: $(VENV)/.installed-gpu

$(VENV)/.installed-gpu: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,gpu]"
	touch $@

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/metarl demo

test: setup-gpu
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# on a machine with CUDA (and a CUDA torch: see TORCH_SPEC above): the `gpu`-marked tests, which `make test` skips
test-gpu: setup-gpu
	$(BIN)/python -m pytest -q -m gpu

# the same tests plus the GPU benchmarks (sampler at 1k/4k/16k worlds, a paper-preset MAML iteration and 16x its
# batch), each with its own time limit; logs and JSON lines in gpu-check/ (docs/gpu.md)
gpu-check: setup-gpu
	PYTHON=$(BIN)/python bash scripts/gpu_check.sh

lint: setup
	$(BIN)/ruff check metarl envs tests scripts

bench: setup
	$(BIN)/python scripts/bench_sampler.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
