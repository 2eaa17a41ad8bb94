# The two set-up commands (see README): `make run` and `make test`.
# Each creates .venv and installs the project on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LOCK := requirements/dev.lock

.PHONY: run test lint fix docs bench clean goldens migration lock

# The pinned versions in $(LOCK) first (`make lock` regenerates it), then the project
# itself; a dependency added to pyproject.toml after the last `make lock` still installs.
$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r $(LOCK)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the whole pipeline on the bundled sample content (SQLite, Maildir in var/mail, feeds in public/)
run: $(STAMP)
	$(BIN)/syndicate init
	$(BIN)/syndicate ingest
	$(BIN)/syndicate subscribers import content/subscribers.csv --confirmed --source demo
	$(BIN)/syndicate approve --all --editor demo --note "approved by make run (demo)"
	$(BIN)/syndicate run
	$(BIN)/syndicate review --no-diff
	@$(BIN)/syndicate users demo

## test: the whole test suite, in TEST_WORKERS processes (pytest-xdist; multi-process tests share one group)
# The scale test's drain (tests/test_scale.py; 50,000 when pytest runs it directly) and the
# fault test's messages (tests/test_delivery_faults.py; 5,000): smaller sizes that still
# prove the property (every kill, restart and fault lands mid-way); see each test.
TEST_WORKERS ?= 2
TEST_SCALE_MESSAGES ?= 10000
TEST_FAULT_MESSAGES ?= 2000
test: $(STAMP)
	TEST_SCALE_MESSAGES=$(TEST_SCALE_MESSAGES) TEST_FAULT_MESSAGES=$(TEST_FAULT_MESSAGES) $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

## goldens: regenerate golden files after a deliberate output change (review the diff!)
goldens: $(STAMP)
	SYNDICATE_REGENERATE_GOLDENS=1 $(BIN)/python -m pytest -q tests -k golden

## lint: ruff (lint + format check) and mypy, as .ci/run runs them; fixers: `make fix`
lint: $(STAMP)
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench
	$(BIN)/mypy

## fix: apply ruff's safe fixes and the formatter over the tree (review the diff)
fix: $(STAMP)
	$(BIN)/ruff check --fix pipeline tests bench
	$(BIN)/ruff format pipeline tests bench

## docs: regenerate the settings and command references, then build the site into build/site
docs: $(STAMP)
	$(BIN)/syndicate config docs --write docs/configuration.md --write docs/commands.md
	$(BIN)/mkdocs build --strict --site-dir build/site

## lock: re-resolve the dev environment into requirements/dev.lock (after changing pyproject.toml)
lock:
	test -x $(BIN)/uv || { $(PY) -m venv $(VENV) && $(BIN)/pip install --quiet 'uv>=0.13,<0.14'; }
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal \
	  --output-file $(LOCK) --quiet

## bench: the benchmarks; Postfix's smtp-sink/smtp-source (Debian `postfix`) are the delivery bench's sink and reference
bench: $(STAMP)
	test -x /usr/sbin/smtp-sink || command -v smtp-sink >/dev/null || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/feeds.py && $(BIN)/python bench/compose.py && $(BIN)/python bench/delivery.py \
	  && $(BIN)/python bench/import.py

clean:
	rm -rf var public .pytest_cache

## migration: write a new Alembic migration for changes to pipeline/store/schema.py
migration: $(STAMP)
	rm -f var/.migration-base.db
	$(BIN)/python -c "from alembic import command; from pipeline.store import make_engine, alembic_config; \
	cfg = alembic_config(make_engine('sqlite:///var/.migration-base.db')); command.upgrade(cfg, 'heads'); \
	command.revision(cfg, message='$(MESSAGE)', autogenerate=True)"
	rm -f var/.migration-base.db*
