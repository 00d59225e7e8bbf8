# The two commands of the README: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_ROOT ?= demo-root
DEMO_PORT ?= 8080

.PHONY: demo test lint format host-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A whole appliance on this machine: build + verify a demo bundle, install it, serve it.
demo: $(STAMP)
	$(BIN)/sparkplane demo --root $(DEMO_ROOT) --port $(DEMO_PORT)

# Host tools the tests drive for real, from Debian's packages: chromium for the console's browser
# tests (Playwright's own browser download cannot work offline), nft to check the firewall rules,
# ip and strace for the end-to-end test's loopback-only namespace and its socket audit; podman,
# runc (crun fails on this machine's cgroups) and mmdebstrap for the container-runtime test.
HOST_TOOLS := chromium:chromium nft:nftables strace:strace ip:iproute2 systemd-analyze:systemd \
	podman:podman runc:runc mmdebstrap:mmdebstrap
host-tools:
	@missing=""; for pair in $(HOST_TOOLS); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi

# The whole suite: unit, integration, PostgreSQL, browser, and the real-engine end to end.
test: $(STAMP) host-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(DEMO_ROOT) build *.egg-info
