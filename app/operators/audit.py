"""The audit trail of operator actions (``operator_actions``).

``record`` writes one row: who (an ``Account``, or a plain actor name such as ``"cli"`` for
the command line), what (``action``: a short snake_case word; the usual ones are the
constants below), to which user (``user_id``, optional) and a JSON ``detail``. The
operator's name is copied into the row so the record stays readable whatever happens to
the account later. Never put secrets (passwords, tokens) in ``detail``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re

from sqlalchemy import select

from app.db import Database, utcnow
from app.models import OperatorAction
from app.operators.accounts import Account

REPLY, CLOSE, TAKE_OVER, RETRY, EXPORT, LOGIN = "reply", "close", "take_over", "retry", "export", "login"
LOGOUT = "logout"
OPERATOR_CREATE, OPERATOR_DISABLE, OPERATOR_ENABLE = "operator_create", "operator_disable", "operator_enable"
PASSWORD_CHANGE, SESSIONS_REVOKE = "password_change", "sessions_revoke"
TOKEN_ISSUE, TOKEN_REVOKE = "token_issue", "token_revoke"

ACTION_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclasses.dataclass(frozen=True)
class ActionRecord:
    id: int
    operator_id: int | None
    operator_name: str
    action: str
    user_id: int | None
    detail: dict | list | str | None
    created_at: dt.datetime


def record(db: Database, operator: Account | str, action: str, user_id: int | None = None,
           detail: dict | list | str | None = None, now: dt.datetime | None = None) -> ActionRecord:
    """Append one action to the trail and return it."""
    if not ACTION_PATTERN.fullmatch(action or ""):
        raise ValueError(f"invalid audit action {action!r}: a snake_case word of at most 32 characters")
    if isinstance(operator, Account):
        operator_id, operator_name = operator.id, operator.name
    else:
        operator_id, operator_name = None, str(operator)[:64]
    with db.session() as session:
        row = OperatorAction(operator_id=operator_id, operator_name=operator_name, action=action,
                             user_id=user_id, detail=detail, created_at=now or utcnow())
        session.add(row)
        session.flush()
        return _snapshot(row)


def recent(db: Database, limit: int = 100, user_id: int | None = None,
           operator_name: str | None = None) -> list[ActionRecord]:
    """The newest actions first, optionally only those about one user or by one operator."""
    query = select(OperatorAction).order_by(OperatorAction.created_at.desc(), OperatorAction.id.desc()).limit(limit)
    if user_id is not None:
        query = query.where(OperatorAction.user_id == user_id)
    if operator_name is not None:
        query = query.where(OperatorAction.operator_name == operator_name)
    with db.session() as session:
        return [_snapshot(row) for row in session.scalars(query)]


def _snapshot(row: OperatorAction) -> ActionRecord:
    return ActionRecord(id=row.id, operator_id=row.operator_id, operator_name=row.operator_name, action=row.action,
                        user_id=row.user_id, detail=row.detail, created_at=row.created_at)
