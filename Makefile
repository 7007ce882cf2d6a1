# ltfsee-globus: `make run` serves a demo simulated tape library; `make test` runs the suite.
PYTHON ?= python3
PIPENV := $(PYTHON) -m pipenv
BIND ?= 127.0.0.1:5000
export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_VERBOSITY := -1
export PIPENV_YES := 1

.PHONY: setup run cluster test lint format cert bench clean

setup: .venv/.installed

.venv/.installed: Pipfile pyproject.toml
	$(PYTHON) -m pip install --quiet --disable-pip-version-check pipenv
	$(PIPENV) install --dev
	touch $@

run: setup
	$(PIPENV) run ltfsee-globus demo --dir demo --bind $(BIND)

# three nodes over a throwaway PostgreSQL (apt-get install postgresql): docs/cluster.md
cluster: setup
	$(PIPENV) run ltfsee-globus demo --dir demo-cluster --nodes 3 --bind $(BIND)

lint: setup
	$(PIPENV) run ruff check .
	$(PIPENV) run ruff format --check .

test: lint
	$(PIPENV) run pytest

format: setup
	$(PIPENV) run ruff format .
	$(PIPENV) run ruff check --fix .

bench: setup
	$(PIPENV) run python bench/workloads.py --quick

cert:
	sh ssl/make-dev-cert.sh

clean:
	rm -rf .venv demo demo-cluster .pytest_cache .ruff_cache
