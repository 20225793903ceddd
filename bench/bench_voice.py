"""Benchmark: a whole voice turn (30 s voice note in, voice note out) through the real app.

Measured from the signed webhook to the moment Twilio's emulator receives the reply.
  * Zero-latency emulators: our own overhead = the turn's time minus a baseline measured
    in the same run — the same provider calls made directly with the SDKs against the same
    emulators (media GET, transcription, one Responses call, TTS, Twilio send), without our
    pipeline. Target: overhead under 300 ms for 30 s of audio.
  * Realistic emulators (transcription 1.5 s, answer 2 s, TTS 1.5 s): the voice reply must be
    sent within 8 s of the webhook.
Prints a Markdown table.

    python bench/bench_voice.py [--runs 10]
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
from elevenlabs.client import ElevenLabs  # noqa: E402
from openai import OpenAI  # noqa: E402
from sqlalchemy import select  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402
from twilio.rest import Client  # noqa: E402

from app import create_app  # noqa: E402
from app.config import Settings  # noqa: E402
from app.models import Turn  # noqa: E402
from tests.fakes import audio_samples  # noqa: E402
from tests.fakes.elevenlabs_fake import ElevenLabsFake  # noqa: E402
from tests.fakes.openai_fake import OpenAIFake  # noqa: E402
from tests.fakes.twilio_fake import TwilioFake  # noqa: E402

NUMBER = "whatsapp:+14155238886"
PUBLIC = "https://bot.example.com"


def build_app(tmp: str, twilio: TwilioFake, openai_fake: OpenAIFake, eleven: ElevenLabsFake):
    settings = Settings.from_env(
        env={"MEDIA_ALLOW_PRIVATE_HOSTS": "true"},  # the emulators listen on http://127.0.0.1
        database_url=f"sqlite:///{tmp}/bench.db", instance_dir=f"{tmp}/instance",
        public_base_url=PUBLIC, twilio_account_sid=twilio.account_sid, twilio_auth_token=twilio.auth_token,
        twilio_phone_number=NUMBER, twilio_api_base_url=twilio.base_url,
        openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url, openai_max_retries=0,
        elevenlabs_api_key=eleven.api_key, elevenlabs_base_url=eleven.base_url,
        media_allowed_hosts=("127.0.0.1",),
        coalesce_window_seconds=0.0, secret_key="bench-secret", log_level="WARNING",
    )
    return create_app(settings)


def one_turn(app, twilio: TwilioFake, note: bytes, n: int) -> tuple[float, dict]:
    """Seconds from the webhook POST to the voice reply at Twilio, and the turn's stage timings."""
    before = len(twilio.sent)
    form = twilio.inbound_form(from_=f"whatsapp:+55119{n:08d}", body="", media=(note, "audio/ogg"),
                               MessageType="audio")
    url = PUBLIC + "/webhook/whatsapp"
    signature = RequestValidator(twilio.auth_token).compute_signature(url, form)
    client = app.test_client()
    started = time.perf_counter()
    response = client.post("/webhook/whatsapp", data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    while True:
        replies = twilio.sent[before:]
        if any(m["media_url"] for m in replies):
            elapsed = time.perf_counter() - started
            break
        if time.perf_counter() - started > 30:
            raise RuntimeError(f"no voice reply; sent: {replies}")
        time.sleep(0.001)
    services = app.extensions["endrigo"]
    time.sleep(0.05)  # let the turn's final bookkeeping commit
    with services.db.session() as session:
        timings = session.scalars(select(Turn.timings).order_by(Turn.id.desc()).limit(1)).first() or {}
    return elapsed, timings


def baseline_turn(twilio: TwilioFake, openai_fake: OpenAIFake, eleven: ElevenLabsFake, note: bytes) -> float:
    """The same provider calls, made directly with the SDKs: the floor any implementation pays."""
    media_url = twilio.add_media(note, "audio/ogg")
    oai = OpenAI(api_key=openai_fake.api_key, base_url=openai_fake.v1_url, max_retries=0)
    tts = ElevenLabs(api_key=eleven.api_key, base_url=eleven.base_url)
    tw = Client(twilio.account_sid, twilio.auth_token)
    tw.api.base_url = twilio.base_url
    started = time.perf_counter()
    data = requests.get(media_url, auth=(twilio.account_sid, twilio.auth_token), timeout=10).content
    text = oai.audio.transcriptions.create(model="gpt-transcribe", file=("nota.ogg", data, "audio/ogg"),
                                          language="pt").text
    answer = oai.responses.create(model="gpt-5.4-mini", input=text, store=False).output_text
    audio = b"".join(tts.text_to_speech.convert(voice_id="SuM1a4mUYXCmWfwWYCx0", text=answer,
                                                model_id="eleven_multilingual_v2",
                                                output_format="opus_48000_32"))
    assert audio[:4] == b"OggS"
    tw.messages.create(to="whatsapp:+5511900000000", from_=NUMBER, media_url=[PUBLIC + "/media/x"])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    note = audio_samples.speech_like_ogg(30.0, "24k")
    with TwilioFake() as twilio, OpenAIFake() as openai_fake, ElevenLabsFake() as eleven, \
            tempfile.TemporaryDirectory() as tmp:
        openai_fake.transcript_text = "Quais serviços a Endrigo Digital oferece para pequenas empresas?"
        app = build_app(tmp, twilio, openai_fake, eleven)
        one_turn(app, twilio, note, 0)  # warm-up: imports, caches, first connections
        baseline_turn(twilio, openai_fake, eleven, note)

        ours, base, stages = [], [], []
        for n in range(1, args.runs + 1):
            base.append(baseline_turn(twilio, openai_fake, eleven, note))
            elapsed, timings = one_turn(app, twilio, note, n)
            ours.append(elapsed)
            stages.append(timings)

        openai_fake.set_latency(1.5, "/audio/transcriptions")
        openai_fake.set_latency(2.0, "/responses")
        eleven.set_latency(1.5)
        realistic = [one_turn(app, twilio, note, 1000 + n)[0] for n in range(3)]
        app.extensions["endrigo"].inbox.shutdown()

    p50_ours, p50_base = statistics.median(ours), statistics.median(base)
    print(f"\n30 s voice note (OGG/Opus 24 kbps), {args.runs} runs, SQLite, coalescing window 0\n")
    print("| measure | p50 | max |")
    print("|---|---:|---:|")
    print(f"| baseline: the provider calls alone (SDKs → emulators) | {p50_base * 1000:.0f} ms | {max(base) * 1000:.0f} ms |")
    print(f"| our voice turn, webhook → voice reply at Twilio | {p50_ours * 1000:.0f} ms | {max(ours) * 1000:.0f} ms |")
    print(f"| **our overhead** (turn − baseline) | **{(p50_ours - p50_base) * 1000:.0f} ms** | |")
    print(f"| realistic providers (1.5 s + 2 s + 1.5 s): webhook → voice reply | {statistics.median(realistic):.2f} s | {max(realistic):.2f} s |")
    print("\nPer-stage p50 (ms) in the zero-latency runs:\n")
    names = [k for k in stages[-1].keys()]
    print("| " + " | ".join(names) + " |")
    print("|" + "---:|" * len(names))
    print("| " + " | ".join(f"{statistics.median([s.get(k, 0) for s in stages]):.0f}" for k in names) + " |")


if __name__ == "__main__":
    main()
