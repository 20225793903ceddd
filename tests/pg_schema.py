"""Throw-away PostgreSQL schemas, so tests and benchmarks share one database without meeting.

``throwaway_schema(url)`` creates a schema with a random name and returns a URL whose
connections use it (``options=-csearch_path=…``) and a function that drops it.
"""
from __future__ import annotations

import uuid
from typing import Callable
from urllib.parse import urlencode

from sqlalchemy import create_engine, text


def throwaway_schema(base_url: str, prefix: str = "t_") -> tuple[str, Callable[[], None]]:
    schema = prefix + uuid.uuid4().hex[:12]
    admin = create_engine(base_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}{urlencode({'options': f'-csearch_path={schema}'})}", drop
