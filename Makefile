# framehive: `make demo` runs a whole local cluster, `make test` runs the test suite.
# Both set up .venv (and any missing system packages) first.
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.framehive-setup
DURATION ?= 30

.PHONY: setup demo test test-slow bench clean

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	DURATION=$(DURATION) $(PY) -m cluster.demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
