# Two commands do all the set-up on a fresh Debian machine with Python 3.11:
#   make demo   run the whole simulated session on the embedded defaults
#   make test   lint, type-check and run the test suite
# Both create .venv and install what is missing; a second run is quick.
#
# torch: constraints.txt pins the CPU build this machine ships. On a CUDA
# machine: make test TORCH_CONSTRAINTS=/dev/null (or a file of your own).

PYTHON ?= python3
VENV ?= .venv
TORCH_CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.cortexloop-installed
NODE_STAMP := $(VENV)/node/.installed

.PHONY: demo test lint typecheck pytest benchmark xvfb clean

demo: $(STAMP)
	rm -rf demo-output  # the demo's own folder, remade each time
	$(BIN)/cortexloop simulate --out demo-output

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) xvfb $(NODE_STAMP)
	$(BIN)/pytest

benchmark: $(STAMP)
	$(BIN)/python benchmarks/db_write.py
	$(BIN)/python benchmarks/bridge_latency.py
	$(BIN)/python benchmarks/ridge_fit.py
	$(BIN)/python benchmarks/synthesis.py
	$(BIN)/python benchmarks/presentation_timing.py
	$(BIN)/python benchmarks/simulate_speed.py
	$(BIN)/python benchmarks/loop_speed.py
	$(BIN)/python benchmarks/sweep_scaling.py
	$(BIN)/python benchmarks/efficacy.py  # whole sessions, seeds x strategies: about 20 minutes

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the declared dependencies change.
$(STAMP): pyproject.toml $(TORCH_CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(TORCH_CONSTRAINTS) -e '.[all,test]'
	touch $@

# The BIDS reference validator checks the export (tests/loop/test_session.py), from npm into .venv/node;
# without npm that test skips, saying so.
$(NODE_STAMP): | $(BIN)/python
	@if command -v npm >/dev/null 2>&1; then \
	  echo "installing the BIDS validator (npm)"; \
	  npm install --silent --no-audit --no-fund --prefix $(VENV)/node bids-validator@1.15.0 >/dev/null 2>&1 \
	    && touch $@ || echo "warning: npm could not install bids-validator; the BIDS export's test will skip"; \
	else \
	  echo "warning: npm is missing; the BIDS export's test will skip"; \
	fi

# PsychoPy windows need a display; tests start Xvfb themselves (pytest-xvfb).
xvfb:
	@command -v Xvfb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Xvfb (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth >/dev/null; \
	  else \
	    echo "warning: Xvfb is missing and cannot be installed here (need root and apt-get);" \
	         "tests that open a window will be skipped"; \
	  fi; }

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output
