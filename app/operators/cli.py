"""``flask --app main operators …``: manage operator accounts and API tokens from a shell.

    operators add NAME --role admin|agent [--password-stdin]
    operators list
    operators disable NAME | enable NAME
    operators set-password NAME [--password-stdin]
    operators logout NAME                 (ends every session of NAME)
    operators token NAME                  (a new API token, printed once as the LAST line)
    operators tokens NAME                 (prefixes and dates, never the tokens)
    operators revoke-token NAME PREFIX

Without ``--password-stdin`` the password is asked twice with hidden input; with it, the
first line of standard input is the password (for scripts: ``printf '%s\\n' "$PW" | …``).
Errors go to standard error and exit with status 1 (2 for usage errors such as a bad role).
Changes are written to the audit trail with ``cli`` as the actor.
"""
from __future__ import annotations

import sys

import click
from flask import Flask
from flask.cli import AppGroup

from app.localtime import to_local
from app.models import OPERATOR_ROLES
from app.operators import accounts, audit, tokens
from app.operators.accounts import OperatorError
from app.services import current_services

CLI_ACTOR = "cli"

operators_cli = AppGroup("operators", help="Manage dashboard operators and their API tokens.")


def register_cli(app: Flask) -> None:
    """Add the ``operators`` command group to ``app`` (called by create_app)."""
    app.cli.add_command(operators_cli)


def _db():
    return current_services().db


def _when(value) -> str:
    local = to_local(value)
    return local.strftime("%Y-%m-%d %H:%M") if local else "-"


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True, default="", show_default=False)


def _run(action):
    """Run ``action``; domain errors become a clear message and exit status 1."""
    try:
        return action()
    except OperatorError as exc:
        raise click.ClickException(str(exc)) from None


@operators_cli.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(OPERATOR_ROLES), required=True, help="admin or agent")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
def add_command(name: str, role: str, password_stdin: bool) -> None:
    """Create an operator."""
    db = _db()
    if accounts.get(db, name) is not None:  # say so before asking for a password
        raise click.ClickException(f"an operator named {accounts.normalize_name(name)!r} already exists")
    password = _read_password(password_stdin)
    account = _run(lambda: accounts.create(db, name, role, password))
    audit.record(db, CLI_ACTOR, audit.OPERATOR_CREATE, detail={"operator": account.name, "role": account.role})
    click.echo(f"Operator {account.name!r} created (role {account.role}).")


@operators_cli.command("list")
def list_command() -> None:
    """List operators (never their passwords or tokens)."""
    rows = accounts.list_accounts(_db())
    if not rows:
        click.echo("No operators.")
        return
    width = max(len("name"), *(len(a.name) for a in rows))
    click.echo(f"{'name':<{width}}  role   active  last login (São Paulo)")
    for account in rows:
        click.echo(f"{account.name:<{width}}  {account.role:<5}  {'yes' if account.active else 'no':<6}  "
                   f"{_when(account.last_login_at)}")


@operators_cli.command("disable")
@click.argument("name")
def disable_command(name: str) -> None:
    """Block an operator: login refused, sessions ended, API tokens revoked."""
    db = _db()
    account = _run(lambda: accounts.disable(db, name))
    audit.record(db, CLI_ACTOR, audit.OPERATOR_DISABLE, detail={"operator": account.name})
    click.echo(f"Operator {account.name!r} disabled; sessions ended and API tokens revoked.")


@operators_cli.command("enable")
@click.argument("name")
def enable_command(name: str) -> None:
    """Allow a disabled operator to log in again (old tokens stay revoked)."""
    db = _db()
    account = _run(lambda: accounts.enable(db, name))
    audit.record(db, CLI_ACTOR, audit.OPERATOR_ENABLE, detail={"operator": account.name})
    click.echo(f"Operator {account.name!r} enabled.")


@operators_cli.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
def set_password_command(name: str, password_stdin: bool) -> None:
    """Give an operator a new password (ends its sessions)."""
    db = _db()
    _run(lambda: accounts.operator_exists_or_raise(db, name))
    password = _read_password(password_stdin)
    account = _run(lambda: accounts.set_password(db, name, password))
    audit.record(db, CLI_ACTOR, audit.PASSWORD_CHANGE, detail={"operator": account.name})
    click.echo(f"Password of {account.name!r} changed; its sessions ended.")


@operators_cli.command("logout")
@click.argument("name")
def logout_command(name: str) -> None:
    """End every dashboard session of an operator."""
    db = _db()
    account = _run(lambda: accounts.bump_session_version(db, name))
    audit.record(db, CLI_ACTOR, audit.SESSIONS_REVOKE, detail={"operator": account.name})
    click.echo(f"Every session of {account.name!r} ended.")


@operators_cli.command("token")
@click.argument("name")
def token_command(name: str) -> None:
    """Issue an API token; it is printed once, as the last line."""
    db = _db()
    issued = _run(lambda: tokens.issue(db, name))
    audit.record(db, CLI_ACTOR, audit.TOKEN_ISSUE,
                 detail={"operator": accounts.normalize_name(name), "prefix": issued.prefix})
    click.echo(f"API token for {accounts.normalize_name(name)!r} (prefix {issued.prefix}). "
               "It is shown only now; store it safely:")
    click.echo(issued.token)


@operators_cli.command("tokens")
@click.argument("name")
def tokens_command(name: str) -> None:
    """List an operator's API tokens by prefix."""
    rows = _run(lambda: tokens.list_tokens(_db(), name))
    if not rows:
        click.echo("No API tokens.")
        return
    click.echo("prefix        created           last used         revoked")
    for info in rows:
        click.echo(f"{info.prefix:<12}  {_when(info.created_at):<16}  {_when(info.last_used_at):<16}  "
                   f"{_when(info.revoked_at)}")


@operators_cli.command("revoke-token")
@click.argument("name")
@click.argument("prefix")
def revoke_token_command(name: str, prefix: str) -> None:
    """Revoke an operator's API token, named by its prefix (see ``tokens``)."""
    db = _db()
    info = _run(lambda: tokens.revoke_by_prefix(db, name, prefix))
    audit.record(db, CLI_ACTOR, audit.TOKEN_REVOKE, detail={"operator": info.operator_name, "prefix": info.prefix})
    click.echo(f"Token {info.prefix} of {info.operator_name!r} revoked.")
