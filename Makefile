# Set-up is part of every target: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Where the server listens: BIND/HOST/PORT from the environment or .env (read by the app's own
# load_env_file), else 127.0.0.1:5000. Only HOST, PORT or BIND given on the make command line
# (make run PORT=5099) beat them; then an unset BIND lets HOST:PORT decide.
SERVER_ENV :=
ifeq ($(origin HOST),command line)
SERVER_ENV += HOST=$(HOST) BIND=
endif
ifeq ($(origin PORT),command line)
SERVER_ENV += PORT=$(PORT) BIND=
endif
ifeq ($(origin BIND),command line)
SERVER_ENV += BIND=$(BIND)
endif
LISTEN_ADDRESS = $(BIN)/python -c 'from app.config import listen_address, load_env_file; load_env_file(); print(listen_address(default_host="127.0.0.1"))'

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
	$(SERVER_ENV) $(BIN)/gunicorn -c gunicorn.conf.py --bind "$$($(SERVER_ENV) $(LISTEN_ADDRESS))" main:app

# Flask's development server, same app (HOST/PORT; BIND is gunicorn's).
dev: $(VENV)/.runtime
	$(SERVER_ENV) $(BIN)/python main.py

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
