"""``python -m app.ops.migrate`` (``make migrate``): bring the database to the newest schema.

The app migrates at start-up anyway; this is the by-hand command for deploy scripts and
for checking a configuration. It reads .env exactly as the app does (``load_env_file``)
and runs the app's own locked Alembic upgrade (``Database.migrate``) on
``Settings.from_env().database_url``, so it cannot migrate a different database than the
server would use.
"""
from __future__ import annotations

import logging
import sys

from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url

from app.config import ConfigError, Settings, load_env_file
from app.db import Database
from app.logging import configure_logging
from app.redaction import register_secret

log = logging.getLogger("app.ops.migrate")


def migrate() -> str | None:
    """Upgrade the configured database to head; return the revision it is at afterwards."""
    settings = Settings.from_env()
    url = make_url(settings.database_url)
    register_secret(url.password)
    database = Database(settings.database_url)
    try:
        database.migrate()
        with database.engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
    finally:
        database.dispose()
    log.info("database %s is at revision %s (head)", url.render_as_string(hide_password=True), revision)
    return revision


def main() -> int:
    try:
        env_file = load_env_file()
        configure_logging(Settings.from_env().log_level)
        log.info("settings from the environment%s", f" and {env_file}" if env_file else " (no .env file)")
        migrate()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except Exception as exc:  # noqa: BLE001 - one readable line for the operator, not a traceback
        log.error("migration failed: %s: %s", type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
