"""Entry point. ``gunicorn -c gunicorn.conf.py main:app`` in production; ``python main.py`` to develop.

Loads .env (``load_env_file``: the real environment wins) before building the app, so
operators can keep settings there; ``flask --app main …`` goes through here too.
"""
from __future__ import annotations

import os

from app.config import load_env_file

load_env_file()

# Before numpy is imported (create_app loads the knowledge base): see gunicorn.conf.py.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from app import create_app  # noqa: E402 - .env must be loaded first

app = create_app()

if __name__ == "__main__":
    # HOST/PORT only: BIND is gunicorn's (it may name a unix socket the dev server cannot use).
    host = os.environ.get("HOST", "").strip() or "127.0.0.1"
    port = int(os.environ.get("PORT", "").strip() or "5000")
    # threaded: webhooks answer while the inbox's threads work; no reloader (it would fork the inbox).
    app.run(host=host, port=port, threaded=True, use_reloader=False)
