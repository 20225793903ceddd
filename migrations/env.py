"""Alembic environment: runs migrations on the app's connection, or on DATABASE_URL from the CLI.

From the CLI (``alembic upgrade head``) the operator's .env is read first, exactly as the
app reads it, so both migrate the same database.
"""
from alembic import context

from app.config import Settings, load_env_file
from app.db import Database
from app.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        # Called from Database.migrate(): reuse its locked connection.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    load_env_file()
    # Database, not a bare engine: it creates the SQLite folder and sets the same pragmas.
    database = Database(Settings.from_env().database_url)
    try:
        with database.engine.connect() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        database.dispose()


run_migrations_online()
