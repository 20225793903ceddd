"""Benchmark: the realtime voice path (app/pipeline/realtime.py) through the real app.

Measured from the signed webhook POST to the moment Twilio's emulator receives the voice reply.
  * Own overhead, instant emulators: a 30 s voice note on /webhook/whatsapp/realtime; the
    Realtime emulator answers at once with 5 s of PCM. Overhead = the turn's time minus a
    baseline measured in the same run - the media GET and the Twilio send made directly with
    the SDKs - so it holds our conversions (decode to PCM16 24 kHz, silence trim, PCM →
    OGG/Opus), the streaming of the note over the WebSocket (base64 chunks, commit, the
    answer's deltas; the emulator's own work, in this process, is counted too), storage, the
    outbox and the inbox. Target: under 400 ms.
  * Emulated provider delays, one run: the same note through the realtime path (the Realtime
    emulator waits 2.0 s before answering, the answer's delay) and through the main pipeline
    on /webhook/whatsapp (transcription 1.5 s, answer 2.0 s, TTS 1.5 s), alternating.
Prints Markdown tables.

    python bench/bench_realtime.py [--runs 10]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import select  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402
from twilio.rest import Client  # noqa: E402

from app import create_app  # noqa: E402
from app.config import Settings  # noqa: E402
from app.models import Turn  # noqa: E402
from tests.fakes import audio_samples  # noqa: E402
from tests.fakes.elevenlabs_fake import ElevenLabsFake  # noqa: E402
from tests.fakes.openai_fake import OpenAIFake  # noqa: E402
from tests.fakes.realtime_fake import RealtimeFake  # noqa: E402
from tests.fakes.twilio_fake import TwilioFake  # noqa: E402

NUMBER = "whatsapp:+14155238886"
PUBLIC = "https://bot.example.com"
NOTE_SECONDS = 30.0
ANSWER_SECONDS = 5.0


def build_app(tmp: str, twilio: TwilioFake, openai_fake: OpenAIFake, eleven: ElevenLabsFake, rt: RealtimeFake):
    settings = Settings.from_env(
        env={}, database_url=f"sqlite:///{tmp}/bench.db", instance_dir=f"{tmp}/instance",
        public_base_url=PUBLIC, twilio_account_sid=twilio.account_sid, twilio_auth_token=twilio.auth_token,
        twilio_phone_number=NUMBER, twilio_api_base_url=twilio.base_url,
        openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url, openai_max_retries=0,
        openai_realtime_url=rt.ws_base_url,
        elevenlabs_api_key=eleven.api_key, elevenlabs_base_url=eleven.base_url,
        media_allowed_hosts=("127.0.0.1",), media_allow_private_hosts=True,
        coalesce_window_seconds=0.0, secret_key="bench-secret", log_level="WARNING",
    )
    return create_app(settings)


def one_turn(app, twilio: TwilioFake, note: bytes, n: int, path: str) -> tuple[float, dict]:
    """Seconds from the webhook POST to the voice reply at Twilio, and the turn's timings."""
    before = len(twilio.sent)
    form = twilio.inbound_form(from_=f"whatsapp:+55119{n:08d}", body="", media=(note, "audio/ogg"),
                               MessageType="audio")
    signature = RequestValidator(twilio.auth_token).compute_signature(PUBLIC + path, form)
    client = app.test_client()
    started = time.perf_counter()
    response = client.post(path, data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    while True:
        replies = twilio.sent[before:]
        if any(m["media_url"] for m in replies):
            elapsed = time.perf_counter() - started
            break
        if time.perf_counter() - started > 60:
            raise RuntimeError(f"no voice reply; sent: {replies}")
        time.sleep(0.001)
    time.sleep(0.05)  # let the turn's final bookkeeping commit
    with app.extensions["endrigo"].db.session() as session:
        timings = session.scalars(select(Turn.timings).order_by(Turn.id.desc()).limit(1)).first() or {}
    return elapsed, timings


def baseline(twilio: TwilioFake, note: bytes) -> float:
    """The calls any implementation pays that are not ours: the media GET and the Twilio send."""
    media_url = twilio.add_media(note, "audio/ogg")
    tw = Client(twilio.account_sid, twilio.auth_token)
    tw.api.base_url = twilio.base_url
    started = time.perf_counter()
    requests.get(media_url, auth=(twilio.account_sid, twilio.auth_token), timeout=10).raise_for_status()
    tw.messages.create(to="whatsapp:+5511900000000", from_=NUMBER, media_url=[PUBLIC + "/media/x"])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--realistic-runs", type=int, default=3)
    args = parser.parse_args()
    note = audio_samples.speech_like_ogg(NOTE_SECONDS, "24k")
    with TwilioFake() as twilio, OpenAIFake() as openai_fake, ElevenLabsFake() as eleven, \
            RealtimeFake(api_key=openai_fake.api_key) as rt, tempfile.TemporaryDirectory() as tmp:
        openai_fake.transcript_text = "Quais serviços a Endrigo Digital oferece para pequenas empresas?"
        rt.answer_seconds = ANSWER_SECONDS
        rt.audio_deltas = 25
        app = build_app(tmp, twilio, openai_fake, eleven, rt)
        one_turn(app, twilio, note, 0, "/webhook/whatsapp/realtime")  # warm-up: imports, caches, connections
        baseline(twilio, note)

        ours, base, stages = [], [], []
        for n in range(1, args.runs + 1):
            base.append(baseline(twilio, note))
            elapsed, timings = one_turn(app, twilio, note, n, "/webhook/whatsapp/realtime")
            ours.append(elapsed)
            stages.append(timings)
        committed = rt.committed_seconds[-1]

        rt.response_delay = 2.0
        openai_fake.set_latency(1.5, "/audio/transcriptions")
        openai_fake.set_latency(2.0, "/responses")
        eleven.set_latency(1.5)
        realtime_path, main_path = [], []
        for n in range(args.realistic_runs):
            realtime_path.append(one_turn(app, twilio, note, 1000 + n, "/webhook/whatsapp/realtime")[0])
            main_path.append(one_turn(app, twilio, note, 2000 + n, "/webhook/whatsapp")[0])
        app.extensions["endrigo"].inbox.shutdown()

    p50_ours, p50_base = statistics.median(ours), statistics.median(base)
    print(f"\n{NOTE_SECONDS:.0f} s voice note (OGG/Opus 24 kbps; {committed:.2f} s committed after the trim), "
          f"{ANSWER_SECONDS:.0f} s answer, {args.runs} runs, SQLite, coalescing window 0\n")
    print("| measure | p50 | max |")
    print("|---|---:|---:|")
    print(f"| baseline: media GET + Twilio send (SDKs → emulators) | {p50_base * 1000:.0f} ms | {max(base) * 1000:.0f} ms |")
    print(f"| realtime turn, webhook → voice reply at Twilio (instant emulators) | {p50_ours * 1000:.0f} ms | {max(ours) * 1000:.0f} ms |")
    print(f"| **own overhead** (turn − baseline) | **{(p50_ours - p50_base) * 1000:.0f} ms** | |")
    print("\nPer-step p50 (ms) in the instant runs (turn.timings):\n")
    names = [k for k in stages[-1].keys()]
    print("| " + " | ".join(names) + " |")
    print("|" + "---:|" * len(names))
    print("| " + " | ".join(f"{statistics.median([s.get(k, 0) for s in stages]):.0f}" for k in names) + " |")
    print(f"\nEmulated provider delays, {args.realistic_runs} runs each, alternating:\n")
    print("| path | delays | webhook → voice reply p50 | max |")
    print("|---|---|---:|---:|")
    print(f"| realtime (/webhook/whatsapp/realtime) | Realtime answer 2.0 s | {statistics.median(realtime_path):.2f} s | {max(realtime_path):.2f} s |")
    print(f"| main pipeline (/webhook/whatsapp) | transcription 1.5 s + answer 2.0 s + TTS 1.5 s | {statistics.median(main_path):.2f} s | {max(main_path):.2f} s |")


if __name__ == "__main__":
    main()
