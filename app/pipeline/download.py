"""The download stage: fetch inbound voice notes from Twilio (allowed hosts only, size-capped).

Only audio is downloaded: other media get a polite notice and cost nothing. A refused
or failed download is a notice for the user, not an error for the turn.
"""
from __future__ import annotations

from app.channels.simulator.inbound import UPLOAD_SCHEME, SimulatorInputError, upload_path
from app.channels.twilio.media import MediaRefused, MediaTooLarge, download_media
from app.pipeline import notices
from app.pipeline.context import InboundItem, TurnContext


def run(ctx: TurnContext) -> None:
    if ctx.answer_text is not None:
        return
    for item in ctx.items:
        if not item.media_url:
            continue
        if item.kind != "audio":
            item.notice = notices.NOT_AUDIO
            continue
        if item.media_url.startswith(UPLOAD_SCHEME):
            _take_simulator_upload(ctx, item)
            continue
        try:
            media = download_media(item.media_url, ctx.settings, ctx.tmpdir)
        except MediaTooLarge:
            item.notice = notices.MEDIA_TOO_LARGE
            continue
        except MediaRefused as exc:
            ctx.log.warning("media refused: %s", exc)
            item.notice = notices.MEDIA_UNAVAILABLE
            continue
        except Exception as exc:  # noqa: BLE001 - network trouble: tell the user, keep the turn
            ctx.log.warning("media download failed: %s", type(exc).__name__)
            item.notice = notices.MEDIA_UNAVAILABLE
            continue
        if not media.is_audio:
            ctx.log.warning("media claims %s but its bytes are not audio (%s)", media.content_type,
                            media.sniffed_type or "unknown")
            media.path.unlink(missing_ok=True)
            item.notice = notices.AUDIO_UNREADABLE
            continue
        item.media_path = media.path
        item.media_type = media.content_type or item.media_type


def _take_simulator_upload(ctx: TurnContext, item: InboundItem) -> None:
    """A voice note the operator uploaded in the simulator: a local file, no download."""
    if ctx.user.channel != "simulator":
        item.notice = notices.MEDIA_UNAVAILABLE  # only simulated users may point at local files
        return
    try:
        source = upload_path(ctx.settings, item.media_url)
        data = source.read_bytes()
    except (SimulatorInputError, OSError):
        item.notice = notices.MEDIA_UNAVAILABLE
        return
    item.media_path = ctx.tmpdir / ("upload" + source.suffix)
    item.media_path.write_bytes(data)
