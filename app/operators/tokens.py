"""API tokens: bearer credentials for scripts and integrations, one operator each.

A token is ``edt_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits). It is
shown once, by ``issue``; the database keeps only its SHA-256 and its first
``PREFIX_LENGTH`` characters (``edt_`` + 8 random characters, 48 bits: enough to tell
tokens apart in a list, far too few to guess the other ~208 bits).

Why a fast hash and not argon2 as for passwords: slow hashes exist to make guessing a
low-entropy secret expensive. Guessing a 256-bit random value is hopeless at any speed,
so a stolen ``api_tokens`` table gives nothing away, and a fast hash lets every API request
find its token by an indexed equality lookup instead of an argon2 run per request.
The lookup is by hash, so its timing says nothing about how close a guess was.

``authenticate`` accepts a token only while it is not revoked and its operator is active
(``accounts.disable`` also revokes the tokens). ``last_used_at`` is written at most once a
minute per token, by a conditional UPDATE, so busy clients do not turn every read into a write.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets

from sqlalchemy import or_, select, update

from app.db import Database, utcnow
from app.models import ApiToken, Operator
from app.operators.accounts import Account, OperatorError, operator_row

TOKEN_PREFIX = "edt_"
PREFIX_LENGTH = len(TOKEN_PREFIX) + 8
_TOKEN_LENGTH = len(TOKEN_PREFIX) + 43
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    id: int
    prefix: str
    token: str  # the plaintext: show it once, never store or log it

    def __repr__(self) -> str:  # keep the secret out of tracebacks and debug logs
        return f"IssuedToken(id={self.id}, prefix={self.prefix!r})"


@dataclasses.dataclass(frozen=True)
class TokenInfo:
    id: int
    operator_name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(db: Database, operator: str | Account) -> IssuedToken:
    """A new token for an active operator (name or Account); the plaintext is in the result only."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    name = operator.name if isinstance(operator, Account) else operator
    with db.session() as session:
        operator = operator_row(session, name)
        if not operator.active:
            raise OperatorError(f"operator {operator.name!r} is disabled")
        row = ApiToken(operator_id=operator.id, token_hash=hash_token(token), prefix=token[:PREFIX_LENGTH])
        session.add(row)
        session.flush()
        return IssuedToken(id=row.id, prefix=row.prefix, token=token)


def authenticate(db: Database, token: str | None, now: dt.datetime | None = None) -> Account | None:
    """The active operator a live token belongs to, or None."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) != _TOKEN_LENGTH:
        return None  # not one of ours: no need to touch the database
    now = now or utcnow()
    with db.session() as session:
        found = session.execute(
            select(ApiToken.id, Operator)
            .join(Operator, Operator.id == ApiToken.operator_id)
            .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None),
                   Operator.active.is_(True))
        ).first()
        if found is None:
            return None
        token_id, operator = found
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id,
                   or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_RESOLUTION))
            .values(last_used_at=now)
        )
        return Account.of(operator)


def list_tokens(db: Database, operator_name: str) -> list[TokenInfo]:
    with db.session() as session:
        operator = operator_row(session, operator_name)
        rows = session.scalars(select(ApiToken).where(ApiToken.operator_id == operator.id)
                               .order_by(ApiToken.created_at, ApiToken.id))
        return [TokenInfo(id=r.id, operator_name=operator.name, prefix=r.prefix, created_at=r.created_at,
                          last_used_at=r.last_used_at, revoked_at=r.revoked_at) for r in rows]


def revoke(db: Database, token_id: int, now: dt.datetime | None = None) -> bool:
    """Revoke one token by id; False when there is no such live token."""
    with db.session() as session:
        result = session.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                                 .values(revoked_at=now or utcnow()))
        return result.rowcount == 1


def revoke_by_prefix(db: Database, operator_name: str, prefix: str, now: dt.datetime | None = None) -> TokenInfo:
    """Revoke the operator's live token shown as ``prefix`` (as ``list_tokens`` shows it)."""
    with db.session() as session:
        operator = operator_row(session, operator_name)
        rows = list(session.scalars(select(ApiToken).where(
            ApiToken.operator_id == operator.id, ApiToken.prefix == prefix.strip(), ApiToken.revoked_at.is_(None))))
        if not rows:
            raise OperatorError(f"operator {operator.name!r} has no active token with prefix {prefix.strip()!r}")
        if len(rows) > 1:  # 48 random bits: practically never, but never revoke the wrong one
            raise OperatorError(f"several tokens share prefix {prefix.strip()!r}; revoke them by id")
        row = rows[0]
        row.revoked_at = now or utcnow()
        session.flush()
        return TokenInfo(id=row.id, operator_name=operator.name, prefix=row.prefix, created_at=row.created_at,
                         last_used_at=row.last_used_at, revoked_at=row.revoked_at)
