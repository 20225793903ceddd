"""The public status page (``/``) and the system JSON endpoints of the dashboard.

- ``GET /``: a card per part (database, Twilio, OpenAI, ElevenLabs, storage, realtime) in one
  of four states -- configured (set up, not used yet), healthy (last call succeeded),
  degraded (last call failed), offline (not configured / unreachable) -- with the last error
  and its time, the webhook URLs to paste into Twilio and the offline-mode banner. Public,
  so it shows no personal data: provider errors are redacted when recorded and again here.
- ``GET /upgrade-webhook`` (public): which webhook URLs to configure in Twilio.
- ``GET /system/advanced-status`` (login): states, versions, queue depth, a configuration
  summary with booleans and model names only, and the media storage's status (backend,
  files, retention) -- never a key, token or password.
- ``GET /system/realtime-status`` (login): the realtime voice path -- configured or not, model,
  voice, today's sessions, successes, fallbacks by reason, p50/p95 latency, the last error;
  the status page's realtime card polls it (static/js/realtime.js) when an operator is logged in.
- ``POST /test/realtime-audio`` (login, CSRF): a generated phrase through a real Realtime
  session (nothing is sent to anyone), or why it cannot run.
"""
from __future__ import annotations

import importlib.metadata
import platform
import time

from flask import current_app, jsonify, render_template, request

from app.config import VERSION
from app.pipeline import realtime
from app.redaction import mask_phone, redact
from app.services import current_services
from app.web.auth import admin_only, json_endpoint, public
from app.web.dashboard.blueprint import bp

STATE_LABELS = {"configured": "Configurado", "healthy": "Saudável", "degraded": "Degradado", "offline": "Offline"}
LIBRARIES = ("flask", "werkzeug", "sqlalchemy", "alembic", "flask-wtf", "twilio", "openai", "elevenlabs",
             "google-cloud-storage", "numpy", "bm25s", "gunicorn", "psycopg2-binary", "websockets")
REALTIME_REASON = ("Sem OPENAI_API_KEY: a voz em tempo real está desligada; os áudios recebidos em "
                   "/webhook/whatsapp/realtime são respondidos pelo fluxo principal.")

WEBHOOKS = (
    {"path": "/webhook/whatsapp", "method": "POST", "status": "recommended",
     "twilio_field": "A MESSAGE COMES IN",
     "description": "Mensagens recebidas no WhatsApp (texto, áudio, mídia)."},
    # Every message we send names this URL itself (Twilio's per-message StatusCallback), so
    # there is nothing to paste; the sender's own field is optional and the message's wins.
    {"path": "/webhook/whatsapp/status", "method": "POST", "status": "automatic",
     "twilio_field": "STATUS CALLBACK URL",
     "description": "Status de entrega das nossas respostas (enviada, entregue, lida, falhou). "
                    "Não precisa colar: o app informa este endereço em cada mensagem que envia."},
    {"path": "/webhook/whatsapp/realtime", "method": "POST", "status": "optional",
     "twilio_field": "A MESSAGE COMES IN",
     "description": "Alternativa a /webhook/whatsapp: os áudios são respondidos por voz em tempo real "
                    "(OpenAI Realtime); textos seguem o fluxo principal."},
    {"path": "/webhook/whatsapp/v2", "method": "POST", "status": "deprecated",
     "twilio_field": None,
     "description": "Endereço de uma versão antiga, ainda atendido (com aviso de obsoleto). "
                    "Troque por /webhook/whatsapp."},
)


def base_url() -> str:
    """The public origin: PUBLIC_BASE_URL, else what Twilio called, else this request's origin."""
    return (current_services().public_base_url() or request.host_url).rstrip("/")


def webhooks() -> list[dict]:
    base = base_url()
    served = {rule.rule for rule in current_app.url_map.iter_rules() if "POST" in rule.methods}
    realtime_on = current_services().realtime is not None
    hooks = []
    for hook in WEBHOOKS:
        entry = dict(hook, url=base + hook["path"], served=hook["path"] in served)
        if hook["path"] == "/webhook/whatsapp/realtime":
            # Served either way; without a key its voice notes go through the main pipeline.
            entry["realtime_voice"] = realtime_on
        hooks.append(entry)
    return hooks


def _provider_state(snapshot: dict, name: str, configured: bool) -> tuple[str, dict]:
    entry = snapshot.get(name) or {}
    if not configured:
        return "offline", entry
    return entry.get("state") or "configured", entry


def components() -> list[dict]:
    """One dict per part, for the status cards and /system/advanced-status."""
    services = current_services()
    settings = services.settings
    try:
        snapshot = services.provider_health.snapshot()
        database_ok = True
    except Exception:  # noqa: BLE001 - the database is down: every card must still render
        current_app.logger.warning("status: provider snapshot failed", exc_info=True)
        snapshot, database_ok = {}, False
    database_ok = database_ok and services.db.ping()
    backend = services.db.engine.dialect.name
    cards = [{
        "key": "database", "title": "Banco de dados", "icon": "database",
        "state": "healthy" if database_ok else "offline", "configured": True,
        "detail": {"postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(backend, backend)
        + ("" if database_ok else " — sem resposta"),
    }]

    def provider(key, title, icon_name, configured, detail_on, detail_off):
        state, entry = _provider_state(snapshot, key, configured)
        cards.append({
            "key": key, "title": title, "icon": icon_name, "state": state, "configured": configured,
            "detail": detail_on if configured else detail_off,
            "last_ok_at": entry.get("last_ok_at"), "last_error_at": entry.get("last_error_at"),
            # Recorded redacted already; redacting again costs nothing and guards old rows.
            "last_error": redact(entry["last_error"])[:300] if entry.get("last_error") else None,
        })

    configured = settings.providers_configured()
    provider("twilio", "Twilio (WhatsApp)", "message-circle", configured["twilio"],
             "Envio e recebimento pelo WhatsApp.",
             "Não configurado: as respostas ficam só registradas aqui.")
    provider("openai", "OpenAI", "cpu", configured["openai"],
             f"Modelo {settings.openai_model}; transcrição {settings.openai_transcribe_model}.",
             "Modo offline: respostas vindas só da base de conhecimento.")
    provider("elevenlabs", "ElevenLabs (voz)", "mic", configured["elevenlabs"],
             "Respostas em áudio com a voz do Endrigo.",
             "Sem chave: as respostas saem em texto.")
    provider("storage", "Armazenamento de áudio", "hard-drive", True,
             "Google Cloud Storage." if settings.media_backend == "gcs" else "Arquivos locais (instance/media).",
             "")
    provider("realtime", "Voz em tempo real", "radio", services.realtime is not None,
             f"Modelo {settings.openai_realtime_model}; voz "
             + (settings.openai_realtime_voice if settings.realtime_voice == "openai" else "clonada (ElevenLabs)")
             + "; áudios de /webhook/whatsapp/realtime.",
             "Sem chave da OpenAI: os áudios seguem o fluxo principal.")
    for card in cards:
        card["label"] = STATE_LABELS[card["state"]]
    return cards


KNOWLEDGE_FEATURE = {
    "hybrid": ("book-open", "Base de conhecimento", "Busca híbrida (semântica + palavras-chave) nos documentos."),
    "bm25": ("book-open", "Base de conhecimento",
             "Busca por palavras-chave (BM25) nos documentos; a busca semântica liga com a chave da OpenAI "
             "e os vetores de create_embeddings.py."),
}
FEATURES = (
    ("message-square", "Atendimento no WhatsApp",
     "Responde em português, na persona do Endrigo, com base nos documentos da empresa."),
    ("mic", "Mensagens de voz",
     "Transcreve os áudios recebidos e pode responder em áudio com a voz clonada do Endrigo."),
    KNOWLEDGE_FEATURE["hybrid"],
    ("user-plus", "Captura de leads", "Registra nome, interesse e contato de quem quer uma proposta."),
    ("users", "Atendimento humano", "Passa a conversa para a equipe; o robô fica em silêncio até ser liberado."),
    ("terminal", "Simulador", "Converse com o robô aqui no painel, sem WhatsApp e sem chaves de API."),
)


def features(knowledge) -> list[tuple[str, str, str]]:
    """The feature list as it is right now: "hybrid" search only when the knowledge base has
    embeddings loaded and can embed queries (``KnowledgeBase.mode``), else BM25."""
    try:
        mode = knowledge.mode
    except Exception:  # noqa: BLE001 - an unreadable knowledge base must not break the status page
        current_app.logger.warning("status: knowledge base mode unavailable", exc_info=True)
        mode = "bm25"
    current = KNOWLEDGE_FEATURE.get(mode, KNOWLEDGE_FEATURE["bm25"])
    return [current if feature is KNOWLEDGE_FEATURE["hybrid"] else feature for feature in FEATURES]


@bp.get("/")
@public
def status():
    services = current_services()
    return render_template(
        "status.html", components=components(), webhooks=webhooks(), features=features(services.knowledge),
        version=VERSION, uptime_seconds=int(time.time() - services.started_at),
        public_base_url_set=bool(services.settings.public_base_url),
    )


@bp.get("/upgrade-webhook")
@public
@json_endpoint
def upgrade_webhook():
    hooks = webhooks()
    return jsonify(
        recommended=next(h for h in hooks if h["path"] == "/webhook/whatsapp"),
        status_callback=next(h for h in hooks if h["path"] == "/webhook/whatsapp/status"),
        realtime=next(h for h in hooks if h["path"] == "/webhook/whatsapp/realtime"),
        webhooks=hooks,
        base_url_source="PUBLIC_BASE_URL" if current_services().settings.public_base_url else "request",
        instructions=("No Console da Twilio (Messaging > WhatsApp senders ou Sandbox), cole a URL "
                      "recomendada em 'A message comes in' (HTTP POST). A URL de status não precisa ser colada: "
                      "o app a informa em cada mensagem que envia (StatusCallback). Para responder áudios "
                      "por voz em tempo real, use a URL de tempo real no lugar da recomendada."),
    )


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def config_summary(settings) -> dict:
    """What is configured, as booleans and non-secret names. Never a key, token or password."""
    return {
        "mode": "offline" if settings.offline else "online",
        "public_base_url": settings.public_base_url,
        "twilio": {
            "configured": settings.twilio_configured,
            "account_sid_set": bool(settings.twilio_account_sid),
            "auth_token_set": bool(settings.twilio_auth_token),
            "phone_number": mask_phone(settings.twilio_phone_number) if settings.twilio_phone_number else None,
            "validate_signature": settings.twilio_validate_signature,
            "custom_api_base_url": bool(settings.twilio_api_base_url),
        },
        "openai": {
            "configured": settings.openai_configured,
            "custom_base_url": bool(settings.openai_base_url),
            "model": settings.openai_model,
            "transcribe_model": settings.openai_transcribe_model,
            "embedding_model": settings.openai_embedding_model,
            "realtime_model": settings.openai_realtime_model,
            "realtime_voice": settings.openai_realtime_voice,
            "realtime_speaker": settings.realtime_voice,
            "realtime_timeout_seconds": settings.realtime_timeout_seconds,
            "custom_realtime_url": bool(settings.openai_realtime_url),
        },
        "elevenlabs": {
            "configured": settings.elevenlabs_configured,
            "custom_base_url": bool(settings.elevenlabs_base_url),
            "voice_id": settings.elevenlabs_voice_id,
            "model_id": settings.elevenlabs_model_id,
        },
        "storage": {
            "backend": settings.media_backend,
            "gcs_bucket_set": bool(settings.gcs_bucket_name),
            "gcs_public_bucket": settings.gcs_public_bucket,
            "emulator": bool(settings.storage_emulator_host),
            "url_ttl_seconds": settings.media_url_ttl_seconds,
            "retention_days": settings.media_retention_days,
        },
        "inbox": {
            "workers": settings.workers,
            "coalesce_window_seconds": settings.coalesce_window_seconds,
            "turn_budget_seconds": settings.turn_budget_seconds,
            "handoff_expiry_hours": settings.handoff_expiry_hours,
        },
        "dashboard_password_set": bool(settings.dashboard_password),
        "secret_key_source": "SECRET_KEY" if settings.secret_key else "instance file",
        "assistant_id_set_but_ignored": bool(settings.assistant_id),
    }


def _storage_status(services) -> dict:
    try:
        return services.storage.status()
    except Exception as exc:  # noqa: BLE001 - the rest of the page must still answer
        return {"error": type(exc).__name__}


@bp.get("/system/advanced-status")
@json_endpoint
@admin_only
def advanced_status():
    services = current_services()
    try:
        depth = services.inbox.depth()
    except Exception:  # noqa: BLE001 - report the rest even when the database is down
        depth = None
    return jsonify(
        version=VERSION,
        python=platform.python_version(),
        platform=platform.platform(terse=True),
        libraries={name: _version(name) for name in LIBRARIES},
        uptime_seconds=round(time.time() - services.started_at, 1),
        database={"backend": services.db.engine.dialect.name},
        queue={"depth": depth},
        components={c["key"]: {k: v for k, v in c.items() if k not in ("icon", "title")} for c in components()},
        config=config_summary(services.settings),
        storage=_storage_status(services),
        webhooks=webhooks(),
    )


@bp.get("/system/realtime-status")
@json_endpoint
@admin_only
def realtime_status():
    services = current_services()
    settings = services.settings
    configured = services.realtime is not None
    body = {
        "configured": configured, "available": configured, "reason": None if configured else REALTIME_REASON,
        "model": settings.openai_realtime_model,
        "voice": settings.openai_realtime_voice if settings.realtime_voice == "openai" else "elevenlabs",
        "speaker": settings.realtime_voice, "timeout_seconds": settings.realtime_timeout_seconds,
        "custom_url": bool(settings.openai_realtime_url),
        "webhook": base_url() + "/webhook/whatsapp/realtime",
    }
    try:
        body.update(realtime.session_stats(services.db))
    except Exception:  # noqa: BLE001 - the database is down: say so, still answer JSON
        current_app.logger.warning("realtime status: stats failed", exc_info=True)
        body["stats_error"] = "database unavailable"
    return jsonify(body)


@bp.post("/test/realtime-audio")
@json_endpoint
@admin_only
def realtime_audio_test():
    result = realtime.probe_session(current_services())
    if result.get("error") == "not_configured":
        return jsonify(result), 503
    return jsonify(result), 200 if result["ok"] else 502
