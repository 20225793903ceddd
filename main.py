"""Entry point. ``gunicorn -c gunicorn.conf.py main:app`` in production; ``python main.py`` to develop.

Loads .env (if present) before building the app, so operators can keep settings there.
"""
from __future__ import annotations

import os

# Before numpy is imported: see gunicorn.conf.py.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from dotenv import load_dotenv  # noqa: E402

load_dotenv()

from app import create_app  # noqa: E402 - .env must be loaded first

app = create_app()

if __name__ == "__main__":
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "5000"))
    # threaded: webhooks answer while the inbox's threads work; no reloader (it would fork the inbox).
    app.run(host=host, port=port, threaded=True, use_reloader=False)
