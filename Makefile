# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Both create (or reuse) .venv: torch/torchvision first (wheels on local disk), then the project
# with its dev extras, pinned by constraints.txt.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vlpbench-installed
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: run run-quick test test-fast test-integration test-heavy install lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/vlpbench run

# Every method and benchmark at about a tenth of the default budgets: the full report in ~11-13 minutes on 2 cores,
# accuracies near chance (benchmarks/suites/quick.yaml says why).
run-quick: $(STAMP)
	$(VENV)/bin/vlpbench run --suite benchmarks/suites/quick.yaml

# The default test run (under 15 minutes on 2 cores); `integration` and `heavy` tests run in CI after it.
test: $(STAMP)
	$(PY) -m pytest -m "not heavy and not integration" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not heavy and not integration" $(PYTEST_ARGS)

# Several processes (gloo DDP), submitit's local executor, the local SLURM cluster, an MLflow server and headless
# Chromium (~6 min; the SLURM tests skip without a cluster: sudo slurm/start_cluster.sh --install starts one; the
# browser test skips without Chromium: apt-get install chromium).
test-integration: $(STAMP)
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

# Acceptance runs at the full default budget of methods that need the unimodal stage (~47 min).
test-heavy: $(STAMP)
	$(PY) -m pytest -m heavy $(PYTEST_ARGS)

# Re-pin constraints.txt to what is installed now (after changing pyproject.toml).
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable --disable-pip-version-check | sed 's/+cu[0-9]*$$//' > constraints.txt

clean:
	rm -rf outputs .pytest_cache
