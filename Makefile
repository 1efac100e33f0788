# Everything a fresh machine needs: `make train` runs the default job, `make test` the tests.
# GPU users: make train TORCH="torch==2.13.0" PIP_TORCH_FLAGS="--index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PIP_TORCH_FLAGS ?=
ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# NO_MKDOCS_2_WARNING: no banner from mkdocs-material about its successor
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

.PHONY: install train test test-fast docs bench evaluate pose clean gpu-check gpu-wheels

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, so that nothing pulls a multi-GB CUDA build through a loose requirement
	$(BIN)/python -m pip install --quiet $(PIP_TORCH_FLAGS) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

evaluate: $(STAMP)
	$(BIN)/python evaluate.py $(ARGS)

# the linters, the types, the strict docs build, then the in-process tests spread over the cores and the
# multi-process ones (`slow`: DDP, kill-and-resume, sweeps) one at a time, as they were written to run;
# pytest's exit status 5 is "ARGS selected none of them"
test: $(STAMP)
	$(BIN)/ruff check --quiet .
	$(BIN)/ruff format --check --quiet .
	$(BIN)/mypy
	$(MKDOCS) build --strict --site-dir site
	$(BIN)/python -m pytest -q -m "not slow" -n auto $(ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -q -m slow $(ARGS) || [ $$? -eq 5 ]

# the edit loop: lint, types and the tests not marked slow (no multi-process runs, no docs build), spread
# over the cores by pytest-xdist
test-fast: $(STAMP)
	$(BIN)/ruff check --quiet .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not slow" -n auto --durations=10 $(ARGS)

# The documentation (docs/, mkdocs.yml): docs/options.md regenerated from the schema, then the site in
# site/, offline and strict (a broken link or a missing page fails; never --quiet, which hides the warnings
# that --strict counts). `make test` builds it the same way.
docs: $(STAMP)
	$(BIN)/python -m reid.tools.options_doc
	$(MKDOCS) build --strict --site-dir site

# the benchmarks (reid/tools/bench/, docs/benchmarks.md): network throughput by default, or
# make bench ARGS="loader|ranking|search|truth [key=value ...]"
bench: $(STAMP)
	$(BIN)/reid-bench $(ARGS)

# Optional pose estimator for `reid-extract-pose` (MediaPipe Pose, model inside the wheel).
# --no-deps because mediapipe 0.10.14 declares opencv-contrib-python (clashes with albumentations'
# opencv-python-headless), jax/jaxlib/sounddevice (unused by the pose solution) and protobuf<5 (wandb
# needs >=5); protobuf 6.33 satisfies wandb and runs it (reid.pose.extract shims one removed call).
pose: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps "mediapipe==0.10.14" "absl-py==2.5.1" "flatbuffers==25.12.19" "protobuf==6.33.6"

# GPU machines without a package registry: `make gpu-wheels` where pip works, carry .whl/ with the
# tree, then `make gpu-check` on the GPU machine (installs nothing from the network; figures in
# outputs/gpu_check/gpu_check.json). Without CUDA it stops with one error line.
gpu-wheels:
	bash scripts/gpu_wheels.sh

gpu-check:
	bash scripts/gpu_check.sh $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun site .pytest_cache .mypy_cache .ruff_cache
