"""The store stage: keep the synthesized voice note (local disk or GCS) and get the URL Twilio fetches."""
from __future__ import annotations

from app.audio.formats import suffix_for_mime
from app.pipeline.context import TurnContext


def run(ctx: TurnContext) -> None:
    if ctx.decided or ctx.reply_kind != "audio" or not ctx.audio_bytes:
        return
    try:
        stored = ctx.services.storage.save(
            ctx.audio_bytes,
            ctx.audio_content_type,
            suffix_for_mime(ctx.audio_content_type) or ".ogg",
            # The simulator's page is served by this app: a relative URL plays without PUBLIC_BASE_URL.
            base_url="" if ctx.user.channel == "simulator" else ctx.services.public_base_url(),
        )
    except Exception as exc:  # noqa: BLE001 - storage trouble: answer by text instead
        ctx.services.provider_health.error("storage", f"upload failed: {type(exc).__name__}")
        ctx.log.warning("audio storage failed (%s); answering by text", type(exc).__name__)
        ctx.reply_kind = "text"
        return
    ctx.services.provider_health.ok("storage")
    ctx.audio_url = stored.url
