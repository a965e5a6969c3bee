# Siraya Model Router. `make run` serves with a demo vendor and key; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: install run test lint bench bench-workers clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_setup
	@echo "Serving on http://127.0.0.1:$(PORT)  (Ctrl-C to stop)"
	$(BIN)/daphne -b 127.0.0.1 -p $(PORT) siraya_site.asgi:application

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m bench.run

# Two workers against one on PostgreSQL and Redis on loopback (BENCH_POSTGRES_URL, REDIS_URL).
bench-workers: install
	$(BIN)/python -m bench.run --workers 2 --database postgres

clean:
	rm -rf $(VENV) var artifacts
