# xenvirtio: `make demo` and `make test` are all a newcomer needs.
# Every target sets up what it needs first, on a fresh Debian 12 machine as root.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Debian packages the project uses: Xen's XenStore tools and headers, and the real
# peers that tests and benchmarks drive (fio, iperf3, nbdkit, libnbd tools, iproute2).
APT_PACKAGES := xenstore-utils libxen-dev fio iperf3 nbdkit libnbd-bin iproute2 \
                qemu-utils fuse3 iputils-ping python3-venv python3-dev gcc e2fsprogs

.PHONY: setup apt venv test lint typecheck layers unit demo bench clean help

help:
	@echo "make demo   set up, then run the demo"
	@echo "make test   set up, then ruff, mypy, import-linter and pytest"
	@echo "make bench  set up, then run the benchmarks"
	@echo "make setup  install Debian packages and create .venv (idempotent)"

setup: apt venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" != 0 ]; then echo "setup: need root to install:" $$missing >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: setup
	$(BIN)/mypy

layers: setup
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest

test: lint typecheck layers unit

demo: setup
	$(BIN)/xenvirtio demo

bench: setup
	$(BIN)/xenvirtio bench all

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
