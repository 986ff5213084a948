# make setup  - create .venv and install the pinned dependencies (idempotent; seconds when done)
# make demo   - the main job on the embedded default: tiny model, synthetic world, local Ray
# make test   - the test suite (CPU only; real Ray, real DeepSpeed)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo

# Local clusters and tests: no auth token, no usage stats, wandb offline unless the user says otherwise,
# DeepSpeed's JIT ops cached per venv.
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export WANDB_MODE ?= offline
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/$(VENV)/torch_extensions

.PHONY: setup demo test clean-venv

setup: $(STAMP)

# Install order matters (environment.md): torch first from its CPU wheel, then everything else pinned
# against it, then DeepSpeed (a source distribution that must see torch), then the project itself.
$(STAMP): constraints.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt numpy scipy pandas pyarrow shapely pillow \
		transformers tokenizers safetensors accelerate peft "ray[default]" \
		omegaconf tqdm matplotlib wandb pytest pytest-timeout setuptools wheel
	DS_BUILD_OPS=0 $(PIP) install --no-build-isolation -c constraints.txt deepspeed
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $(STAMP)

demo: setup
	$(PY) -m rl.demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest tests -q --timeout=900; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; exit $$rc

clean-venv:
	rm -rf $(VENV)
