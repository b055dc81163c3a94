# Two entry points do all the set-up on a fresh machine:
#   make demo   -> venv + npm + stubs, then `zkserve demo`
#   make test   -> the same set-up, then pytest
# Every step is a file target, so re-running is fast when nothing changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STUBS := stubs
# tritonclient pins protobuf < 7 and ships its own `inference` protos, which clash with ours
# in one process: the stock-client test runs it from this second venv.
TRITON_VENV := .venv-triton
# The KServe Python SDK (its REST client, for tests/e2e/test_serving_kserve.py) pins its own
# dependency set; it runs from a venv of its own too.
KSERVE_VENV := .venv-kserve
PROTOS := $(shell find proto -name '*.proto' 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: setup demo test lint stubs clean bench chromium

setup: $(VENV)/.installed node_modules/.installed $(STUBS)/.generated $(TRITON_VENV)/.installed \
	$(KSERVE_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# generated gRPC stubs live outside the source tree; a .pth puts them on every
	# interpreter's path (Ray workers and the Ray Serve gRPC proxy import them by name)
	echo "$(CURDIR)/$(STUBS)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zkserve-stubs.pth"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(TRITON_VENV)/.installed:
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet 'tritonclient[grpc]==2.73.0' numpy
	touch $@

$(KSERVE_VENV)/.installed:
	test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install --quiet 'kserve==0.21.0' numpy
	touch $@

$(STUBS)/.generated: $(VENV)/.installed $(PROTOS)
	rm -rf $(STUBS) && mkdir -p $(STUBS)
	$(if $(PROTOS),$(PY) -m grpc_tools.protoc -I proto --python_out=$(STUBS) --grpc_python_out=$(STUBS) --pyi_out=$(STUBS) $(PROTOS))
	touch $@

stubs: $(STUBS)/.generated

demo: setup
	$(VENV)/bin/zkserve demo

# tests/e2e/test_audit.py renders the audit page in headless Chromium: Debian's package, installed
# when missing and we are root (it skips, saying why, where this cannot be done)
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
	  || echo "chromium not installed (needs root and apt-get): the audit browser test will skip"; }

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: setup chromium lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(STUBS) .zkserve .pytest_cache $(TRITON_VENV) $(KSERVE_VENV)
