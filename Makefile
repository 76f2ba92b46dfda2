# framehive: `make demo` runs a whole local cluster, `make test` runs the test suite.
# Both set up .venv (and any missing system packages) first.
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.framehive-setup
CORE     := $(VENV)/.framehive-datagram-core
DURATION ?= 30
BACKEND  ?= builtin
# Test files run in this many processes (pytest-xdist; a file's tests stay together in one): most
# integration tests wait on real processes and sockets, so two share two cores well. TEST_JOBS=0: one.
TEST_JOBS ?= 2

.PHONY: setup models demo test test-slow bench clean diagrams

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh
	touch $@

# The compiled datagram core again when its source changed (bootstrap.sh builds it the first time).
$(CORE): common/_datagram.c scripts/build_datagram_core.py | $(STAMP)
	$(PY) scripts/build_datagram_core.py --stamp $@

# The detector model lives outside the checkout: checked on every run (a fraction of a second when
# the cache is sound), fetched and converted again when it is missing or damaged.
models: $(STAMP)
	@$(PY) -m worker.models --log-level WARNING >/dev/null

setup: $(STAMP) $(CORE) models

demo: $(STAMP) $(CORE) models
	DURATION=$(DURATION) BACKEND=$(BACKEND) $(PY) -m cluster.demo

test: $(STAMP) $(CORE) models
	$(PY) -m pytest -m "not slow" -q -n $(TEST_JOBS) --dist loadfile

test-slow: $(STAMP) $(CORE) models
	$(PY) -m pytest -m slow -q

bench: $(STAMP) $(CORE) models
	$(PY) bench/run_all.py

# images/ from the code: pyreverse (pylint) reads the imports and classes, Graphviz draws them.
# Class diagrams are split into connected parts (ccomps exits 1 when there are several) and packed.
DIAGRAM_TMP := build/diagrams
ROLES       := common sender receiver master worker cluster
CLASS_ROLES := master common receiver worker sender

diagrams: $(STAMP)
	@command -v dot >/dev/null || { echo "Graphviz (dot) is missing: run \`make setup\`" >&2; exit 1; }
	@test -x $(VENV)/bin/pyreverse || { echo "pyreverse (pylint) is missing: run \`make setup\`" >&2; exit 1; }
	rm -rf $(DIAGRAM_TMP) && mkdir -p $(DIAGRAM_TMP)
	$(VENV)/bin/pyreverse -o dot --colorized -d $(DIAGRAM_TMP) -p framehive $(ROLES) >/dev/null
	$(PY) images/roles.py $(DIAGRAM_TMP)/packages_framehive.dot > $(DIAGRAM_TMP)/architecture.dot
	dot -Tsvg -o images/architecture.svg $(DIAGRAM_TMP)/architecture.dot
	sed 's/rankdir=BT/rankdir=RL/' $(DIAGRAM_TMP)/packages_framehive.dot > $(DIAGRAM_TMP)/modules.dot
	dot -Tsvg -o images/modules.svg $(DIAGRAM_TMP)/modules.dot
	for r in $(CLASS_ROLES); do \
	  $(VENV)/bin/pyreverse -o dot --colorized -d $(DIAGRAM_TMP) -p $$r $$r >/dev/null && \
	  { ccomps -x $(DIAGRAM_TMP)/classes_$$r.dot > $(DIAGRAM_TMP)/parts_$$r.dot; \
	    test -s $(DIAGRAM_TMP)/parts_$$r.dot; } && \
	  dot $(DIAGRAM_TMP)/parts_$$r.dot > $(DIAGRAM_TMP)/laid_$$r.dot && \
	  gvpack -array_u3 -o $(DIAGRAM_TMP)/packed_$$r.dot $(DIAGRAM_TMP)/laid_$$r.dot 2>/dev/null && \
	  neato -n2 -Tsvg -o images/classes_$$r.svg $(DIAGRAM_TMP)/packed_$$r.dot || exit 1; \
	done
	@ls -l images/*.svg

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info common/_datagram*.so
