"""Operators: the people behind the dashboard — accounts, API tokens, audit trail, login limits, CLI.

Modules: ``accounts`` (argon2 passwords, disable/enable, session versions), ``tokens``
(API bearer tokens, SHA-256 stored), ``audit`` (``operator_actions``), ``login_limits``
(database-counted throttle), ``login`` (what the web layer calls), ``cli``
(``flask --app main operators …``). Every function takes the ``Database`` explicitly.

The web layer needs only these names, re-exported here.
"""
from app.operators.login import (
    BOOTSTRAP_NAME,
    LoginResult,
    authenticate_login,
    bootstrap_admin,
    load_session_operator,
    session_payload,
)

__all__ = ["BOOTSTRAP_NAME", "LoginResult", "authenticate_login", "bootstrap_admin", "load_session_operator",
           "session_payload"]
