"""``flask --app main users …``: answer a data-subject request (LGPD) from a shell.

    users export +5511987654321          the user's data as JSON on standard output
    users erase +5511987654321 --yes     delete it (messages, media, leads ...), anonymise the user

Both are written to the audit trail with ``cli`` as the actor (the erase with counts only).
Errors go to standard error with exit status 1.
"""
from __future__ import annotations

import json

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from app.inbox import privacy
from app.operators import audit

CLI_ACTOR = "cli"

users_cli = AppGroup("users", help="Export or erase one user's data (LGPD requests).")


def current_services():
    """The app's Services (read from the Flask app, not imported: app.services sits above the inbox)."""
    return current_app.extensions["endrigo"]


def register_cli(app: Flask) -> None:
    app.cli.add_command(users_cli)


def _user_id(phone: str) -> int:
    try:
        user_id = privacy.find_user(current_services().db, phone)
    except privacy.PrivacyError as exc:
        raise click.ClickException(str(exc)) from None
    if user_id is None:
        raise click.ClickException("no user with that phone number")
    return user_id


@users_cli.command("export")
@click.argument("phone")
def export_command(phone: str) -> None:
    """Print everything stored about the user with PHONE, as JSON."""
    services = current_services()
    user_id = _user_id(phone)
    data = privacy.export_user(services.db, user_id)
    audit.record(services.db, CLI_ACTOR, audit.EXPORT, user_id=user_id, detail={"format": "json"})
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@users_cli.command("erase")
@click.argument("phone")
@click.option("--yes", is_flag=True, help="Confirm: the data cannot be recovered.")
def erase_command(phone: str, yes: bool) -> None:
    """Delete the user's messages, media files, leads and handoffs and anonymise the user."""
    services = current_services()
    user_id = _user_id(phone)
    if not yes:
        raise click.UsageError("erasing cannot be undone: add --yes to confirm")
    try:
        counts = privacy.erase_user(services, user_id, CLI_ACTOR)
    except privacy.PrivacyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("Erased: " + ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in counts.items()) + ".")
