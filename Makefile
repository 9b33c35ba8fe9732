# Every target bootstraps its own virtualenv: a fresh machine needs only python3, make and git.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: test e2e bench filters venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

filters: $(STAMP)
	$(PY) filters/build.py

test: $(STAMP)
	$(PY) -m pytest tests examples -q -n 2  # two pytest-xdist workers: 2m49s instead of 4m00s on the 2-core VM

e2e: $(STAMP)
	$(PY) -m pytest integration -q -rs  # -rs: each skipped test with its reason (Docker, Rust)

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) filters/out tests/modules/out .pytest_cache

# A seeded mutation campaign over our modules and the SDK examples (fuzz/run.py; reproducers in fuzz/findings/).
.PHONY: fuzz
fuzz: $(STAMP)
	$(PY) fuzz/run.py --seconds $(or $(FUZZ_SECONDS),300) --seed $(or $(FUZZ_SEED),0)

# Mutation testing of the host's Envoy semantics (mutmut, configured in pyproject's [tool.mutmut]):
# MUTATE='proxywasm_host.hostcalls.headers*' narrows the run to matching mutants; results in mutants/.
.PHONY: mutate
mutate: $(STAMP)
	$(VENV)/bin/mutmut run $(MUTATE)
	$(VENV)/bin/mutmut results
