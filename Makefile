# The two commands of the README: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_ROOT ?= demo-root
DEMO_PORT ?= 8080

.PHONY: demo test lint format host-tools oidc-provider clean

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
# ip and strace for the end-to-end test's loopback-only namespace and its socket audit; slapd
# (OpenLDAP) and node + npm (the OpenID provider) for the console's directory sign-in tests;
# mmdebstrap, podman, runc and ssh for the installer's systemd boxes (tests/installer/box);
# rsyslogd (with its GnuTLS driver, a package of its own) as the SIEM feed's receiver; pg_dump
# and pg_restore (the server's major version, 15) for backup and restore on PostgreSQL.
HOST_TOOLS := chromium:chromium nft:nftables strace:strace ip:iproute2 systemd-analyze:systemd \
	/usr/sbin/slapd:slapd node:nodejs npm:npm \
	mmdebstrap:mmdebstrap podman:podman runc:runc ssh:openssh-client ssh-keygen:openssh-client \
	rsyslogd:rsyslog pg_dump:postgresql-client-15
HOST_PACKAGES := rsyslog-gnutls
host-tools:
	@missing=""; for pair in $(HOST_TOOLS); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	for package in $(HOST_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" \
			|| missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# The OpenID provider of the console's tests (npm's oidc-provider), pinned by its lock file.
OIDC_PROVIDER := tests/oidc/node_modules/.package-lock.json
$(OIDC_PROVIDER): tests/oidc/package.json tests/oidc/package-lock.json
	cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error
oidc-provider: host-tools $(OIDC_PROVIDER)

# The whole suite: unit, integration, PostgreSQL, browser, and the real-engine end to end, on two
# workers (tests/conftest.py groups what must share one worker); then, alone on a quiet machine,
# the tests that assert wall-clock latency (marker `timing`). docs/tests.md has the timings.
test: $(STAMP) host-tools oidc-provider
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadgroup --no-loadscope-reorder -m "not timing" --durations=25
	$(BIN)/pytest -m timing

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(DEMO_ROOT) build *.egg-info
