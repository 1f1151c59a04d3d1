# The two commands: `make demo` and `make test`. Both create .venv when missing and install
# the project (editable, strict mode) with its dev extras first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test faults overload interop lint typecheck layers unit browser bench fuzz sim clean

install:
	@test -x $(BIN)/python || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet --upgrade pip; }
	@# Strict editable installs link each file: re-install when pyproject.toml or the set of
	@# package files changes, not on every edit.
	@{ cat pyproject.toml; find consensus storage p2p node config cli tests -type f \( -name '*.py' -o -path 'node/console/*' \) | sort; } \
		| sha256sum > $(VENV)/.inputs.new
	@if ! cmp -s $(VENV)/.inputs.new $(STAMP); then \
		echo "installing carechain into $(VENV) (editable, strict)"; \
		$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict \
		&& mv $(VENV)/.inputs.new $(STAMP); \
	else rm -f $(VENV)/.inputs.new; fi

demo: install
	$(BIN)/carechain demo

test: install lint typecheck layers unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy -p carechain.consensus -p carechain.storage -p carechain.p2p -p carechain.node -p carechain.config -p carechain.cli -p carechain.tests
	$(BIN)/mypy bench

layers: install
	$(BIN)/lint-imports

# Tests that need no clock of their own (the simulator's seeded sweep, unit and contract tests,
# and the fuzzers, whose one node answers generated input with no deadline that matters) run on
# both cores at once; those that start networks of real processes or in-process nodes, and
# depend on timing, one at a time.
unit: install browser
	$(BIN)/python -m pytest -q -n 2 --dist worksteal tests/sim tests/unit tests/contract tests/fuzz
	$(BIN)/python -m pytest -q tests/integration tests/e2e tests/security --ignore=tests/e2e/faults

# The fault suite (scenarios of killed, paused, cut and lying validator processes): about four
# minutes, so it has its own target, which CI runs after `make test`.
faults: install
	$(BIN)/python -m pytest -q tests/e2e/faults

# The console's browser tests drive Debian's Chromium (and a CJK font for the Chinese labels).
# Installed here when missing and this is a Debian machine we may administer (as in CI);
# elsewhere those tests say why they are skipped.
browser:
	@if { [ ! -x /usr/bin/chromium ] || [ ! -d /usr/share/fonts/truetype/wqy ]; } && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the console's browser tests"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null; } \
			|| echo "could not install chromium: the browser tests will say they are skipped"; \
	fi

# Floods of real validator processes (7 and 4) by a p2p peer at twice their rate: the chain
# must keep committing. Minutes long, so not in `make test`; CI runs it after.
overload: install
	$(BIN)/python -m pytest -q -s -m overload tests/e2e/faults/test_overload.py

# Other projects' implementations against running nodes (IPFS's verified-fetch through the
# gateway route, a js-libp2p observer following a testnet): each test installs its pinned npm packages (a minute or so), so they have
# their own target, which CI runs after `make test`. Debian's nodejs and npm are installed when
# missing and this is a Debian machine we may administer (as in CI); elsewhere, without node
# and npm, the tests say they are skipped.
interop: install
	@if { ! command -v node >/dev/null || ! command -v npm >/dev/null; } && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's nodejs and npm for the interop tests"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } \
			|| echo "could not install nodejs and npm: the interop tests will say they are skipped"; \
	fi
	$(BIN)/python -m pytest -q -m interop tests/e2e

# The fuzzers with a long budget (CI runs them with a small one inside `make test`).
fuzz: install
	CARECHAIN_FUZZ_EXAMPLES=$${CARECHAIN_FUZZ_EXAMPLES:-20000} $(BIN)/python -m pytest -q tests/fuzz

bench: install
	@for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
