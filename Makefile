# netinstall: the commands the README promises.
#   make setup     host packages (apt-get) + .venv with netinstall and dev tools
#   make check     ruff, ruff format --check, mypy, import contracts, unit tests
#   make images    build/: the installer, the install repository, the netboot tree
#   make test      the CI suite: set-up, check, images, integration and end-to-end tests
#   make test-all  everything, the end-to-end scenarios that do not fit CI included
#   make demo      PXE-install a QEMU machine and boot it into Xen + dom0
#   make bench     our servers against their peers (TFTP, HTTP, the fleet simulation), ratios printed

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup host-packages check lint typecheck imports unit images test test-all demo bench generated clean

setup: host-packages $(STAMP)

host-packages:
	@sh scripts/setup-host

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "netinstall needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# The import contracts of pyproject.toml (SPEC §2's layers, no cycles); dom0's agent is a
# top-level package inside dom0, so its folder goes on the path.
imports: setup
	PYTHONPATH=hypervisor_payload/dom0 $(BIN)/lint-imports --no-logo

unit: setup
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

check: lint typecheck imports unit

# Incremental: an unchanged target takes seconds (keys in build/*/.inputs, cache in ~/.cache).
images: setup
	$(BIN)/netinstall images build

# Integration tests one at a time; the end-to-end lab machines E2E_JOBS at a time (one
# TCG machine per core; each lab has its own network namespace). --durations lists the
# slowest tests, to keep make test inside CI's budget (70 minutes from a cold cache).
E2E_JOBS ?= 2

test: check images
	$(BIN)/python -m pytest -q -m 'not slow' tests/integration $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -n $(E2E_JOBS) --durations=15 -m 'not slow' tests/e2e $(PYTEST_ARGS)

test-all: check images
	$(BIN)/python -m pytest -q tests/integration $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -n $(E2E_JOBS) --durations=25 tests/e2e $(PYTEST_ARGS)

# The UEFI demo (about 6 minutes under TCG); the BIOS one: .venv/bin/netinstall demo --firmware bios
demo: setup
	$(BIN)/netinstall demo --firmware uefi
	@echo "BIOS too: .venv/bin/netinstall demo --firmware bios"

# Our servers against their peers, one script a line (benchmarks/README.md has the last
# results). TFTP: dnsmasq, tftpd-hpa and atftpd unpacked from Debian's packages into
# ~/.cache/netinstall/bench-peers, run as root in a network namespace of the script's.
# The fleet on 2 servers sharing one PostgreSQL beside 1 on SQLite: make bench BENCH_HOSTS=1000,10000
BENCH_HOSTS ?= 1000

bench: setup
	$(BIN)/python benchmarks/tftp_throughput.py
	$(BIN)/python benchmarks/http_servers.py --suite big --suite small
	$(BIN)/python benchmarks/fleet.py
	$(BIN)/python benchmarks/fleet_multi.py --hosts $(BENCH_HOSTS)
	$(BIN)/python benchmarks/host_list.py --hosts 10000 --runs 3

# Regenerate the committed generated files (tests fail when they are stale).
generated: setup
	$(BIN)/netinstall answerfile schema > answerfile/answerfile.rng
	$(BIN)/netinstall answerfile reference > docs/answerfile.md
	$(BIN)/python -m pxe_server.protocol_doc docs/protocol.md

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache .import_linter_cache
