"""Operator accounts, API tokens, the audit trail, database-counted login limits and the
functions the web layer calls (app/operators/), on SQLite and PostgreSQL.

argon2 runs with cheap parameters here (the ``cheap_hashes`` fixture) to keep the suite
fast; the production parameters are argon2-cffi's defaults.
"""
from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from argon2 import PasswordHasher
from sqlalchemy import func, inspect, select, update

from app.config import PROJECT_ROOT
from app.models import ApiToken, Base, LoginAttempt, Operator, OperatorAction, User
from app.operators import (
    BOOTSTRAP_NAME,
    accounts,
    audit,
    authenticate_login,
    bootstrap_admin,
    load_session_operator,
    login_limits,
    session_payload,
    tokens,
)
from app.operators.accounts import DuplicateOperator, InvalidOperatorData, OperatorError, UnknownOperator

PASSWORD = "senha-forte-123"
T0 = dt.datetime(2026, 12, 1, 12, 0, 0)


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


def operator_row(db, name):
    with db.session() as session:
        return session.scalar(select(Operator).where(Operator.name == name))


def count(db, model, *where):
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


# ---- schema ------------------------------------------------------------------------------

def test_migrations_match_the_models_and_0003_downgrades_and_upgrades(db):
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []

    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    tables = set(inspect(db.engine).get_table_names())
    assert not tables & {"operators", "api_tokens", "operator_actions", "login_attempts"}
    assert "turns" in tables
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


# ---- accounts ----------------------------------------------------------------------------

def test_create_and_verify_login(db):
    created = accounts.create(db, "  Maria ", "agent", PASSWORD)
    assert (created.name, created.role, created.active) == ("maria", "agent", True)
    assert accounts.verify_login(db, "MARIA", PASSWORD).id == created.id
    assert accounts.verify_login(db, "maria", PASSWORD + "x") is None
    assert accounts.verify_login(db, "joana", PASSWORD) is None
    assert accounts.verify_login(db, "maria", None) is None


def test_only_an_argon2id_hash_is_stored_and_accounts_carry_no_hash(db):
    account = accounts.create(db, "maria", "admin", PASSWORD)
    row = operator_row(db, "maria")
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in row.password_hash
    assert not hasattr(account, "password_hash")
    assert all(not hasattr(a, "password_hash") for a in accounts.list_accounts(db))


@pytest.mark.parametrize("name, role, password, message", [
    ("maria", "boss", PASSWORD, "invalid role"),
    ("maria", "agent", "", "must not be empty"),
    ("maria", "agent", "   ", "must not be empty"),
    ("maria", "agent", "short", "at least 8"),
    ("", "agent", PASSWORD, "invalid operator name"),
    ("ma ria", "agent", PASSWORD, "invalid operator name"),
    ("x" * 65, "agent", PASSWORD, "invalid operator name"),
])
def test_create_rejects_bad_data(db, name, role, password, message):
    with pytest.raises(InvalidOperatorData, match=message):
        accounts.create(db, name, role, password)
    assert count(db, Operator) == 0


def test_names_are_unique_whatever_the_case(db):
    accounts.create(db, "maria", "agent", PASSWORD)
    with pytest.raises(DuplicateOperator):
        accounts.create(db, "Maria", "admin", PASSWORD)
    assert count(db, Operator) == 1


def test_unknown_names_and_disabled_operators_still_cost_one_argon2_check(db, monkeypatch):
    accounts.create(db, "maria", "agent", PASSWORD)
    accounts.disable(db, "maria")
    checked = []
    real = accounts.password_matches

    def spy(password_hash, password):
        checked.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(accounts, "password_matches", spy)
    for name in ("nobody", "maria", "not a valid name!"):
        checked.clear()
        assert accounts.verify_login(db, name, PASSWORD) is None
        assert len(checked) == 1 and checked[0].startswith("$argon2id$"), name


def test_a_hash_made_with_old_parameters_is_upgraded_at_login(db, monkeypatch):
    accounts.create(db, "maria", "agent", PASSWORD)
    old = operator_row(db, "maria").password_hash
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    assert accounts.verify_login(db, "maria", PASSWORD) is not None
    new = operator_row(db, "maria").password_hash
    assert new != old and "m=2048,t=2" in new
    assert accounts.verify_login(db, "maria", PASSWORD) is not None


def test_set_password_replaces_it_and_ends_sessions(db):
    before = accounts.create(db, "maria", "agent", PASSWORD)
    after = accounts.set_password(db, "maria", "outra-senha-456")
    assert after.session_version == before.session_version + 1
    assert accounts.verify_login(db, "maria", PASSWORD) is None
    assert accounts.verify_login(db, "maria", "outra-senha-456") is not None
    with pytest.raises(UnknownOperator):
        accounts.set_password(db, "joana", "outra-senha-456")
    with pytest.raises(InvalidOperatorData):
        accounts.set_password(db, "maria", "")


def test_disable_blocks_login_ends_sessions_and_revokes_tokens_enable_does_not_revive_tokens(db):
    before = accounts.create(db, "maria", "agent", PASSWORD)
    issued = tokens.issue(db, "maria")
    disabled = accounts.disable(db, "maria")
    assert not disabled.active and disabled.session_version == before.session_version + 1
    assert accounts.verify_login(db, "maria", PASSWORD) is None
    assert tokens.authenticate(db, issued.token) is None
    assert count(db, ApiToken, ApiToken.revoked_at.is_(None)) == 0
    assert accounts.disable(db, "maria").session_version == disabled.session_version  # idempotent

    accounts.enable(db, "maria")
    assert accounts.verify_login(db, "maria", PASSWORD) is not None
    assert tokens.authenticate(db, issued.token) is None
    with pytest.raises(UnknownOperator):
        accounts.disable(db, "joana")


def test_role_change_and_bump_end_sessions(db):
    v1 = accounts.create(db, "maria", "admin", PASSWORD).session_version
    v2 = accounts.set_role(db, "maria", "agent").session_version
    assert v2 == v1 + 1 and accounts.get(db, "maria").role == "agent"
    assert accounts.set_role(db, "maria", "agent").session_version == v2
    assert accounts.bump_session_version(db, "maria").session_version == v2 + 1


def test_list_and_touch_last_login(db):
    accounts.create(db, "zeca", "agent", PASSWORD)
    maria = accounts.create(db, "maria", "admin", PASSWORD)
    accounts.touch_last_login(db, maria.id, now=T0)
    listed = accounts.list_accounts(db)
    assert [a.name for a in listed] == ["maria", "zeca"]
    assert listed[0].last_login_at == T0 and listed[1].last_login_at is None
    assert accounts.count_active(db) == 2


# ---- API tokens --------------------------------------------------------------------------

def test_issue_stores_only_a_sha256_and_a_short_prefix(db):
    accounts.create(db, "maria", "agent", PASSWORD)
    issued = tokens.issue(db, "maria")
    assert issued.token.startswith("edt_") and len(issued.token) == 47
    assert issued.token not in repr(issued)
    with db.session() as session:
        row = session.get(ApiToken, issued.id)
    assert row.token_hash == hashlib.sha256(issued.token.encode()).hexdigest()
    assert row.prefix == issued.token[:12] == issued.prefix
    assert tokens.issue(db, "maria").token != issued.token


def test_authenticate_accepts_a_live_token_of_an_active_operator_only(db):
    maria = accounts.create(db, "maria", "agent", PASSWORD)
    issued = tokens.issue(db, maria)
    assert tokens.authenticate(db, issued.token).id == maria.id
    assert tokens.authenticate(db, issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")) is None
    assert tokens.authenticate(db, "") is None
    assert tokens.authenticate(db, None) is None
    assert tokens.authenticate(db, issued.prefix) is None

    # An operator made inactive without going through disable(): the token still stops working.
    with db.session() as session:
        session.execute(update(Operator).where(Operator.id == maria.id).values(active=False))
    assert tokens.authenticate(db, issued.token) is None
    with db.session() as session:
        session.execute(update(Operator).where(Operator.id == maria.id).values(active=True))
    assert tokens.authenticate(db, issued.token) is not None

    assert tokens.revoke(db, issued.id) is True
    assert tokens.revoke(db, issued.id) is False
    assert tokens.authenticate(db, issued.token) is None


def test_last_used_is_written_at_most_once_a_minute(db):
    accounts.create(db, "maria", "agent", PASSWORD)
    issued = tokens.issue(db, "maria")

    def last_used():
        with db.session() as session:
            return session.get(ApiToken, issued.id).last_used_at

    assert last_used() is None
    tokens.authenticate(db, issued.token, now=T0)
    assert last_used() == T0
    tokens.authenticate(db, issued.token, now=T0 + dt.timedelta(seconds=59))
    assert last_used() == T0
    tokens.authenticate(db, issued.token, now=T0 + dt.timedelta(seconds=61))
    assert last_used() == T0 + dt.timedelta(seconds=61)


def test_revoke_by_prefix_only_touches_that_operators_token(db):
    accounts.create(db, "maria", "agent", PASSWORD)
    accounts.create(db, "zeca", "agent", PASSWORD)
    first, second = tokens.issue(db, "maria"), tokens.issue(db, "maria")
    with pytest.raises(OperatorError, match="no active token"):
        tokens.revoke_by_prefix(db, "zeca", first.prefix)
    assert tokens.revoke_by_prefix(db, "maria", first.prefix).revoked_at is not None
    assert tokens.authenticate(db, first.token) is None
    assert tokens.authenticate(db, second.token) is not None
    with pytest.raises(OperatorError, match="no active token"):
        tokens.revoke_by_prefix(db, "maria", first.prefix)
    listed = tokens.list_tokens(db, "maria")
    assert [(t.prefix, t.active) for t in listed] == [(first.prefix, False), (second.prefix, True)]


def test_no_token_for_a_disabled_or_unknown_operator(db):
    accounts.create(db, "maria", "agent", PASSWORD)
    accounts.disable(db, "maria")
    with pytest.raises(OperatorError, match="disabled"):
        tokens.issue(db, "maria")
    with pytest.raises(UnknownOperator):
        tokens.issue(db, "joana")
    assert count(db, ApiToken) == 0


# ---- audit -------------------------------------------------------------------------------

def test_audit_records_who_what_and_for_whom(db):
    maria = accounts.create(db, "maria", "agent", PASSWORD)
    with db.session() as session:
        user = User(phone="+5511999990001")
        session.add(user)
        session.flush()
        user_id = user.id
    audit.record(db, maria, audit.REPLY, user_id=user_id, detail={"text": "Olá!"}, now=T0)
    audit.record(db, "cli", audit.OPERATOR_CREATE, detail={"operator": "zeca"}, now=T0 + dt.timedelta(seconds=1))
    newest, oldest = audit.recent(db)
    assert (newest.operator_id, newest.operator_name, newest.action) == (None, "cli", "operator_create")
    assert (oldest.operator_id, oldest.operator_name, oldest.user_id) == (maria.id, "maria", user_id)
    assert oldest.detail == {"text": "Olá!"}
    assert [r.action for r in audit.recent(db, user_id=user_id)] == ["reply"]
    assert [r.action for r in audit.recent(db, operator_name="cli")] == ["operator_create"]
    with pytest.raises(ValueError):
        audit.record(db, maria, "Drop Table")
    assert count(db, OperatorAction) == 2


# ---- login limits ------------------------------------------------------------------------

def fail(db, name, addr, n, start=T0, step=dt.timedelta(seconds=1)):
    for i in range(n):
        login_limits.record(db, name, addr, succeeded=False, now=start + i * step)


def test_five_failures_for_a_name_from_one_address_throttle_that_pair(db):
    fail(db, "maria", "10.0.0.1", 4)
    assert login_limits.retry_after(db, "maria", "10.0.0.1", now=T0 + dt.timedelta(seconds=10)) == 0
    fail(db, "maria", "10.0.0.1", 1, start=T0 + dt.timedelta(seconds=4))
    # Allowed again when the oldest of the five leaves the 15-minute window.
    assert login_limits.retry_after(db, "maria", "10.0.0.1", now=T0 + dt.timedelta(seconds=10)) == 890
    assert login_limits.retry_after(db, "maria", "10.0.0.1", now=T0 + dt.timedelta(seconds=900)) == 0
    assert login_limits.retry_after(db, "joana", "10.0.0.1", now=T0 + dt.timedelta(seconds=10)) == 0


def test_retry_after_counts_from_the_failure_that_keeps_the_limit_reached(db):
    # Six failures (concurrent requests can overshoot): allowed again when only four are left.
    fail(db, "maria", "10.0.0.1", 6)
    assert login_limits.retry_after(db, "maria", "10.0.0.1", now=T0 + dt.timedelta(seconds=10)) == 891


def test_failures_from_other_addresses_never_lock_out_a_new_client(db):
    accounts.create(db, "maria", "agent", PASSWORD)
    for i in range(40):
        fail(db, "maria", f"203.0.113.{i}", 5)
    result = authenticate_login(db, "maria", PASSWORD, "198.51.100.7", now=T0 + dt.timedelta(seconds=30))
    assert result.ok and not result.throttled


def test_twenty_failures_from_one_address_throttle_it_for_every_name(db):
    accounts.create(db, "maria", "agent", PASSWORD)
    for i in range(5):
        fail(db, f"name{i}", "10.0.0.9", 4)
    result = authenticate_login(db, "maria", PASSWORD, "10.0.0.9", now=T0 + dt.timedelta(seconds=30))
    assert result.throttled and not result.ok and result.retry_after > 0
    assert authenticate_login(db, "maria", PASSWORD, "10.0.0.10", now=T0 + dt.timedelta(seconds=30)).ok


def test_a_success_resets_the_pair_but_not_the_address(db):
    accounts.create(db, "mallory", "agent", PASSWORD)
    fail(db, "maria", "10.0.0.1", 4)
    login_limits.record(db, "maria", "10.0.0.1", succeeded=True, now=T0 + dt.timedelta(seconds=5))
    fail(db, "maria", "10.0.0.1", 4, start=T0 + dt.timedelta(seconds=6))
    assert login_limits.retry_after(db, "maria", "10.0.0.1", now=T0 + dt.timedelta(seconds=20)) == 0

    # An attacker's own valid login does not clear the count of an address spraying other names.
    fail(db, "zeca", "10.0.0.1", 4, start=T0 + dt.timedelta(seconds=20))
    fail(db, "joana", "10.0.0.1", 3, start=T0 + dt.timedelta(seconds=30))
    assert authenticate_login(db, "mallory", PASSWORD, "10.0.0.1", now=T0 + dt.timedelta(seconds=40)).ok
    fail(db, "rita", "10.0.0.1", 4, start=T0 + dt.timedelta(seconds=41))
    fail(db, "rosa", "10.0.0.1", 1, start=T0 + dt.timedelta(seconds=45))
    assert login_limits.retry_after(db, "ana", "10.0.0.1", now=T0 + dt.timedelta(seconds=50)) > 0


def test_a_throttled_login_checks_no_password_and_records_nothing(db, monkeypatch):
    accounts.create(db, "maria", "agent", PASSWORD)
    fail(db, "maria", "10.0.0.1", 5)
    rows = count(db, LoginAttempt)
    monkeypatch.setattr(accounts, "password_matches", lambda *a: pytest.fail("password checked"))
    result = authenticate_login(db, "maria", PASSWORD, "10.0.0.1", now=T0 + dt.timedelta(seconds=60))
    assert result.throttled and result.retry_after == 900 - 60
    assert count(db, LoginAttempt) == rows


def test_prune_deletes_attempts_older_than_a_day(db):
    fail(db, "maria", "10.0.0.1", 1, start=T0 - dt.timedelta(days=1, minutes=1))
    fail(db, "maria", "10.0.0.1", 1, start=T0 - dt.timedelta(hours=23))
    assert login_limits.prune(db, now=T0) == 2  # the pair row and the address row
    assert count(db, LoginAttempt) == 2


# ---- the web layer's entry points ---------------------------------------------------------

def test_authenticate_login_success_and_failure(db):
    maria = accounts.create(db, "maria", "agent", PASSWORD)
    failed = authenticate_login(db, "maria", "errada", "10.0.0.1", now=T0)
    assert (failed.operator, failed.throttled, failed.retry_after) == (None, False, 0)
    ok = authenticate_login(db, " Maria", PASSWORD, "10.0.0.1", now=T0 + dt.timedelta(seconds=1))
    assert ok.operator.id == maria.id and ok.operator.last_login_at == T0 + dt.timedelta(seconds=1)
    (entry,) = audit.recent(db)
    assert (entry.action, entry.operator_name, entry.detail) == ("login", "maria", {"client": "10.0.0.1"})
    assert count(db, LoginAttempt, LoginAttempt.succeeded.is_(True)) == 1


def test_dashboard_password_alone_logs_in_as_the_bootstrap_admin(make_settings, db):
    admin = bootstrap_admin(db, make_settings(dashboard_password="choose-one"))
    assert (admin.name, admin.role, admin.password_from_env) == (BOOTSTRAP_NAME, "admin", True)
    assert authenticate_login(db, "", "choose-one", "10.0.0.1").operator.id == admin.id
    assert authenticate_login(db, None, "choose-one", "10.0.0.1").ok
    assert authenticate_login(db, "admin", "choose-one", "10.0.0.1").ok
    assert not authenticate_login(db, "", "wrong-one", "10.0.0.1").ok
    # Start-up again with the same password: nothing changes, sessions survive.
    assert bootstrap_admin(db, make_settings(dashboard_password="choose-one")).session_version == admin.session_version
    assert count(db, Operator) == 1


def test_bootstrap_survives_another_worker_creating_the_admin_at_the_same_moment(make_settings, db, monkeypatch):
    real_hash = accounts.hash_password
    calls = []

    def hash_while_another_worker_inserts(password):
        calls.append(password)
        if len(calls) == 1:  # between our SELECT and our INSERT, another process wins
            with db.session() as other:
                other.add(Operator(name="admin", role="admin", password_hash=real_hash(password),
                                   password_from_env=True, active=True))
        return real_hash(password)

    monkeypatch.setattr(accounts, "hash_password", hash_while_another_worker_inserts)
    admin = bootstrap_admin(db, make_settings(dashboard_password="choose-one"))
    assert admin is not None and admin.name == "admin"
    assert count(db, Operator) == 1
    assert authenticate_login(db, "", "choose-one", "10.0.0.1").ok


def test_no_dashboard_password_creates_no_admin(make_settings, db):
    assert bootstrap_admin(db, make_settings(dashboard_password=None)) is None
    assert count(db, Operator) == 0
    assert not authenticate_login(db, "", "", "10.0.0.1").ok


def test_changing_dashboard_password_replaces_the_admins_and_ends_its_sessions(make_settings, db):
    admin = bootstrap_admin(db, make_settings(dashboard_password="old-password"))
    session = session_payload(admin)
    changed = bootstrap_admin(db, make_settings(dashboard_password="new-password"))
    assert changed.session_version == admin.session_version + 1
    assert load_session_operator(db, session) is None
    assert not authenticate_login(db, "", "old-password", "10.0.0.1").ok
    assert authenticate_login(db, "", "new-password", "10.0.0.1").ok


def test_removing_dashboard_password_locks_the_bootstrap_admin(make_settings, db):
    admin = bootstrap_admin(db, make_settings(dashboard_password="old-password"))
    session = session_payload(admin)
    bootstrap_admin(db, make_settings(dashboard_password=None))
    assert not authenticate_login(db, "", "old-password", "10.0.0.1").ok
    assert load_session_operator(db, session) is None
    bootstrap_admin(db, make_settings(dashboard_password="old-password"))
    assert authenticate_login(db, "", "old-password", "10.0.0.1").ok


def test_an_admin_with_its_own_password_ignores_dashboard_password(make_settings, db):
    bootstrap_admin(db, make_settings(dashboard_password="from-the-env"))
    accounts.set_password(db, "admin", "my-own-password")
    assert not accounts.get(db, "admin").password_from_env
    bootstrap_admin(db, make_settings(dashboard_password="from-the-env"))
    assert not authenticate_login(db, "", "from-the-env", "10.0.0.1").ok
    assert authenticate_login(db, "", "my-own-password", "10.0.0.1").ok
    bootstrap_admin(db, make_settings(dashboard_password=None))
    assert authenticate_login(db, "", "my-own-password", "10.0.0.1").ok


def test_a_disabled_bootstrap_admin_stays_disabled(make_settings, db):
    bootstrap_admin(db, make_settings(dashboard_password="choose-one"))
    accounts.disable(db, "admin")
    assert not bootstrap_admin(db, make_settings(dashboard_password="other-one")).active
    assert not authenticate_login(db, "", "other-one", "10.0.0.1").ok


def test_load_session_operator_checks_id_version_and_active(app, db):
    maria = accounts.create(db, "maria", "agent", PASSWORD)
    # The payload survives Flask's session serializer with its types.
    serializer = app.session_interface.get_signing_serializer(app)
    data = serializer.loads(serializer.dumps(session_payload(maria)))
    assert load_session_operator(db, data).id == maria.id

    for bad in (None, {}, {"operator_id": maria.id},
                {"operator_id": str(maria.id), "operator_session_version": maria.session_version},
                {"operator_id": maria.id, "operator_session_version": True},
                {"operator_id": maria.id + 100, "operator_session_version": maria.session_version}):
        assert load_session_operator(db, bad) is None, bad

    accounts.bump_session_version(db, "maria")  # logout everywhere
    assert load_session_operator(db, data) is None
    fresh = session_payload(accounts.get(db, "maria"))
    assert load_session_operator(db, fresh).id == maria.id
    accounts.disable(db, "maria")
    assert load_session_operator(db, fresh) is None
    accounts.enable(db, "maria")
    assert load_session_operator(db, fresh) is None  # disable bumped the version: log in again
