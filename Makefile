# Cartstream: `make up` starts everything locally, `make test` runs the whole suite.
SHELL := /bin/bash
PY ?= .venv/bin/python
# The console script `make deps` installs (pyproject.toml); `$(CARTSTREAM) --help` lists the jobs.
CARTSTREAM ?= .venv/bin/cartstream
STACK := infra/stack.sh

.PHONY: help deps up infra down status logs clean test test-unit test-integration test-e2e test-e2e-secure test-browser screenshot lint bench replay catalog token

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: ## install what is missing: venv + requirements + the cartstream command, Kafka jars, Redis/PostgreSQL
	@$(STACK) deps

# Kafka brokers `make up`/`make infra` start: 1, or 3 for a local cluster (infra/cluster.sh).
# Unset: the count that runs, else 1 (so `make down && make up` is one broker again).
BROKERS ?=

infra: ## start only Kafka, Redis and PostgreSQL (and create topics)
	@KAFKA_BROKERS=$(BROKERS) $(STACK) infra

# The profile `make up` starts: dev (open, loopback) or secure (docs/security.md).
PROFILE ?= dev

up: ## start the whole system with the sample catalog (PROFILE=secure; BROKERS=3: a 3-broker Kafka cluster)
	@CARTSTREAM_PROFILE=$(PROFILE) KAFKA_BROKERS=$(BROKERS) $(STACK) up

down: ## stop everything `make up` started (make down SVC="sink-redis" for some)
	@$(STACK) down $(SVC)

status: ## what runs and where it listens
	@$(STACK) status

logs: ## tail the logs (make logs SVC=kafka for one)
	@$(STACK) logs $(SVC)

clean: ## stop and delete all local data (.run/)
	@$(STACK) clean

test: deps ## run every test against real servers (starts the local stack if needed)
	$(PY) -m pytest

test-unit: ## unit tests only (no I/O)
	$(PY) -m pytest tests/unit

test-integration: deps
	$(PY) -m pytest tests/integration

test-e2e: deps
	$(PY) -m pytest tests/e2e

test-e2e-secure: deps ## the e2e suite against systems in the secure profile (tokens attached)
	CARTSTREAM_E2E_PROFILE=secure $(PY) -m pytest tests/e2e

test-browser: deps ## the cart page in a real browser (Debian's chromium via Playwright)
	$(PY) -m pytest tests/browser

screenshot: deps ## PNGs of the cart page with a filled cart: .run/cart-page.png (and -phone.png)
	CART_PAGE_SCREENSHOT=$(CURDIR)/.run/cart-page.png $(PY) -m pytest -q tests/browser -k screenshot
	@echo "wrote .run/cart-page.png and .run/cart-page-phone.png"

lint: ## ruff
	$(PY) -m ruff check .

SINKS := sink-redis sink-postgres sink-catalog

# make replay: the sinks re-apply cart-details-event; make replay FROM=events: a fresh aggregator
# re-folds cart-events and the cart sinks store what it writes (docs/operations.md).
FROM ?= details

replay: deps ## rebuild the read models from the log (make replay FROM=events re-folds cart-events)
	@$(STACK) down $(SINKS) $(if $(filter events,$(FROM)),aggregator)
	@$(STACK) replay --from $(FROM) $(ARGS)
	@$(STACK) up

token: ## print a 1 h bearer token: make -s token CUSTOMER=<id>, or make -s token ADMIN=1
	@test -n "$(CUSTOMER)$(ADMIN)" || { echo "usage: make -s token CUSTOMER=<id> | ADMIN=1" >&2; exit 64; }
	@$(CARTSTREAM) token $(if $(ADMIN),--admin,--customer "$(CUSTOMER)")

catalog: deps ## load a catalog file: make catalog FILE=my-catalog.jsonl [ARGS=--dry-run]
	@test -n "$(FILE)" || { echo "usage: make catalog FILE=path [ARGS=--dry-run]" >&2; exit 64; }
	$(CARTSTREAM) catalog load "$(FILE)" $(ARGS)

bench: deps ## run every benchmark on the local stack (starts it); results in bench/results/
	@$(STACK) up
	@set -e; for b in bench/ceilings.py bench/write_api.py bench/aggregator.py bench/connectors.py bench/read_api.py bench/storage.py bench/freshness.py bench/replay.py; do \
	  if [ -f $$b ]; then echo "== $$b"; $(PY) $$b; fi; done
	$(PY) bench/report.py
