# Gantry: the two README commands are `make demo` and `make test`; both set up what they need.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PYTEST := $(VENV)/bin/python -m pytest

.PHONY: setup demo test lint ruff mypy sanity pytest unit integration ansible-units \
        ansible-integration molecule bench clean

setup:
	@bash scripts/setup.sh

## The main job on this machine as a one-host fleet; afterwards the demo is taken down again
## (its containers removed, the agent stopped) unless DEMO_KEEP=1.
demo: setup
	ansible-playbook -i inventories/local/hosts.yml playbooks/deploy.yml
	@if [ "$${DEMO_KEEP:-0}" != 1 ]; then \
	  ansible-playbook -i inventories/local/hosts.yml playbooks/teardown.yml; \
	fi

## Every test tier.
test: setup lint pytest ansible-units ansible-integration molecule
	@echo "make test: every tier passed"

lint: setup ruff mypy sanity

ruff:
	ruff check agent plugins tests bench
	ruff format --check agent plugins tests bench

mypy:
	mypy

sanity:
	bash scripts/ansible-test.sh sanity

pytest: unit integration

unit:
	$(PYTEST) tests/agent/unit

integration:
	$(PYTEST) tests/agent/integration

ansible-units:
	bash scripts/ansible-test.sh units

ansible-integration:
	bash scripts/ansible-test.sh integration

molecule:
	bash scripts/molecule.sh -s kernel_check
	bash scripts/molecule.sh -s containers

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(VENV)/bin/python "$$b"; done

clean:
	rm -rf .build .cache tests/output .pytest_cache .mypy_cache .ruff_cache
