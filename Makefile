# The two commands the README opens with: `make demo` and `make test`.
# Both install into a local virtualenv first, so they work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean dashboards lock

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# make demo DEMO_ARGS="--port 0" picks any free port (8080 by default); pmc-gateway demo --help lists the rest.
demo: $(STAMP)
	$(BIN)/pmc-gateway demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench dashboards
	$(BIN)/mypy
	$(BIN)/python -m gateway.tools.layering

# The fast unit tier first (no socket, no sleep: seconds), then everything that runs real servers.
# pytest exits 5 when it collected no test: that fails here like any other non-zero exit.
test: $(STAMP) lint
	@command -v redis-server >/dev/null || { echo "redis-server is needed by the tests: apt-get install -y redis-server"; exit 1; }
	@{ command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } || { echo "nginx is needed by the tests (a real upstream): apt-get install -y nginx"; exit 1; }
	@command -v prometheus >/dev/null || { echo "prometheus is needed by the tests (rules on a real Prometheus): apt-get install -y prometheus"; exit 1; }
	@commit=$$(git log -1 --format=%ct -- constraints.txt 2>/dev/null); age=$$(( ($$(date +%s) - $${commit:-$$(date +%s)}) / 86400 )); \
	  [ $$age -le 35 ] || echo "note: the pins in constraints.txt are $$age days old: refresh them with make lock (monthly)"
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)
	$(BIN)/python -m pytest tests --ignore=tests/unit $(PYTEST_ARGS)

# Refresh the pins: resolve pyproject.toml's ranges afresh in a throw-away venv, then review the
# diff of constraints.txt and run `make test` before committing it (monthly, or for a security fix).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e ".[test]"
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^pmc-gateway' > constraints.txt
	rm -rf .lock-venv

# Regenerate the committed Grafana JSON from dashboards/generate.py.
dashboards: $(STAMP)
	$(BIN)/python -m dashboards.generate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
