# livetrack: `make run` serves the UI at http://127.0.0.1:8080, `make test` runs every suite.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install run test lint format bench gpu-check audit clean

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

run: $(INSTALLED)
	$(PY) -m app $(ARGS)

test: $(INSTALLED)
	$(PY) -m pytest --cov=app --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	for plugin in plugins/*/; do $(VENV)/bin/mypy --strict $$plugin || exit 1; done

format: $(INSTALLED)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(INSTALLED)
	$(PY) scripts/bench_sandbox.py
	$(PY) scripts/bench_tracking.py --quick
	$(PY) scripts/bench_stream.py --quick
	$(PY) scripts/bench_health.py

# On a CUDA host: the tests marked gpu, then the GPU benchmarks, one summary (bench-results/gpu-check-*/).
# Without CUDA it skips those with the reason and runs the CPU-side checks; see docs/operations.md.
gpu-check: $(INSTALLED)
	$(PY) scripts/gpu_check.py $(ARGS)

audit: $(INSTALLED)
	$(PY) scripts/audit_plugins.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* bench-results
