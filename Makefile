# The workshop's commands. On a fresh machine: `make demo`, then `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# podman reads its settings for this machine kind from the repository.
export CONTAINERS_CONF := $(CURDIR)/containers/containers.conf

.DEFAULT_GOAL := help
.PHONY: help setup system-packages demo tour test test-containers bench notebooks diff

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## Create .venv with the pinned dependencies

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# The tests' own tools, on top of the workshop's environment.
$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

system-packages: ## Install the Debian packages the tests use (root with apt)
	@scripts/install-system-packages.sh

demo: setup ## The scoreboard: every failure scenario on every stage (report/)
	$(PY) -m workshop demo

tour: setup ## A few seconds: each stage's new capability at work
	$(PY) -m workshop tour

test: $(VENV)/.installed-test system-packages ## Run the whole test suite (containers included)
	$(PY) -m pytest

test-containers: $(VENV)/.installed-test system-packages ## Build every stage's image with podman and test them
	$(PY) -m pytest -m containers

notebooks: setup ## Open the workshop notebooks in Jupyter Lab
	$(PY) -m pip install -q --disable-pip-version-check -r notebooks/requirements.txt
	$(VENV)/bin/jupyter lab notebooks/

bench: setup ## Measure what each stage costs, and what attacks do to it (bench/results/)
	$(PY) -m bench.run
	$(PY) -m bench.attacks --out bench/results
	$(PY) -m bench.client_cost --out bench/results

diff: ## Show what a stage adds: make diff FROM=03 TO=04 (CHAPTER=1: its chapter too)
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make diff FROM=03 TO=04 [CHAPTER=1]"; exit 2; }
	@diff -ruN -x __pycache__ $(if $(CHAPTER),,-x README.md) stages/$(FROM)-* stages/$(TO)-*; test $$? -le 1
