"""What the web layer calls to log operators in and to trust a session.

``authenticate_login(db, name, password, client_addr)`` — throttle check
(app/operators/login_limits.py), argon2 verification (app/operators/accounts.py), the attempt
counted, and on success ``last_login_at`` and a ``login`` audit row. It returns a
``LoginResult``; when ``throttled`` the password was not checked and ``retry_after`` says
how many seconds to wait (send it as Retry-After).

``session_payload(account)`` is what to put in the (signed, client-side) session after a
successful login; ``load_session_operator(db, session)`` turns it back into the operator
on every request, or None when the operator was disabled or its ``session_version`` was
bumped since (logout everywhere, password or role change), so those revoke sessions at once.

The bootstrap admin (``bootstrap_admin(db, settings)``, to call at start-up after the
migrations). A one-person setup keeps working as before: DASHBOARD_PASSWORD is the
password of the operator ``admin``, and a login with an empty name means ``admin``, so the
password alone logs in. Concretely:

- DASHBOARD_PASSWORD set and no ``admin``: ``admin`` (role admin) is created with it,
  marked ``password_from_env``.
- ``admin`` marked ``password_from_env``: its hash follows the variable; when the variable
  changed, the hash is replaced and the sessions end (as the old fingerprint did). When
  the variable is removed, the account gets an unusable password: removing the variable
  still locks that login. A disabled ``admin`` stays disabled.
- ``admin`` with a password of its own (created by the CLI, or ``set_password``): the
  variable is ignored, with a warning at start-up.

Other operators always log in with their name.
"""
from __future__ import annotations

import dataclasses
import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.db import Database
from app.models import ROLE_ADMIN, Operator
from app.operators import accounts, audit, login_limits
from app.operators.accounts import Account

log = logging.getLogger(__name__)

BOOTSTRAP_NAME = "admin"
SESSION_OPERATOR_ID = "operator_id"
SESSION_VERSION = "operator_session_version"


@dataclasses.dataclass(frozen=True)
class LoginResult:
    operator: Account | None
    throttled: bool = False
    retry_after: int = 0  # seconds; > 0 only when throttled

    @property
    def ok(self) -> bool:
        return self.operator is not None


def login_name(name: str | None) -> str:
    """The operator a login form means: an empty name is the bootstrap admin."""
    return accounts.normalize_name(name) or BOOTSTRAP_NAME


def authenticate_login(db: Database, name: str | None, password: str | None, client_addr: str | None,
                       now=None) -> LoginResult:
    """Check a dashboard login, throttled per client address and per name + address."""
    name = login_name(name)
    wait = login_limits.retry_after(db, name, client_addr, now=now)
    if wait:
        log.warning("login refused: too many failures from %s (retry in %d s)", client_addr, wait)
        return LoginResult(operator=None, throttled=True, retry_after=wait)
    account = accounts.verify_login(db, name, password)
    login_limits.record(db, name, client_addr, succeeded=account is not None, now=now)
    if account is None:
        # The name is not logged: people type passwords into the name field.
        log.warning("failed login from %s", client_addr)
        return LoginResult(operator=None)
    accounts.touch_last_login(db, account.id, now=now)
    audit.record(db, account, audit.LOGIN, detail={"client": client_addr}, now=now)
    log.info("operator %s logged in from %s", account.name, client_addr)
    return LoginResult(operator=accounts.get_by_id(db, account.id))


def session_payload(account: Account) -> dict:
    """The session entries that identify ``account`` (no secret: the session is signed, not encrypted)."""
    return {SESSION_OPERATOR_ID: account.id, SESSION_VERSION: account.session_version}


def load_session_operator(db: Database, session_data) -> Account | None:
    """The operator a session belongs to, if that operator is active and the session still current."""
    if not session_data:
        return None
    operator_id = session_data.get(SESSION_OPERATOR_ID)
    version = session_data.get(SESSION_VERSION)
    # bool is an int subclass; a tampered or stale session gets nothing.
    if type(operator_id) is not int or type(version) is not int:
        return None
    account = accounts.get_by_id(db, operator_id)
    if account is None or not account.active or account.session_version != version:
        return None
    return account


def bootstrap_admin(db: Database, settings) -> Account | None:
    """Keep the ``admin`` operator in step with DASHBOARD_PASSWORD (see the module docstring)."""
    accounts.warm_up()
    password = settings.dashboard_password
    for _ in range(2):  # a second pass when another worker created the row at the same moment
        try:
            return _bootstrap_once(db, password)
        except IntegrityError:
            continue
    return accounts.get(db, BOOTSTRAP_NAME)


def _bootstrap_once(db: Database, password: str | None) -> Account | None:
    with db.session() as session:
        row = session.scalar(select(Operator).where(Operator.name == BOOTSTRAP_NAME))
        if row is None:
            if not password:
                return None
            row = Operator(name=BOOTSTRAP_NAME, role=ROLE_ADMIN, password_hash=accounts.hash_password(password),
                           password_from_env=True, active=True)
            session.add(row)
            session.flush()
            log.info("operator %r created from DASHBOARD_PASSWORD", BOOTSTRAP_NAME)
            return Account.of(row)
        if not row.password_from_env:
            if password:
                log.warning("DASHBOARD_PASSWORD is ignored: operator %r has a password of its own", BOOTSTRAP_NAME)
            return Account.of(row)
        if password:
            if not accounts.password_matches(row.password_hash, password):
                row.password_hash = accounts.hash_password(password)
                row.session_version += 1
                log.info("operator %r: DASHBOARD_PASSWORD changed; its sessions end", BOOTSTRAP_NAME)
        elif row.password_hash != accounts.UNUSABLE_PASSWORD:
            row.password_hash = accounts.UNUSABLE_PASSWORD
            row.session_version += 1
            log.info("operator %r: DASHBOARD_PASSWORD removed; it can no longer log in", BOOTSTRAP_NAME)
        session.flush()
        return Account.of(row)
