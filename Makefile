# Set-up is part of every target: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run dev test migrate bench embeddings clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# Production-like server (gunicorn, gthread) on the embedded defaults; no API keys needed.
run: $(VENV)/.runtime
	$(BIN)/gunicorn -c gunicorn.conf.py --bind $(HOST):$(PORT) main:app

# Flask's development server, same app.
dev: $(VENV)/.runtime
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python main.py

test: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The database the app would use (DATABASE_URL from the environment or .env) to the newest schema.
migrate: $(VENV)/.runtime
	$(BIN)/python -m app.ops.migrate

bench: $(VENV)/.dev
	for script in bench/bench_*.py; do $(BIN)/python $$script || exit 1; done

embeddings: $(VENV)/.runtime
	$(BIN)/python create_embeddings.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
