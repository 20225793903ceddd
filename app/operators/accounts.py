"""Operator accounts: create, verify a password, disable/enable, list, change password.

Passwords are hashed with argon2id (argon2-cffi's ``PasswordHasher``, its default, memory-hard
parameters); only the encoded hash is stored. Callers get ``Account`` snapshots, which carry
no hash at all, so a template or a log line cannot leak one by accident.

Names are normalised (stripped, lower case) and limited to ``[a-z0-9._@-]``, 1–64
characters, so "Maria" and "maria " are the same operator.

``verify_login`` takes the same time whatever the outcome: an unknown name, a disabled
operator or an unusable hash is still checked against an argon2 hash (a dummy one when
there is no row), so response times do not tell which names exist.

Sessions: every operator has a ``session_version`` that the web layer stores in the
session at login (app/operators/login.py). ``bump_session_version`` — also done by
``set_password`` and ``disable`` — makes every existing session of that operator invalid.
Disabling also revokes the operator's API tokens, so re-enabling an account does not bring
old tokens back.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.db import Database, utcnow
from app.models import OPERATOR_ROLES, ApiToken, Operator

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MIN_PASSWORD_LENGTH = 8
# argon2 hashes whatever it is given; a cap keeps a megabyte "password" from costing more.
MAX_PASSWORD_LENGTH = 1024
# Stored instead of a hash when an account must not log in with a password (see
# bootstrap_admin); argon2 rejects it as an invalid hash, so it never verifies.
UNUSABLE_PASSWORD = "!"

_hasher = PasswordHasher()
_dummy_hash: str | None = None
_dummy_lock = threading.Lock()


class OperatorError(ValueError):
    """A request about operators that cannot be carried out; the message says why (no secrets)."""


class UnknownOperator(OperatorError):
    pass


class DuplicateOperator(OperatorError):
    pass


class InvalidOperatorData(OperatorError):
    """A bad name, role or password."""


@dataclasses.dataclass(frozen=True)
class Account:
    """What the rest of the app may know about an operator (no password hash)."""

    id: int
    name: str
    role: str
    active: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None
    session_version: int
    password_from_env: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def of(cls, row: Operator) -> "Account":
        return cls(id=row.id, name=row.name, role=row.role, active=row.active, created_at=row.created_at,
                   last_login_at=row.last_login_at, session_version=row.session_version,
                   password_from_env=row.password_from_env)


def normalize_name(name: str | None) -> str:
    """The stored form of a login name (may still be invalid: see ``valid_name``)."""
    return (name or "").strip().lower()


def valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def _check_name(name: str | None) -> str:
    normalized = normalize_name(name)
    if not valid_name(normalized):
        raise InvalidOperatorData(
            "invalid operator name: use 1-64 characters a-z, 0-9, '.', '_', '@' or '-', starting with a letter or digit")
    return normalized


def _check_role(role: str) -> str:
    if role not in OPERATOR_ROLES:
        raise InvalidOperatorData(f"invalid role {role!r}: use one of {', '.join(OPERATOR_ROLES)}")
    return role


def _check_password(password: str | None) -> str:
    if password is None or not password.strip():
        raise InvalidOperatorData("the password must not be empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidOperatorData(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidOperatorData(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    """argon2 verification that answers False (never raises) for a wrong password or a bad hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def warm_up() -> None:
    """Make the dummy hash now (start-up), so the first unknown-name login costs no extra hash."""
    _dummy()


def _dummy() -> str:
    global _dummy_hash
    with _dummy_lock:
        if _dummy_hash is None:
            _dummy_hash = _hasher.hash(secrets.token_urlsafe(32))
        return _dummy_hash


def operator_row(session, name: str) -> Operator:
    """The Operator row named ``name`` in ``session``; UnknownOperator when there is none."""
    row = session.scalar(select(Operator).where(Operator.name == normalize_name(name)))
    if row is None:
        raise UnknownOperator(f"unknown operator {normalize_name(name)!r}")
    return row


# ---- queries -----------------------------------------------------------------------------

def get(db: Database, name: str) -> Account | None:
    with db.session() as session:
        row = session.scalar(select(Operator).where(Operator.name == normalize_name(name)))
        return Account.of(row) if row else None


def get_by_id(db: Database, operator_id: int) -> Account | None:
    with db.session() as session:
        row = session.get(Operator, operator_id)
        return Account.of(row) if row else None


def list_accounts(db: Database) -> list[Account]:
    with db.session() as session:
        return [Account.of(row) for row in session.scalars(select(Operator).order_by(Operator.name))]


def count_active(db: Database) -> int:
    """Active operators (the web layer's "is any login possible?")."""
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Operator).where(Operator.active.is_(True)))


# ---- changes -----------------------------------------------------------------------------

def create(db: Database, name: str, role: str, password: str) -> Account:
    """A new active operator; DuplicateOperator when the name is taken."""
    normalized, role, password = _check_name(name), _check_role(role), _check_password(password)
    password_hash = hash_password(password)
    try:
        with db.session() as session:
            if session.scalar(select(Operator.id).where(Operator.name == normalized)) is not None:
                raise DuplicateOperator(f"an operator named {normalized!r} already exists")
            row = Operator(name=normalized, role=role, password_hash=password_hash, active=True)
            session.add(row)
            session.flush()
            return Account.of(row)
    except IntegrityError as exc:  # created by someone else between our check and our insert
        raise DuplicateOperator(f"an operator named {normalized!r} already exists") from exc


def verify_login(db: Database, name: str | None, password: str | None) -> Account | None:
    """The active operator whose name and password these are, or None; same cost in every case."""
    normalized = normalize_name(name)
    password = password or ""
    row = None
    if valid_name(normalized) and len(password) <= MAX_PASSWORD_LENGTH:
        with db.session() as session:
            row = session.scalar(select(Operator).where(Operator.name == normalized))
    if row is None:
        password_matches(_dummy(), password[:MAX_PASSWORD_LENGTH])
        return None
    if row.password_hash == UNUSABLE_PASSWORD:
        password_matches(_dummy(), password)
        return None
    ok = password_matches(row.password_hash, password)
    if not ok or not row.active:
        return None
    if _hasher.check_needs_rehash(row.password_hash):
        # Parameters were raised since this hash was made: store one with today's.
        with db.session() as session:
            session.execute(update(Operator).where(Operator.id == row.id, Operator.password_hash == row.password_hash)
                            .values(password_hash=hash_password(password)))
    return Account.of(row)


def touch_last_login(db: Database, operator_id: int, now: dt.datetime | None = None) -> None:
    with db.session() as session:
        session.execute(update(Operator).where(Operator.id == operator_id).values(last_login_at=now or utcnow()))


def bump_session_version(db: Database, name: str) -> Account:
    """Log the operator out everywhere: existing sessions stop being accepted."""
    with db.session() as session:
        row = operator_row(session, name)
        row.session_version += 1
        session.flush()
        return Account.of(row)


def set_password(db: Database, name: str, password: str) -> Account:
    """A new password; every session of the operator ends. The account stops following DASHBOARD_PASSWORD."""
    password_hash = hash_password(_check_password(password))
    with db.session() as session:
        row = operator_row(session, name)
        row.password_hash = password_hash
        row.password_from_env = False
        row.session_version += 1
        session.flush()
        return Account.of(row)


def set_role(db: Database, name: str, role: str) -> Account:
    role = _check_role(role)
    with db.session() as session:
        row = operator_row(session, name)
        if row.role != role:
            row.role = role
            row.session_version += 1  # a session must not keep powers the operator lost
        session.flush()
        return Account.of(row)


def disable(db: Database, name: str, now: dt.datetime | None = None) -> Account:
    """Block login and API access: sessions end, API tokens are revoked. Idempotent."""
    now = now or utcnow()
    with db.session() as session:
        row = operator_row(session, name)
        if row.active:
            row.active = False
            row.session_version += 1
        session.execute(update(ApiToken).where(ApiToken.operator_id == row.id, ApiToken.revoked_at.is_(None))
                        .values(revoked_at=now))
        session.flush()
        return Account.of(row)


def enable(db: Database, name: str) -> Account:
    """Allow login again (tokens revoked by ``disable`` stay revoked: issue new ones)."""
    with db.session() as session:
        row = operator_row(session, name)
        row.active = True
        session.flush()
        return Account.of(row)


def operator_exists_or_raise(db: Database, name: str) -> None:
    """UnknownOperator unless ``name`` exists (lets a caller fail before asking for a password)."""
    if get(db, name) is None:
        raise UnknownOperator(f"unknown operator {normalize_name(name)!r}")
