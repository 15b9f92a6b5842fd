# mail_pipeline — two commands: `make run` and `make test`. Everything else is optional.

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
PORT ?= 3000
IMAGES_PORT ?= 3001

.PHONY: run test install lint typecheck pytest format dagster-home webserver daemon demo \
        validate clean-data production-like chaos

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## make run: install, migrate, seed the demo, start Dagster (UI on http://localhost:3000);
## proof images of the sandbox image host are served on http://localhost:3001
run: install dagster-home demo
	@mkdir -p data/images
	$(BIN)/python -m http.server $(IMAGES_PORT) --bind 127.0.0.1 --directory data/images \
	  >/dev/null 2>&1 & images=$$!; trap "kill $$images" EXIT INT TERM; \
	cd $(DAGSTER_HOME) && MAIL_PIPELINE_IMAGE_BASE_URL=http://localhost:$(IMAGES_PORT) \
	  MAIL_PIPELINE_UI_BASE_URL=http://localhost:$(PORT) \
	  $(BIN)/dagster dev -w $(CURDIR)/workspace.yaml -h 0.0.0.0 -p $(PORT)

## make test: install, then lint, type-check and run the tests
test: install lint typecheck pytest

lint:
	$(BIN)/ruff check mail_pipeline tests benchmarks deploy
	$(BIN)/ruff format --check mail_pipeline tests benchmarks deploy
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest -n auto

format: install
	$(BIN)/ruff check --fix mail_pipeline tests benchmarks deploy
	$(BIN)/ruff format mail_pipeline tests benchmarks deploy

dagster-home:
	@mkdir -p $(DAGSTER_HOME)
	@ln -sf $(CURDIR)/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install
	$(BIN)/mail-pipeline demo

## The processes `dagster dev` runs, one by one (each in its own terminal)
webserver: install dagster-home
	$(BIN)/dagster-webserver -w workspace.yaml -h 0.0.0.0 -p $(PORT)

daemon: install dagster-home
	$(BIN)/mail-pipeline daemon -w workspace.yaml

validate: install
	$(BIN)/dagster definitions validate -w workspace.yaml

## make production-like: production's processes and bindings on this machine's PostgreSQL,
## a moto server and the sandbox server, run through the demo and checked in the UI
## (deploy/production_like.py; screenshots in artifacts/production-like)
production-like: install
	$(BIN)/python deploy/production_like.py

## make chaos: crash injection on this machine's PostgreSQL - SIGKILLs of run workers, the
## daemon and the code server at named crash points and random moments, every recipient
## judged by the sandbox vendors' ledgers (benchmarks/chaos.py, docs/reliability.md);
## .ci/run runs 10 trials, TRIALS=100 is the full proof (about an hour)
TRIALS ?= 10
chaos: install
	$(BIN)/python benchmarks/chaos.py --trials $(TRIALS)

## Forget local state: app database, sandbox vendors, queues, images, Dagster runs
clean-data:
	rm -rf data $(DAGSTER_HOME)
