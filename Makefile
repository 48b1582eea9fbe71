# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Both create (or reuse) .venv: torch/torchvision first (wheels on local disk), then the project
# with its dev extras, pinned by constraints.txt.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vlpbench-installed
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: run run-full test test-fast test-integration test-acceptance test-heavy install lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# The default suite: every method at the `cpu` preset with its stages, every benchmark and the report
# (docs/calibration.md; measured wall time in README.md).
run: $(STAMP)
	$(VENV)/bin/vlpbench run

# The calibrated tiny suite: larger models, the full tiny budgets (about two hours on 2 cores).
run-full: $(STAMP)
	$(VENV)/bin/vlpbench run --suite benchmarks/suites/tiny.yaml

# The default test run (under 15 minutes on 2 cores); `integration` and `acceptance` tests run in CI after it.
TEST_MARKS := not heavy and not integration and not acceptance
test: $(STAMP)
	$(PY) -m pytest -m "$(TEST_MARKS)" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and $(TEST_MARKS)" $(PYTEST_ARGS)

# Several processes (gloo DDP), submitit's local executor, the local SLURM cluster, an MLflow server and headless
# Chromium (~6 min; the SLURM tests skip without a cluster: sudo slurm/start_cluster.sh --install starts one; the
# browser test skips without Chromium: apt-get install chromium).
test-integration: $(STAMP)
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

# Every method's default (cpu) job against its untrained copy, one test per method (CI runs it).
test-acceptance: $(STAMP)
	$(PY) -m pytest -m acceptance $(PYTEST_ARGS)

# Acceptance runs of the tiny suite's methods with the unimodal stage, at their full budgets (~60-85 min; by hand).
test-heavy: $(STAMP)
	$(PY) -m pytest -m heavy $(PYTEST_ARGS)

# Re-pin constraints.txt to what is installed now (after changing pyproject.toml).
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable --disable-pip-version-check | sed 's/+cu[0-9]*$$//' > constraints.txt

clean:
	rm -rf outputs .pytest_cache
