# The agent machine: `make run-local` runs it here; `make test` proves it. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH or ~/.local/bin; otherwise the module pip installs (`python3 -m uv` works wherever pip put it).
UV ?= $(shell command -v uv 2>/dev/null || (test -x $(HOME)/.local/bin/uv && echo $(HOME)/.local/bin/uv) || echo python3 -m uv)
PY := $(UV) run --frozen
CLAUDE_CODE_VERSION ?= 2.1.197
SAM_ENV ?= default
export SAM_CLI_TELEMETRY = 0

.PHONY: help uv sync init run-local test test-unit test-cov lint requirements requirements-check format typecheck build \
        deploy local-deploy logs db-shell bench bench-readme real-cli browser clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# uv: --user first, then plain, then past PEP 668's "externally managed" refusal (Debian/Ubuntu system Pythons).
uv: ## install uv when it is missing
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv 2>/dev/null \
	    || python3 -m pip install --quiet --user --break-system-packages uv
	@$(UV) --version >/dev/null 2>&1 || { echo "could not install uv (python3 -m pip install uv)"; exit 1; }

sync: uv ## install the locked dependencies into .venv
	@$(UV) sync --frozen --quiet

init: ## write .env from .env.example (kept if it exists)
	@test -f .env && echo ".env exists; left as is" || (cp .env.example .env && echo "wrote .env: edit it to taste")

run-local: sync ## the whole machine on http://localhost:$${PORT:-8000} over a moto server (no Docker, no AWS)
	@$(PY) python -m local_runtime

lint: sync requirements-check ## ruff (lint + format check), import-linter contracts, requirements drift
	@$(PY) ruff check .
	@$(PY) ruff format --check --quiet . || { echo "run: make format"; exit 1; }
	@$(PY) lint-imports --no-logo --no-cache

# What each deployed unit pip-installs, exported from uv.lock so it ships exactly what the tests ran against:
# <file>:<extra of pyproject.toml, or nothing for the core set>. CoreLayer itself ships no dependencies.
REQUIREMENTS := functions/api/requirements.txt:api functions/ws/requirements.txt: functions/sweeper/requirements.txt: \
                runner_container/requirements.txt:
REQUIREMENTS_NOTE := \# Do not edit: `make requirements` writes this from uv.lock, and `make lint` fails when it drifts.
# One unit's file on stdout; the shell variable `extra` picks the extra.
EXPORT_REQUIREMENTS = { echo '$(REQUIREMENTS_NOTE)'; $(UV) export --frozen --no-hashes --no-dev --no-emit-project \
                      $${extra:+--extra $$extra}; }

requirements: uv ## write functions/*/requirements.txt and the runner's from uv.lock
	@for spec in $(REQUIREMENTS); do file=$${spec%%:*}; extra=$${spec#*:}; \
	    $(EXPORT_REQUIREMENTS) > $$file.tmp && mv $$file.tmp $$file && echo "wrote $$file" || exit 1; done

requirements-check: uv ## fail when uv.lock is stale or a requirements.txt differs from a fresh export
	@$(UV) lock --check --quiet || { echo "uv.lock does not match pyproject.toml: run uv lock, then make requirements"; exit 1; }
	@rc=0; for spec in $(REQUIREMENTS); do file=$${spec%%:*}; extra=$${spec#*:}; \
	    diff -u --label "$$file (committed)" --label "$$file (from uv.lock)" $$file <($(EXPORT_REQUIREMENTS)) \
	    || { echo "$$file drifted from uv.lock: run make requirements"; rc=1; }; done; exit $$rc

format: sync ## ruff format + autofix
	@$(PY) ruff format .
	@$(PY) ruff check --fix .

typecheck: sync ## mypy --strict
	@$(PY) mypy

test: lint typecheck real-cli browser ## ruff + mypy --strict + pytest (unit, integration, e2e, browser, real CLI)
	@$(PY) pytest -q

test-unit: sync ## fast tests only
	@$(PY) pytest -q tests/unit

test-cov: sync ## tests with a coverage report (htmlcov/)
	@$(PY) pytest -q --cov --cov-report=term-missing:skip-covered --cov-report=html

build: sync ## sam build (the runner image needs Docker)
	@$(PY) sam build --parallel

deploy: build ## sam deploy (guided the first time), then point Fargate at the runner image sam pushed
	@if grep -q '^\[$(SAM_ENV).deploy' samconfig.toml && [ -f .aws-sam/deployed ]; then \
	    $(PY) sam deploy --config-env $(SAM_ENV); else $(PY) sam deploy --guided --config-env $(SAM_ENV) && touch .aws-sam/deployed; fi
	@bash infra/aws/post_deploy.sh $(SAM_ENV)

local-deploy: sync ## deploy the stack to LocalStack (needs Docker and a LocalStack token; see README)
	@bash infra/localstack/deploy.sh

logs: sync ## tail the deployed functions' logs
	@$(PY) sam logs --tail --config-env $(SAM_ENV)

db-shell: sync ## look at tasks, sessions and costs in the DynamoDB the config points at
	@$(PY) python -m local_runtime.db_shell

bench: sync ## benchmarks -> bench/results/last-run.json (untracked: the tree stays clean)
	@$(PY) python bench/run_all.py

bench-readme: sync ## benchmarks -> the committed record bench/results/latest.json + README's table
	@$(PY) python bench/run_all.py --readme

real-cli: ## install the pinned Claude Code CLI into node_modules (for the real-CLI tests)
	@test -x node_modules/.bin/claude || npm install --no-save --no-audit --no-fund @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)

browser: ## install Debian's chromium for the browser tests (Playwright drives /usr/bin/chromium)
	@test -x /usr/bin/chromium || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

clean: ## remove caches and local state
	rm -rf .mypy_cache .ruff_cache .pytest_cache htmlcov .coverage .aws-sam .local
