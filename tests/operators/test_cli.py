"""``flask --app main operators …`` through Flask's CliRunner (SQLite and PostgreSQL), and
once as a real ``flask`` process to check the wiring in create_app.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from app.config import PROJECT_ROOT
from app.models import ApiToken, Operator, OperatorAction
from app.operators import accounts, authenticate_login, tokens

PASSWORD = "senha-forte-123"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    monkeypatch.setattr(accounts, "_dummy_hash", None)


@pytest.fixture
def app(make_app):
    return make_app(start_workers=False)


@pytest.fixture
def db(app):
    return app.extensions["endrigo"].db


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()

    def invoke(*args, input=None):
        return runner.invoke(args=["operators", *args], input=input)

    return invoke


def add(cli, name="maria", role="agent", password=PASSWORD):
    result = cli("add", name, "--role", role, "--password-stdin", input=password + "\n")
    assert result.exit_code == 0, result.output
    return result


def test_add_from_stdin_then_list_shows_no_secrets(cli, db):
    assert "created" in add(cli, "Maria", "admin").output
    add(cli, "zeca", "agent")
    assert authenticate_login(db, "maria", PASSWORD, "127.0.0.1").ok
    result = cli("list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["name", "role", "active"]
    maria = next(line for line in lines if line.startswith("maria"))
    zeca = next(line for line in lines if line.startswith("zeca"))
    assert maria.split()[1:3] == ["admin", "yes"] and maria.split()[3] != "-"  # last login shown
    assert zeca.split()[1:] == ["agent", "yes", "-"]
    assert "argon2" not in result.output and PASSWORD not in result.output


def test_add_prompts_twice_with_hidden_input(cli, db):
    result = cli("add", "maria", "--role", "agent", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output  # hidden input is not echoed
    assert accounts.verify_login(db, "maria", PASSWORD) is not None


def test_add_with_mismatched_prompts_creates_nothing(cli, db):
    result = cli("add", "maria", "--role", "agent", input=f"{PASSWORD}\nother-password\n")
    assert result.exit_code != 0
    assert "do not match" in result.output
    assert accounts.get(db, "maria") is None


@pytest.mark.parametrize("args, stdin, code, message", [
    (["add", "maria", "--role", "boss", "--password-stdin"], PASSWORD + "\n", 2, "Invalid value for '--role'"),
    (["add", "maria", "--password-stdin"], PASSWORD + "\n", 2, "Missing option '--role'"),
    (["add", "maria", "--role", "agent", "--password-stdin"], "\n", 1, "must not be empty"),
    (["add", "maria", "--role", "agent", "--password-stdin"], "", 1, "must not be empty"),
    (["add", "bad name", "--role", "agent", "--password-stdin"], PASSWORD + "\n", 1, "invalid operator name"),
])
def test_add_refuses_bad_input_with_a_clear_error(cli, db, args, stdin, code, message):
    result = cli(*args, input=stdin)
    assert result.exit_code == code
    assert message in result.output
    with db.session() as session:
        assert session.scalars(select(Operator)).first() is None


def test_add_refuses_a_duplicate_before_asking_for_a_password(cli):
    add(cli)
    result = cli("add", "MARIA", "--role", "admin")
    assert result.exit_code == 1
    assert "already exists" in result.output and "Password" not in result.output


@pytest.mark.parametrize("args", [["disable", "joana"], ["enable", "joana"], ["token", "joana"],
                                  ["tokens", "joana"], ["revoke-token", "joana", "edt_x"], ["logout", "joana"],
                                  ["set-password", "joana", "--password-stdin"]])
def test_unknown_operators_are_an_error(cli, args):
    add(cli)
    result = cli(*args, input=PASSWORD + "\n")
    assert result.exit_code == 1
    assert "unknown operator 'joana'" in result.output


def test_token_is_the_last_line_shown_once_and_only_hashed(cli, db):
    add(cli)
    result = cli("token", "maria")
    assert result.exit_code == 0
    token = result.output.strip().splitlines()[-1]
    assert tokens.authenticate(db, token).name == "maria"
    with db.session() as session:
        row = session.scalars(select(ApiToken)).one()
        assert row.token_hash == tokens.hash_token(token) and row.prefix == token[:12]
        assert token not in str(session.scalars(select(OperatorAction.detail)).all())
    listed = cli("tokens", "maria").output
    assert token[:12] in listed and token not in listed


def test_revoke_token_by_prefix(cli, db):
    add(cli)
    first = cli("token", "maria").output.strip().splitlines()[-1]
    second = cli("token", "maria").output.strip().splitlines()[-1]
    wrong = cli("revoke-token", "maria", "edt_nothere")
    assert wrong.exit_code == 1 and "no active token" in wrong.output
    result = cli("revoke-token", "maria", first[:12])
    assert result.exit_code == 0, result.output
    assert tokens.authenticate(db, first) is None
    assert tokens.authenticate(db, second) is not None


def test_disable_and_enable(cli, db):
    add(cli)
    token = cli("token", "maria").output.strip().splitlines()[-1]
    assert cli("disable", "maria").exit_code == 0
    assert not authenticate_login(db, "maria", PASSWORD, "127.0.0.1").ok
    assert tokens.authenticate(db, token) is None
    assert "maria  agent  no" in cli("list").output
    refused = cli("token", "maria")
    assert refused.exit_code == 1 and "disabled" in refused.output
    assert cli("enable", "maria").exit_code == 0
    assert authenticate_login(db, "maria", PASSWORD, "127.0.0.1").ok
    assert tokens.authenticate(db, token) is None


def test_set_password_and_logout_end_sessions(cli, db):
    add(cli)
    version = accounts.get(db, "maria").session_version
    result = cli("set-password", "maria", "--password-stdin", input="nova-senha-789\n")
    assert result.exit_code == 0, result.output
    assert accounts.verify_login(db, "maria", PASSWORD) is None
    assert accounts.verify_login(db, "maria", "nova-senha-789") is not None
    assert cli("logout", "maria").exit_code == 0
    assert accounts.get(db, "maria").session_version == version + 2


def test_changes_are_audited_as_cli(cli, db):
    add(cli)
    prefix = cli("token", "maria").output.strip().splitlines()[-1][:12]
    cli("revoke-token", "maria", prefix)
    cli("disable", "maria")
    with db.session() as session:
        rows = session.execute(select(OperatorAction.operator_name, OperatorAction.action)
                               .order_by(OperatorAction.id)).all()
    assert rows == [("cli", "operator_create"), ("cli", "token_issue"), ("cli", "token_revoke"),
                    ("cli", "operator_disable")]


def test_the_real_flask_command(tmp_path):
    """``flask --app main operators …`` as an operator types it (SQLite, no workers)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "SECRET_KEY": "cli-test-secret-key-1234567890abcdef",
        "INBOX_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    flask = [str(Path(sys.executable).with_name("flask")), "--app", "main", "operators"]

    def run(*args, stdin=""):
        return subprocess.run(flask + list(args), input=stdin, capture_output=True, text=True, env=env,
                              cwd=PROJECT_ROOT, timeout=120)

    added = run("add", "maria", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    token = run("token", "maria")
    assert token.returncode == 0, token.stderr
    assert token.stdout.strip().splitlines()[-1].startswith("edt_")
    duplicate = run("add", "maria", "--role", "agent", "--password-stdin", stdin=PASSWORD + "\n")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    listed = run("list")
    assert listed.returncode == 0 and "maria" in listed.stdout and "argon2" not in listed.stdout
