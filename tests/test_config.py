"""One configuration everywhere: .env as the app reads it, in every entry point; .env.example
complete both ways; the start-up report.

The entry points run as real subprocesses (alembic, ``python -m app.ops.migrate``, the
Flask CLI, gunicorn's config module) in a temporary folder, with the variables under test
removed from their environment, so only the .env file can supply them.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.config import ConfigError, Settings, listen_address, load_env_file, normalize_whatsapp_number
from app.ops.startup import local_base_url, startup_report

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(sys.executable).parent
def _alembic_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()


HEAD = _alembic_head()  # the newest revision in migrations/versions


# -- which variables the code reads ----------------------------------------------------------
class _RecordingEnv(dict):
    """An empty environment that remembers every name asked for."""

    def __init__(self):
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)


# Process environment only: ``request.environ`` (WSGI keys such as RAW_URI) is not matched.
_ENV_READ = [
    re.compile(r"""(?<![\w.])(?:os\.environ|environ|os\.getenv|getenv|env|_env)(?:\.get|\.setdefault|\.pop)?"""
               r"""\(\s*["']([A-Z][A-Z0-9_]+)["']"""),
    re.compile(r"""(?<![\w.])os\.environ\[\s*["']([A-Z][A-Z0-9_]+)["']\s*\]"""),
    re.compile(r"""\(\s*env,\s*["']([A-Z][A-Z0-9_]+)["']"""),  # _str(env, "NAME") and friends
]


def variables_read_by_code() -> set[str]:
    # The Settings field -> variable mapping, by asking from_env what it reads ...
    env = _RecordingEnv()
    Settings.from_env(env=env)
    listen_address(env)
    names = set(env.asked)
    # ... and every literal os.environ / getenv / env.get use in the code the app runs.
    files = [*sorted((ROOT / "app").rglob("*.py")), ROOT / "main.py", ROOT / "gunicorn.conf.py",
             ROOT / "migrations" / "env.py"]
    for file in files:
        source = file.read_text()
        for pattern in _ENV_READ:
            names |= set(pattern.findall(source))
    return names


def variables_in_env_example() -> set[str]:
    # Active lines (NAME=default) and commented examples (# NAME=value) both document a name.
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))


def test_env_example_lists_every_variable_the_code_reads_and_no_other():
    read, documented = variables_read_by_code(), variables_in_env_example()
    assert {"DATABASE_URL", "OPENAI_API_KEY", "ENV_FILE", "WEB_CONCURRENCY", "GUNICORN_THREADS", "HOST", "PORT",
            "BIND", "ACCESS_LOG", "STORAGE_EMULATOR_HOST"} <= read
    assert not read - documented, f"read by the code but missing from .env.example: {sorted(read - documented)}"
    assert not documented - read, f"in .env.example but read by nothing: {sorted(documented - read)}"


# -- load_env_file ---------------------------------------------------------------------------------
def test_load_env_file_fills_in_but_never_overrides_the_environment(tmp_path):
    file = tmp_path / "custom.env"
    file.write_text("DATABASE_URL=sqlite:///from-file.db\nLOG_LEVEL=DEBUG\nEMPTY=\n")
    environ = {"LOG_LEVEL": "WARNING"}
    assert load_env_file(file, environ=environ) == file
    assert environ == {"LOG_LEVEL": "WARNING", "DATABASE_URL": "sqlite:///from-file.db", "EMPTY": ""}


def test_env_file_variable_names_the_file_and_must_exist(tmp_path):
    file = tmp_path / "elsewhere.env"
    file.write_text("PORT=8123\n")
    environ = {"ENV_FILE": str(file)}
    assert load_env_file(environ=environ) == file and environ["PORT"] == "8123"
    with pytest.raises(ConfigError, match="ENV_FILE"):
        load_env_file(environ={"ENV_FILE": str(tmp_path / "missing.env")})


def test_the_nearest_env_from_the_current_directory_upwards_is_read(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("PORT=8124\n")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "deep" / "er")
    environ: dict = {}
    assert load_env_file(environ=environ) == tmp_path / ".env" and environ == {"PORT": "8124"}


# -- the entry points, as subprocesses ---------------------------------------------------------
def _clean_env(**extra) -> dict:
    """This process's environment without any variable the code reads (nor Flask's), plus ``extra``."""
    drop = variables_read_by_code() | {"FLASK_APP", "FLASK_SKIP_DOTENV", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def _run(args, cwd, env, timeout=120) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _revision(database_url: str) -> str | None:
    engine = create_engine(Settings.from_env(env={"DATABASE_URL": database_url}).database_url)
    try:
        with engine.connect() as conn:
            if not engine.dialect.has_table(conn, "alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def test_alembic_by_hand_migrates_the_database_named_in_dot_env(tmp_path, database_url):
    """`alembic upgrade head` with DATABASE_URL only in ./.env migrates THAT database."""
    (tmp_path / ".env").write_text(f"DATABASE_URL={database_url}\n")
    assert _revision(database_url) is None
    _run([str(BIN / "alembic"), "-c", str(ROOT / "alembic.ini"), "upgrade", "head"], tmp_path, _clean_env())
    assert _revision(database_url) == HEAD


def test_the_migrate_command_reads_the_file_env_file_names(tmp_path, database_url):
    """`python -m app.ops.migrate` (make migrate) from a folder with no .env, ENV_FILE naming one."""
    env_file = tmp_path / "conf" / "endrigo.env"
    env_file.parent.mkdir()
    env_file.write_text(f"DATABASE_URL={database_url}\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = _run([PYTHON, "-m", "app.ops.migrate"], workdir,
                  _clean_env(ENV_FILE=str(env_file), PYTHONPATH=str(ROOT)))
    assert _revision(database_url) == HEAD
    assert f"revision {HEAD} (head)" in result.stderr and str(env_file) in result.stderr


def test_the_migrate_command_hides_the_database_password(tmp_path):
    env_file = tmp_path / "bad.env"
    # Nothing listens on port 9: the connection fails, and the error must not show the password.
    env_file.write_text("DATABASE_URL=postgresql://bot:pa55-w0rd-secret@127.0.0.1:9/endrigo\n")
    result = subprocess.run([PYTHON, "-m", "app.ops.migrate"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, env=_clean_env(ENV_FILE=str(env_file), PYTHONPATH=str(ROOT)), check=False)
    assert result.returncode == 1 and "migration failed" in result.stderr
    assert "pa55-w0rd-secret" not in result.stdout + result.stderr


def test_the_flask_cli_reads_dot_env_like_the_app(tmp_path):
    """`flask --app main …` builds the app from the same .env (here named by ENV_FILE)."""
    database = tmp_path / "cli.db"
    env_file = tmp_path / "cli.env"
    env_file.write_text(f"DATABASE_URL=sqlite:///{database}\nINBOX_ENABLED=false\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = _run([str(BIN / "flask"), "--app", "main", "routes"], workdir,
                  _clean_env(ENV_FILE=str(env_file), PYTHONPATH=str(ROOT)))
    assert "/webhook/whatsapp" in result.stdout
    assert _revision(f"sqlite:///{database}") == HEAD  # create_app migrated the .env's database
    assert "inbox paused (INBOX_ENABLED=false)" in result.stderr  # and read its other settings


def _gunicorn_settings(cwd: Path, **env) -> dict:
    code = ("import json, runpy; ns = runpy.run_path('gunicorn.conf.py'); "
            "print(json.dumps({k: ns[k] for k in ('bind', 'workers', 'threads', 'accesslog')}))")
    result = _run([PYTHON, "-c", code], ROOT, _clean_env(**env))
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_gunicorn_conf_takes_its_settings_from_dot_env(tmp_path):
    env_file = tmp_path / "gunicorn.env"
    env_file.write_text("WEB_CONCURRENCY=3\nGUNICORN_THREADS=5\nBIND=127.0.0.1:8123\nACCESS_LOG=true\n")
    assert _gunicorn_settings(tmp_path, ENV_FILE=str(env_file)) == {
        "bind": "127.0.0.1:8123", "workers": 3, "threads": 5, "accesslog": "-"}
    # The real environment wins over the file.
    assert _gunicorn_settings(tmp_path, ENV_FILE=str(env_file), WEB_CONCURRENCY="7")["workers"] == 7


def test_gunicorn_conf_treats_the_empty_values_of_a_copied_example_as_defaults(tmp_path):
    env_file = tmp_path / "copied.env"
    env_file.write_text("WEB_CONCURRENCY=\nGUNICORN_THREADS=\nBIND=\nHOST=\nPORT=5055\nACCESS_LOG=\n")
    assert _gunicorn_settings(tmp_path, ENV_FILE=str(env_file)) == {
        "bind": "0.0.0.0:5055", "workers": 2, "threads": 8, "accesslog": None}


# -- the start-up report ---------------------------------------------------------------------
def _report(caplog, make_app, **overrides) -> list[logging.LogRecord]:
    with caplog.at_level(logging.INFO, logger="app.ops.startup"):
        make_app(start_workers=False, **overrides)
    return [r for r in caplog.records if r.name == "app.ops.startup"]


def test_report_of_a_bare_install_says_what_is_offline_locked_and_where_to_point_twilio(make_app, caplog):
    records = _report(caplog, make_app, twilio_account_sid=None, twilio_auth_token=None, public_base_url=None)
    lines = [r.getMessage() for r in records]
    text_ = "\n".join(lines)
    assert all(line.startswith("start-up: ") for line in lines)
    assert "offline: OpenAI (OPENAI_API_KEY unset) - answers come from the knowledge base alone" in text_
    assert "offline: ElevenLabs (ELEVENLABS_API_KEY unset) - replies are text only" in text_
    assert "offline: Twilio (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN unset) - no WhatsApp sending" in text_
    assert "storage: local files in" in text_
    assert "dashboard locked: set DASHBOARD_PASSWORD" in text_
    assert "inbox paused (INBOX_ENABLED=false)" in text_
    assert ("PUBLIC_BASE_URL is unset" in text_ and "http://127.0.0.1:5000/webhook/whatsapp and "
            "http://127.0.0.1:5000/webhook/whatsapp/status" in text_)
    locked = next(r for r in records if "dashboard locked" in r.getMessage())
    assert locked.levelno == logging.WARNING


def test_report_of_a_live_install_gives_the_twilio_urls_and_no_secret(make_app, caplog, twilio_fake):
    secrets = {"openai": "sk-live-0123456789abcdef", "eleven": "el-live-0123456789abcdef",
               "password": "operator-pass-42", "gcs_key": "/secret/path/key.json"}
    records = _report(caplog, make_app, openai_api_key=secrets["openai"], openai_base_url="http://127.0.0.1:9/v1",
                      elevenlabs_api_key=secrets["eleven"], dashboard_password=secrets["password"],
                      public_base_url="https://bot.example.com/")
    text_ = "\n".join(r.getMessage() for r in records)
    assert "Twilio webhook, 'A message comes in' (POST): https://bot.example.com/webhook/whatsapp" in text_
    assert "Twilio status callback URL (POST): https://bot.example.com/webhook/whatsapp/status" in text_
    assert "online: OpenAI (answers gpt-5.4-mini" in text_ and "online: ElevenLabs" in text_
    assert "online: Twilio" in text_ and "dashboard: operator login at /login" in text_
    assert "offline" not in text_ and "locked" not in text_ and "PUBLIC_BASE_URL is unset" not in text_
    everything = caplog.text + text_
    for secret in (*secrets.values(), twilio_fake.auth_token, "test-secret-key-123456"):
        assert secret not in everything
    assert "+14155238886" not in everything


def test_report_keeps_the_security_warnings(make_app, caplog):
    records = _report(caplog, make_app, twilio_validate_signature=False, assistant_id="asst_123")
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any("TWILIO_VALIDATE_SIGNATURE=false" in w for w in warnings)
    assert any("Assistants API was shut down on 2026-08-26" in w for w in warnings)


@pytest.mark.parametrize("env, url", [
    ({}, "http://127.0.0.1:5000"),
    ({"HOST": "0.0.0.0", "PORT": "8000"}, "http://127.0.0.1:8000"),
    ({"BIND": "10.0.0.5:9000", "PORT": "1"}, "http://10.0.0.5:9000"),
    ({"BIND": "unix:/run/endrigo.sock"}, "(a socket: unix:/run/endrigo.sock)"),
])
def test_local_base_url_follows_the_server_address(env, url):
    assert local_base_url(env) == url


def test_report_uses_the_server_address_for_the_local_urls():
    lines = startup_report(Settings.from_env(env={}), env={"PORT": "8080"})
    note = next(line for _, line in lines if "PUBLIC_BASE_URL is unset" in line)
    assert "http://127.0.0.1:8080/webhook/whatsapp and http://127.0.0.1:8080/webhook/whatsapp/status" in note


# ---- settings: boot normalisation, bad values, start-up warnings -----------------------------------


@pytest.mark.parametrize("raw", ["14155238886", "+14155238886", "whatsapp:+14155238886", " +1 (415) 523-8886 "])
def test_phone_number_is_normalised_at_boot(raw):
    assert Settings.from_env(env={"TWILIO_PHONE_NUMBER": raw}).twilio_phone_number == "whatsapp:+14155238886"
    assert normalize_whatsapp_number(raw) == "whatsapp:+14155238886"


@pytest.mark.parametrize("raw", ["hello", "whatsapp:+", "+0123", "123"])
def test_a_value_that_is_not_a_phone_number_stops_start_up_naming_the_variable(raw):
    with pytest.raises(ConfigError, match="TWILIO_PHONE_NUMBER"):
        Settings.from_env(env={"TWILIO_PHONE_NUMBER": raw})


def test_other_bad_values_name_their_variable():
    with pytest.raises(ConfigError, match="WORKERS"):
        Settings.from_env(env={"WORKERS": "many"})
    with pytest.raises(ConfigError, match="MEDIA_BACKEND"):
        Settings.from_env(env={"MEDIA_BACKEND": "ftp"})
    with pytest.raises(ConfigError, match="GCS_BUCKET_NAME"):
        Settings.from_env(env={"MEDIA_BACKEND": "gcs"})


def test_postgres_urls_use_psycopg2():
    settings = Settings.from_env(env={"DATABASE_URL": "postgres://u:p@db.example.com/x"})
    assert settings.database_url == "postgresql+psycopg2://u:p@db.example.com/x"


def test_assistant_id_and_unsigned_webhooks_warn_at_start(make_app, caplog):
    with caplog.at_level(logging.WARNING):
        make_app(start_workers=False, assistant_id="asst_123", twilio_validate_signature=False)
    text = caplog.text
    assert "Assistants API was shut down on 2026-08-26" in text and "documents/persona.md" in text
    assert "TWILIO_VALIDATE_SIGNATURE=false" in text


def test_every_environment_variable_read_is_documented_in_env_example():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    read = set(re.findall(r'env(?:\.get)?\(\s*(?:env,\s*)?"([A-Z_]+)"', (root / "app/config.py").read_text()))
    read |= set(re.findall(r'_(?:str|int|float)\(env, "([A-Z_]+)"', (root / "app/config.py").read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (root / ".env.example").read_text(), re.M))
    assert read and read <= documented, f"undocumented: {sorted(read - documented)}"


def test_shared_keys_are_parsed_from_the_environment():
    settings = Settings.from_env(env={"TWILIO_WEBHOOK_SHARED_KEYS": " k_old=secret-one-abc , k.new-2=c2VjcmV0LXR3bw==,"})
    assert settings.twilio_webhook_shared_keys == (("k_old", "secret-one-abc"), ("k.new-2", "c2VjcmV0LXR3bw=="))
    assert Settings.from_env(env={}).twilio_webhook_shared_keys == ()
    assert Settings.from_env(env={}, twilio_webhook_shared_keys="a=12345678").twilio_webhook_shared_keys == \
        (("a", "12345678"),)


@pytest.mark.parametrize("raw", ["k1", "k1=secret-one-abc,k2", "=secret-one-abc", "k1=", "k1=short",
                                 "k1=secret-one-abc,k1=secret-two-abc", "k 1=secret-one-abc"])
def test_bad_shared_keys_stop_start_up_naming_the_variable_not_the_secret(raw):
    with pytest.raises(ConfigError, match="TWILIO_WEBHOOK_SHARED_KEYS") as err:
        Settings.from_env(env={"TWILIO_WEBHOOK_SHARED_KEYS": raw})
    assert "secret-one-abc" not in str(err.value) and "secret-two-abc" not in str(err.value)


def test_public_base_url_may_carry_a_mount_path_but_no_query():
    assert Settings.from_env(env={"PUBLIC_BASE_URL": "https://example.com/bot/"}).public_base_url == \
        "https://example.com/bot"
    assert Settings.from_env(env={"PUBLIC_BASE_URL": "https://bot.example.com/"}).public_base_url == \
        "https://bot.example.com"
    for bad in ("bot.example.com", "https://example.com/bot?x=1", "https://example.com/#top", "ftp://example.com"):
        with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
            Settings.from_env(env={"PUBLIC_BASE_URL": bad})


# -- the Makefile: .env's address wins unless make is told otherwise on its command line --------
def _make_listen(tmp_path, *make_args: str, env_file: str = "", environ: dict | None = None) -> tuple[str, str]:
    """(the address `make run` would bind, the environment prefix `make dev` would use), with
    ``env_file`` as the .env of the working folder."""
    import shlex
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    clean = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "BIND", "ENV_FILE", "MAKEFLAGS")}
    printed = subprocess.run(["make", "-s", "-n", "run", "dev", *make_args], cwd=ROOT, env=clean,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    run_line = next(line for line in printed.splitlines() if "gunicorn" in line)
    dev_line = next(line for line in printed.splitlines() if "main.py" in line)
    inner = re.search(r'--bind "\$\((.*)\)" main:app', run_line).group(1)
    inner = inner.replace(".venv/bin/python", shlex.quote(PYTHON))
    (tmp_path / ".env").write_text(env_file, encoding="utf-8")
    shell_env = dict(clean, PYTHONPATH=str(ROOT), **(environ or {}))
    bound = subprocess.run(["sh", "-c", inner], cwd=tmp_path, env=shell_env, capture_output=True, text=True,
                           timeout=60, check=True).stdout.strip()
    return bound, dev_line.split(".venv/bin/python")[0].strip()


def test_make_run_binds_what_dotenv_says_unless_given_on_the_command_line(tmp_path):
    assert _make_listen(tmp_path) == ("127.0.0.1:5000", "")
    assert _make_listen(tmp_path, env_file="PORT=6123\n")[0] == "127.0.0.1:6123"
    assert _make_listen(tmp_path, env_file="HOST=0.0.0.0\nPORT=6124\n")[0] == "0.0.0.0:6124"
    assert _make_listen(tmp_path, env_file="BIND=127.0.0.1:7001\nPORT=6125\n")[0] == "127.0.0.1:7001"
    # The real environment beats .env, as everywhere.
    assert _make_listen(tmp_path, env_file="PORT=6126\n", environ={"PORT": "6127"})[0] == "127.0.0.1:6127"
    # On make's command line: that wins, over BIND in .env too.
    bound, dev_env = _make_listen(tmp_path, "PORT=5099", env_file="BIND=127.0.0.1:7001\nHOST=127.0.0.1\n")
    assert bound == "127.0.0.1:5099" and dev_env == "PORT=5099 BIND="
