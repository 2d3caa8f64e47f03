# Two commands matter: `make run` (the dashboard with demo data on http://127.0.0.1:8000)
# and `make test` (lint, deploy checks and the whole suite on PostgreSQL + Redis).
# Everything else is a building block of those two. See README.md.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
MANAGE := $(BIN)/python manage.py
export PATH := $(CURDIR)/$(BIN):$(PATH)
export VENV := $(CURDIR)/$(VENV)

# Production-like settings for `check-deploy` (a throwaway key, never used to serve anything).
DEPLOY_ENV := env -u DATABASE_URL -u REDIS_URL DEBUG=0 ALLOWED_HOSTS=modelops.example.com \
	SECRET_KEY=check-deploy-only-3f9a7c1e5b2d8f4a6c0e9b7d5f3a1c8e6b4d2f0a
# `make run` and its steps read .env when present (honcho does too), so all agree on one DB.
LOAD_ENV := set -a; [ ! -f .env ] || . ./.env; set +a;

# Benchmarks add themselves here (e.g. `BENCH_TARGETS += bench-ingest` next to their target).
BENCH_TARGETS :=

.PHONY: help venv run migrate seed static test test-fast pytest lint fmt check-deploy bench lock clean

help:  ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# --- Environment ---

$(STAMP): pyproject.toml requirements.lock
	@PYTHON=$(PYTHON) scripts/bootstrap-venv.sh

venv: $(STAMP)  ## Create .venv and install the pinned dependencies (only when they changed)

lock: $(STAMP)  ## Regenerate requirements.lock from .venv after changing pyproject.toml
	$(BIN)/pip freeze --exclude-editable --disable-pip-version-check > requirements.lock
	@touch $(STAMP)

# --- Running ---

migrate: $(STAMP)
	@$(LOAD_ENV) $(BIN)/python scripts/ensure_database.py
	$(LOAD_ENV) $(MANAGE) migrate --no-input -v 1

static: $(STAMP)
	$(LOAD_ENV) $(MANAGE) collectstatic --no-input -v 0

seed: migrate  ## Build the demo fleet (idempotent) and print the demo logins
	$(LOAD_ENV) $(MANAGE) seed_demo

# The Procfile's `simulate` process (live feedback + heartbeats through the API) runs unless
# SIMULATE=0 (in the environment or .env): then only web, worker and beat start.
run: static seed  ## Serve web + Celery worker + beat (+ live demo traffic; SIMULATE=0: off) on :8000
	@echo "==> starting web (gunicorn), Celery worker, beat and the simulator with honcho; Ctrl-C stops them"
	@echo "==> http://127.0.0.1:$${PORT:-8000}/  (API docs: /api/docs/)"
	$(LOAD_ENV) procs=$$([ "$${SIMULATE:-1}" = 0 ] && echo "web worker beat" || true); \
		SIMULATE_URL=$${SIMULATE_URL:-http://127.0.0.1:$${PORT:-8000}} \
		exec $(BIN)/honcho -f Procfile start --port $${PORT:-8000} $$procs

# --- Checks ---

lint: $(STAMP)  ## ruff check + format --check, no missing migrations, lock file up to date
	$(BIN)/python scripts/check_lock.py
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MANAGE) makemigrations --check --dry-run

fmt: $(STAMP)  ## Format and autofix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check-deploy: $(STAMP)  ## Django's deployment checks with production settings, warnings fail
	$(DEPLOY_ENV) $(MANAGE) check --deploy --fail-level WARNING

# PYTEST_ARGS passes extra options, e.g. `make test PYTEST_ARGS="-k status -x"`.
PYTEST_ARGS ?=
PYTEST_FRESH := $(if $(CI),--create-db,)

pytest: $(STAMP)  ## The suite on PostgreSQL + Redis (found, or started under var/)
	@mkdir -p var/staticfiles  # whitenoise warns on every request when STATIC_ROOT is missing
	source scripts/test-services.sh && trap test_services_stop EXIT && \
		$(BIN)/pytest -q $(PYTEST_FRESH) $(PYTEST_ARGS)

test: lint check-deploy pytest  ## lint + check-deploy + the whole suite on PostgreSQL + Redis

test-fast: $(STAMP)  ## Quick SQLite pass: no Redis, no browser, no real worker, no schema fuzz
	@mkdir -p var/staticfiles
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest -q -m "not worker and not browser and not fuzz" \
		$(PYTEST_ARGS)

# 1,000,000 events through gunicorn + a worker vs raw COPY, in a scratch DB (needs PG + Redis)
BENCH_TARGETS += bench-ingest
bench-ingest: $(STAMP)  ## Feedback ingest benchmark; last line: ingest events_per_s=... ratio=...
	$(LOAD_ENV) $(BIN)/python tests/bench/bench_ingest.py $(BENCH_INGEST_ARGS)

# Every page and the status endpoint at fleet scale (500 applications, 20,000 versions, 90 days
# of hourly rollups loaded with COPY into a scratch DB, reused between runs; needs PG + Redis)
BENCH_TARGETS += bench-pages
bench-pages: $(STAMP)  ## Page benchmark; last line: pages worst_median_ms=... status_ratio=...
	$(LOAD_ENV) $(BIN)/python tests/bench/bench_pages.py $(BENCH_PAGES_ARGS)

bench: $(BENCH_TARGETS)  ## Benchmarks (each prints the figures it measured)
	@$(if $(BENCH_TARGETS),true,echo "no benchmarks yet")

clean:  ## Remove the virtualenv and local state under var/ (SQLite DB, broker, static)
	rm -rf $(VENV) var/db.sqlite3 var/broker var/staticfiles var/celerybeat-schedule*
