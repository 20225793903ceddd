"""Benchmark: reply latency of the fixed coalescing window (bb2a530) against zero-wait replies, side by side.

One run starts the provider emulators (Twilio, OpenAI, ElevenLabs) in this process on
127.0.0.1 and two app servers as subprocesses, each on its own SQLite database:
  * "fixed window": the tree of the old design (``--old-tree``, default /work/wt/oldapp, a
    worktree of bb2a530), COALESCE_WINDOW_SECONDS at its default 2.0;
  * "zero wait": this tree, COALESCE_WINDOW_SECONDS at its default (the quiet wait after an
    abandoned attempt).
Each server is the app's ``create_app`` run by Werkzeug's threaded server (what ``python
main.py`` does), built from that tree's ``Settings.from_env`` with one override the old tree
cannot take from the environment: media over http from 127.0.0.1 (the emulators), plus no
OpenAI retries and a temporary instance directory.

Provider delays: the answer takes ``--answer`` s (2.0; an OpenAI handler that sleeps),
transcription 1.5 s, TTS 1.5 s, Twilio sends 0. Latency = from the signed webhook POST
(of the LAST message for a burst) to the moment the Twilio emulator stored the answer
(text answers carry a marker; a voice answer is the first send with media); both clocks are
this process's ``perf_counter``. Runs alternate between the two designs, one at a time.
  (a) a single text; (b) a 3-message burst, 0.4 s apart: answered once, model calls per burst
  (target <= 2), the answered call saw all three messages; (c) a 10 s voice note.
Targets: single text p50 <= answer + 150 ms; burst <= answer + 1 s after its last message.

Then, zero-wait only, a 20-turn scripted conversation of one user with an instant answer
emulator: model calls and tokens per turn from ``turns.usage`` (input, cached, output;
the emulator's prompt cache: shared prefix per prompt_cache_key, >= 1024 tokens, steps of
128, ~4 characters per token). Prints Markdown tables.

    python bench/bench_latency.py [--runs 10] [--old-tree /work/wt/oldapp]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

from tests.fakes import audio_samples  # noqa: E402
from tests.fakes.elevenlabs_fake import ElevenLabsFake  # noqa: E402
from tests.fakes.openai_fake import OpenAIFake  # noqa: E402
from tests.fakes.twilio_fake import TwilioFake  # noqa: E402

NUMBER = "whatsapp:+14155238886"
MARK = "RESPOSTA"
TRANSCRIPTION_S, TTS_S = 1.5, 1.5
BURST = ("Oi, bom dia", "queria saber dos serviços de vocês", "e quanto custa um site?")
CONVERSATION = (
    "Oi, bom dia!", "Quais serviços a Endrigo Digital oferece?", "Vocês fazem gestão de tráfego pago?",
    "E no Google também?", "Quanto custa um site institucional?", "Em quanto tempo fica pronto?",
    "Vocês fazem loja virtual?", "Qual o horário de atendimento?", "Atendem fora de São Paulo?",
    "Como funciona o pagamento?", "Dá para parcelar?", "Vocês cuidam das redes sociais também?",
    "Quantos posts por semana?", "Tem contrato de fidelidade?", "Posso cancelar quando quiser?",
    "Vocês fazem identidade visual?", "Quero um orçamento", "Meu nome é Carla, da padaria Pão Bom",
    "Pode me ligar amanhã de manhã?", "Obrigada!",
)

# -- the server subprocess --------------------------------------------------------------------

SERVE = r"""
import os, sys
tree = sys.argv[1]
sys.path.insert(0, tree)
os.chdir(tree)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from app import create_app
from app.config import Settings
app = create_app(Settings.from_env(media_allow_private_hosts=True, openai_max_retries=0,
                                  instance_dir=os.environ["BENCH_INSTANCE_DIR"]))
app.run(host="127.0.0.1", port=int(os.environ["PORT"]), threaded=True, use_reloader=False)
"""


class StampedTwilio(TwilioFake):
    """The Twilio emulator, with the moment each message was stored (``at``, perf_counter)."""

    def _store(self, *args, **kwargs) -> dict:
        record = super()._store(*args, **kwargs)
        record["at"] = time.perf_counter()
        return record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One design's app, as a subprocess on its own port and SQLite database."""

    def __init__(self, label: str, tree: Path, tmp: str, twilio, openai_fake, eleven, prefix: str):
        self.label, self.tree, self.prefix = label, tree, prefix
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db_path = f"{tmp}/{prefix}.db"
        self.counter = 0
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "OPENAI_", "ELEVENLABS_"))}
        env.update({
            "PORT": str(self.port), "DATABASE_URL": f"sqlite:///{self.db_path}", "BENCH_INSTANCE_DIR": f"{tmp}/{prefix}-inst",
            "PUBLIC_BASE_URL": self.base, "TWILIO_ACCOUNT_SID": twilio.account_sid,
            "TWILIO_AUTH_TOKEN": twilio.auth_token, "TWILIO_PHONE_NUMBER": NUMBER,
            "TWILIO_API_BASE_URL": twilio.base_url, "OPENAI_API_KEY": openai_fake.api_key,
            "OPENAI_BASE_URL": openai_fake.v1_url,
            "ELEVENLABS_API_KEY": eleven.api_key, "ELEVENLABS_BASE_URL": eleven.base_url,
            "MEDIA_ALLOWED_HOSTS": "127.0.0.1", "LOG_LEVEL": "WARNING", "SECRET_KEY": "bench-secret",
        })
        env.pop("COALESCE_WINDOW_SECONDS", None)  # each design at its own default
        self.log = open(f"{tmp}/{prefix}.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-c", SERVE, str(tree)], env=env, cwd=str(tree),
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(self.base + "/health", timeout=1)
                return
            except requests.RequestException:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"{label} server did not start; see {tmp}/{prefix}.log")

    def user(self) -> str:
        self.counter += 1
        return f"whatsapp:+55{self.prefix == 'old' and 21 or 31}9{self.counter:08d}"

    def post(self, twilio: TwilioFake, form: dict) -> float:
        """Post a signed webhook; the perf_counter moment it was sent."""
        url = self.base + "/webhook/whatsapp"
        signature = RequestValidator(twilio.auth_token).compute_signature(url, form)
        started = time.perf_counter()
        response = requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)
        assert response.status_code == 200, (self.label, response.status_code, response.text[:200])
        return started

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


# -- the answer emulator ------------------------------------------------------------------------

class Answerer:
    """OpenAI handler: sleeps ``delay`` s, answers with a marker; records every call's input."""

    def __init__(self):
        self.delay = 0.0
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> str:
        with self.lock:
            self.calls.append(json.dumps(body.get("input"), ensure_ascii=False))
            n = len(self.calls)
        time.sleep(self.delay)
        return f"{MARK} {n}: a Endrigo Digital cria sites, cuida de tráfego pago e redes sociais."


def wait_answer(twilio: TwilioFake, to: str, voice: bool, timeout: float = 30.0) -> dict:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        for record in list(twilio.sent):
            if record["to"] == to and ((voice and record["media_url"]) or (not voice and MARK in (record["body"] or ""))):
                return record
        time.sleep(0.002)
    raise RuntimeError(f"no answer to {to}: {[r for r in twilio.sent if r['to'] == to]}")


def answers_to(twilio: TwilioFake, to: str) -> int:
    return sum(1 for r in list(twilio.sent) if r["to"] == to and (MARK in (r["body"] or "") or r["media_url"]))


def first_send(twilio: TwilioFake, to: str) -> dict:
    return min((r for r in list(twilio.sent) if r["to"] == to), key=lambda r: r["at"])


def single_text(server: Server, twilio) -> dict:
    to = server.user()
    sent = server.post(twilio, twilio.inbound_form(from_=to, body="Quais serviços vocês oferecem?"))
    answer = wait_answer(twilio, to, voice=False)
    return {"latency": answer["at"] - sent, "first": first_send(twilio, to)["at"] - sent}


def burst(server: Server, twilio, answerer: Answerer, answer_s: float) -> dict:
    to = server.user()
    calls_before = len(answerer.calls)
    last = 0.0
    for i, body in enumerate(BURST):
        if i:
            time.sleep(max(0.0, last + 0.4 - time.perf_counter()))
        last = server.post(twilio, twilio.inbound_form(from_=to, body=body))
    answer = wait_answer(twilio, to, voice=False)
    time.sleep(answer_s + 1.0)  # a second answer, if any, would arrive by now
    calls = answerer.calls[calls_before:]
    return {"latency": answer["at"] - last, "answers": answers_to(twilio, to), "calls": len(calls),
            "saw_all": bool(calls) and all(b in calls[-1] for b in BURST)}


def voice_note(server: Server, twilio, note: bytes) -> dict:
    to = server.user()
    sent = server.post(twilio, twilio.inbound_form(from_=to, body="", media=(note, "audio/ogg"), MessageType="audio"))
    answer = wait_answer(twilio, to, voice=True)
    return {"latency": answer["at"] - sent, "first": first_send(twilio, to)["at"] - sent}


def conversation(server: Server, twilio, answerer: Answerer) -> list[dict]:
    """20 scripted turns of one user, one after the other; each turn's usage from the database."""
    answerer.delay = 0.0
    to = server.user()
    for n, text in enumerate(CONVERSATION, 1):
        server.post(twilio, twilio.inbound_form(from_=to, body=text))
        deadline = time.perf_counter() + 30
        while answers_to(twilio, to) < n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"turn {n} not answered")
            time.sleep(0.002)
    time.sleep(0.3)  # the last turn's bookkeeping
    with sqlite3.connect(server.db_path) as db:
        rows = db.execute("SELECT t.usage FROM turns t JOIN users u ON u.id = t.user_id "
                          "WHERE u.phone LIKE ? ORDER BY t.id", (f"%{to.split('+')[1]}",)).fetchall()
    return [json.loads(u) if u else {} for (u,) in rows]


# -- report --------------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} / {pct(values, 95) * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--answer", type=float, default=2.0, help="seconds the answer emulator takes")
    parser.add_argument("--old-tree", default="/work/wt/oldapp", help="a checkout of bb2a530 (fixed window)")
    args = parser.parse_args()
    if not (Path(args.old_tree) / "app" / "__init__.py").exists():
        print(f"bench_latency: skipped, no checkout of the old design at {args.old_tree} "
              f"(git worktree add {args.old_tree} bb2a530, and a .venv link to this tree's)")
        return
    note = audio_samples.speech_like_ogg(10.0, "24k")
    with StampedTwilio() as twilio, OpenAIFake() as openai_fake, ElevenLabsFake() as eleven, \
            tempfile.TemporaryDirectory() as tmp:
        answerer = Answerer()
        openai_fake.set_handler(answerer)
        openai_fake.transcript_text = "Quais serviços a Endrigo Digital oferece para pequenas empresas?"
        servers = [Server("fixed window (bb2a530)", Path(args.old_tree), tmp, twilio, openai_fake, eleven, "old"),
                   Server("zero wait (this tree)", ROOT, tmp, twilio, openai_fake, eleven, "new")]
        try:
            for server in servers:  # warm-up: imports, the knowledge base, connections
                single_text(server, twilio)
                voice_note(server, twilio, note)
            answerer.delay = args.answer
            openai_fake.set_latency(TRANSCRIPTION_S, "/audio/transcriptions")
            eleven.set_latency(TTS_S)
            results = {s.label: {"single": [], "burst": [], "voice": []} for s in servers}
            for run in range(args.runs):
                for server in servers:  # alternate, so both see the same machine state
                    results[server.label]["single"].append(single_text(server, twilio))
                    results[server.label]["burst"].append(burst(server, twilio, answerer, args.answer))
                    results[server.label]["voice"].append(voice_note(server, twilio, note))
                print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
            openai_fake.set_latency(0.0, "/audio/transcriptions")
            eleven.set_latency(0.0)
            usage = conversation(servers[1], twilio, answerer)
        finally:
            for server in servers:
                server.stop()

    a = args.answer
    print(f"\n### Reply latency, fixed window vs zero wait ({args.runs} runs each, alternating; SQLite; "
          f"answer {a:.1f} s, transcription {TRANSCRIPTION_S} s, TTS {TTS_S} s)\n")
    print("| design | single text → answer p50 / p95 | burst of 3 (0.4 s apart): last message → answer p50 / p95 "
          "| burst: answers / model calls (max) / answered call saw all 3 | voice note (10 s) → voice reply p50 / p95 "
          "| voice: first send of any kind p50 |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in results.items():
        single = [x["latency"] for x in r["single"]]
        bursts = [x["latency"] for x in r["burst"]]
        voice = [x["latency"] for x in r["voice"]]
        answers = sorted({x["answers"] for x in r["burst"]})
        calls = max(x["calls"] for x in r["burst"])
        saw = sum(x["saw_all"] for x in r["burst"])
        print(f"| {label} | {ms(single)} | {ms(bursts)} | {'/'.join(map(str, answers))} answer(s) each; "
              f"≤ {calls} calls; {saw}/{len(r['burst'])} | {ms(voice)} | "
              f"{statistics.median([x['first'] for x in r['voice']]) * 1000:.0f} ms |")
    new = results[servers[1].label]
    single50 = statistics.median([x["latency"] for x in new["single"]])
    burst_max = max(x["latency"] for x in new["burst"])
    burst50 = statistics.median([x["latency"] for x in new["burst"]])
    calls = max(x["calls"] for x in new["burst"])
    once = all(x["answers"] == 1 for x in new["burst"])
    print("\nTargets (zero wait):\n")
    print(f"- single text p50 ≤ answer + 150 ms = {(a + 0.15) * 1000:.0f} ms: {single50 * 1000:.0f} ms — "
          f"{'met' if single50 <= a + 0.15 else 'NOT met'}")
    print(f"- burst ≤ answer + 1 s = {(a + 1) * 1000:.0f} ms after its last message: p50 {burst50 * 1000:.0f} ms, "
          f"max {burst_max * 1000:.0f} ms — {'met' if burst_max <= a + 1 else 'p50 ' + ('met' if burst50 <= a + 1 else 'NOT met') + ', max NOT met'}")
    print(f"- burst answered once: {'yes' if once else 'NO'}; ≤ 2 model calls: {'yes' if calls <= 2 else 'NO'} (max {calls})")

    print("\n### 20-turn scripted conversation, one user, zero wait (instant answer emulator; "
          "prompt cache emulated, ~4 characters per token)\n")
    print("| turn | model calls | input tokens | cached tokens | output tokens | cached share |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, u in enumerate(usage, 1):
        inp, cached = u.get("input_tokens", 0), u.get("cached_tokens", 0)
        share = f"{cached / inp:.0%}" if inp else "—"
        print(f"| {n} | {u.get('model_calls', 0)} | {inp} | {cached} | {u.get('output_tokens', 0)} | {share} |")
    tot = {k: sum(u.get(k, 0) for u in usage) for k in ("model_calls", "input_tokens", "cached_tokens", "output_tokens")}
    turns = len(usage) or 1
    print(f"| **per turn (mean of {len(usage)})** | {tot['model_calls'] / turns:.2f} | {tot['input_tokens'] / turns:.0f} "
          f"| {tot['cached_tokens'] / turns:.0f} | {tot['output_tokens'] / turns:.0f} "
          f"| {tot['cached_tokens'] / (tot['input_tokens'] or 1):.0%} |")


if __name__ == "__main__":
    main()
