"""The answer stage with OpenAI (app/pipeline/answer.py, app/assistant/prompt.py) through the real inbox, the real SDK and the emulators:
persona instructions, history from our database, the function-tool loop, isolation between
users, provider faults, fallbacks and the human handoff."""
from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import select

import app.assistant.prompt as prompt
import app.pipeline.answer as answer_stage
from app.db import utcnow
from app.models import Handoff, Lead, Message, Turn, User
from app.pipeline import notices
from app.pipeline.context import InboundItem, TurnContext
from app.turn import Passage, PermanentTurnError, RetryableTurnError, UserSnapshot
from tests.conftest import post_signed, wait_for

PATH = "/webhook/whatsapp"
ANA = "whatsapp:+5511999990001"


@pytest.fixture
def online(online_app):
    """An app whose answers come from the OpenAI emulator (tests/conftest.py online_app)."""
    return online_app


def say(app, twilio_fake, body: str, from_: str = ANA, profile_name: str = "Ana") -> str:
    form = twilio_fake.inbound_form(from_=from_, body=body, profile_name=profile_name)
    assert post_signed(app.test_client(), PATH, form, twilio_fake.auth_token).status_code == 200
    return form["MessageSid"]


def message(app, sid: str) -> Message:
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(select(Message).where(Message.provider_sid == sid))


def settled(app, sid: str, statuses=("answered", "failed", "ignored", "waiting_human")) -> Message | None:
    row = message(app, sid)
    return row if row is not None and row.status in statuses else None


def wait_settled(app, sid: str, timeout: float = 15.0) -> Message:
    return wait_for(lambda: settled(app, sid), timeout=timeout)


def bodies(openai_fake) -> list[dict]:
    return [r.json for r in openai_fake.requests_to("/v1/responses")]


def sent_to(twilio_fake, to: str = ANA) -> list[str]:
    return [m["body"] for m in twilio_fake.sent if m["to"] == to]


def health(app) -> dict:
    return app.extensions["endrigo"].provider_health.snapshot().get("openai", {})


def outputs_of(body: dict) -> dict[str, dict]:
    """call_id -> parsed output of the function_call_output items in a request."""
    return {item["call_id"]: json.loads(item["output"]) for item in body["input"]
            if item.get("type") == "function_call_output"}


# ---- the whole loop, end to end ------------------------------------------------------------

def test_a_tool_call_runs_and_its_output_goes_back_then_the_answer_is_sent(online, openai_fake, twilio_fake):
    app = online()
    openai_fake.queue_function_call("capture_lead", {
        "name": "Ana Souza", "interest": "Site para a minha loja", "email": "  Ana.Souza@Loja.COM ",
        "phone": "(11) 98765-4321"}, call_id="call_lead_1")
    openai_fake.queue_text("**Pronto**, Ana! Anotei seu interesse e a equipe vai te chamar.")
    sid = say(app, twilio_fake, "Quero um orçamento de site. Meu e-mail é Ana.Souza@Loja.COM")

    assert wait_settled(app, sid).status == "answered"
    first, second = bodies(openai_fake)
    call = next(item for item in second["input"] if item.get("type") == "function_call")
    assert call["call_id"] == "call_lead_1" and call["name"] == "capture_lead"
    output = outputs_of(second)["call_lead_1"]
    assert output["ok"] is True and output["lead"]["phone"] == "+5511987654321"
    # Markdown from the model reaches WhatsApp in WhatsApp's own formatting.
    assert sent_to(twilio_fake) == ["*Pronto*, Ana! Anotei seu interesse e a equipe vai te chamar."]
    with app.extensions["endrigo"].db.session() as session:
        lead = session.scalar(select(Lead))
        user = session.scalar(select(User).where(User.phone == "+5511999990001"))
        turn = session.scalar(select(Turn))
    assert (lead.user_id, lead.email, lead.phone) == (user.id, "ana.souza@loja.com", "+5511987654321")
    assert turn.reply_text.startswith("*Pronto*")
    assert health(app)["state"] == "healthy"
    # The turn keeps the tool calls for operators.
    assert [(c["name"], c["ok"]) for c in turn.tool_calls] == [("capture_lead", True)]


def test_instructions_on_every_call_history_on_the_second_turn_and_the_configured_model(
        online, openai_fake, twilio_fake):
    app = online(openai_model="gpt-5.4")
    openai_fake.queue_text("Fazemos sites rápidos e bonitos.")
    wait_settled(app, say(app, twilio_fake, "Oi, vocês fazem sites?"))
    openai_fake.queue_function_call("get_current_datetime", {}, call_id="call_time")
    openai_fake.queue_text("Hoje é um ótimo dia para começar.")
    wait_settled(app, say(app, twilio_fake, "E quando podemos começar?"))

    requests = bodies(openai_fake)
    assert len(requests) == 3
    # The stable part (instructions, tools) is identical in every call, for OpenAI's prompt cache.
    assert len({body["instructions"] for body in requests}) == 1
    assert len({str(body["tools"]) for body in requests}) == 1
    for body in requests:
        instructions = body["instructions"]
        assert "Você é Endrigo" in instructions and "## Behavior" in instructions
        assert "{context}" not in instructions and "{profile}" not in instructions
        assert "{datetime}" not in instructions and "- Nome:" not in instructions
        assert body["prompt_cache_key"] == requests[0]["prompt_cache_key"]
        # This message's facts: a developer item right before the user's message.
        [facts] = [item["content"] for item in body["input"] if item.get("role") == "developer"]
        assert "- Nome: Ana" in facts and "Primeiro contato:" in facts
        assert "- Esta resposta vai em: texto" in facts
        assert "[1] " in facts  # retrieved passages, numbered with source and heading
        assert "-feira" in facts or "sábado" in facts or "domingo" in facts

        assert body["model"] == "gpt-5.4"
        assert body["store"] is False
        assert body["include"] == ["reasoning.encrypted_content"]
        assert {tool["name"] for tool in body["tools"]} == {
            "search_knowledge", "get_user_profile", "update_user_profile", "capture_lead",
            "request_human_handoff", "get_current_datetime"}
    second_turn = requests[1]["input"]
    assert [second_turn[0], second_turn[1], second_turn[3]] == [
        {"role": "user", "content": "Oi, vocês fazem sites?"},
        {"role": "assistant", "content": "Fazemos sites rápidos e bonitos."},
        {"role": "user", "content": "E quando podemos começar?"},
    ]
    assert second_turn[2]["role"] == "developer"  # the facts of this message, right before it
    # The loop's second call resends everything, plus the call and its output.
    assert requests[2]["input"][:4] == second_turn[:4]
    assert "weekday" in outputs_of(requests[2])["call_time"]
    assert requests[1]["tool_choice"] == requests[2]["tool_choice"] == "auto"


def test_history_is_bounded_by_turns_and_size_and_belongs_to_the_user(online):
    app = online(start_workers=False)
    db = app.extensions["endrigo"].db
    with db.session() as session:
        ana = User(phone="+5511999990001")
        bruno = User(phone="+5511999990002")
        session.add_all([ana, bruno])
        session.flush()

        def turn(user, said, reply, status="answered", transcription=None):
            row = Turn(user_id=user.id, status=status, reply_text=reply)
            session.add(row)
            session.flush()
            session.add(Message(user_id=user.id, turn_id=row.id, direction="in", body=said, status="answered",
                                transcription=transcription))
            return row

        for n in range(10):
            turn(ana, f"pergunta {n}", f"resposta {n}")
        turn(bruno, "segredo do Bruno", "resposta ao Bruno")
        turn(ana, "falhou", None, status="failed")
        turn(ana, None, "sobre o áudio", transcription="fala do áudio")
        current = turn(ana, "agora", None, status="processing")
        ana_id, current_id = ana.id, current.id

    history = prompt.load_history(db, ana_id, current_id)
    said = [item["content"] for item in history if item["role"] == "user"]
    assert said == [f"pergunta {n}" for n in range(3, 10)] + ["fala do áudio"]
    assert "segredo do Bruno" not in json.dumps(history)
    assert all(item["role"] in ("user", "assistant") for item in history)

    # Size: the oldest turns are dropped first.
    big = "x" * 1400
    with db.session() as session:
        for n in range(5):
            row = Turn(user_id=ana_id, status="answered", reply_text=big)
            session.add(row)
            session.flush()
            session.add(Message(user_id=ana_id, turn_id=row.id, direction="in", body=f"grande {n} {big}",
                                status="answered"))
        later = Turn(user_id=ana_id, status="processing")
        session.add(later)
        session.flush()
        later_id = later.id
    history = prompt.load_history(db, ana_id, later_id)
    assert sum(len(item["content"]) for item in history) <= prompt.HISTORY_MAX_CHARS
    assert history[-2]["content"].startswith("grande 4")
    assert not any(item["content"].startswith("grande 0") for item in history)


def _snapshot(name="Ana", reply_mode="auto") -> UserSnapshot:
    return UserSnapshot(id=1, phone="+5511999990001", channel="whatsapp", name=name, reply_mode=reply_mode,
                        message_count=7, first_seen_at=utcnow())


def test_instructions_fill_placeholders_once_and_never_expand_text_inside_values():
    persona = "## Core\nSou Endrigo.\n## Context\n{context}\nPerfil:\n{profile}\nAgora: {datetime}\n"
    passages = [Passage(chunk_id="a#0", source="servicos.md", heading="Serviços > Sites",
                        text="Fazemos sites. {profile} {datetime}", score=1.0)]
    text = prompt.build_instructions(persona, passages, _snapshot("Ana {context}"), by_voice=True)
    assert "[1] servicos.md — Serviços > Sites\nFazemos sites. {profile} {datetime}" in text
    assert "- Nome: Ana {context}" in text and "- Mensagens enviadas por esta pessoa até agora: 7" in text
    assert "- Esta resposta vai em: áudio" in text
    assert text.count("- Nome:") == 1


def test_a_persona_without_placeholders_still_gets_the_facts():
    text = prompt.build_instructions("## Core\nSou Endrigo.", [], _snapshot())
    assert text.startswith("## Core\nSou Endrigo.")
    assert "nenhum trecho" in text and "- Nome: Ana" in text and "/20" in text


def test_reasoning_items_are_resent_only_with_their_encrypted_content():
    from openai.types.responses import Response

    def output(reasoning: dict) -> list:
        return Response.model_validate({
            "id": "resp_1", "object": "response", "created_at": 0, "model": "gpt-5.4-mini", "status": "completed",
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "output": [
                {"type": "reasoning", "id": "rs_1", "summary": [], **reasoning},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_current_datetime",
                 "arguments": "{}", "status": "completed"},
            ]}).output

    kept, _ = answer_stage.replayable_items(output({"encrypted_content": "gAAAA"}), reasoning_included=True)
    assert [i["type"] for i in kept] == ["reasoning", "function_call"] and kept[1]["id"] == "fc_1"
    for items, _ in (answer_stage.replayable_items(output({}), reasoning_included=True),
                     answer_stage.replayable_items(output({"encrypted_content": "gAAAA"}), reasoning_included=False)):
        assert [i["type"] for i in items] == ["function_call"] and "id" not in items[0]
        assert items[0]["call_id"] == "call_1"


@pytest.mark.parametrize("model, expected", [
    ("gpt-5.4-mini", True), ("gpt-5.4", True), ("o4-mini", True), ("gpt-5-chat-latest", False),
    ("gpt-4.1", False), ("llama3", False),
])
def test_encrypted_reasoning_is_requested_only_from_reasoning_models(model, expected):
    assert answer_stage.supports_encrypted_reasoning(model) is expected


# ---- isolation between users -------------------------------------------------------------------

def test_two_users_at_once_never_see_each_other(online, openai_fake, twilio_fake):
    app = online(workers=4)
    users = {
        "A": {"phone": "whatsapp:+5511911110001", "profile": "Alice Andrade", "history": "gosto de flores azuis",
              "new_name": "Alicia"},
        "B": {"phone": "whatsapp:+5511922220002", "profile": "Bruno Barros", "history": "gosto de carros vermelhos",
              "new_name": "Bruninho"},
    }
    markers = {key: [u["profile"], u["history"], u["new_name"], u["phone"].split("+")[1]] for key, u in users.items()}
    intervals: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def handler(body):
        started = time.monotonic()
        last_user = next(i["content"] for i in reversed(body["input"]) if i.get("role") == "user")
        done = outputs_of(body)
        time.sleep(0.15)  # long enough for the two users' turns to overlap
        with lock:
            intervals.append((last_user, started, time.monotonic()))
        if "meu nome é" in last_user and not done:
            return {"type": "function_call", "name": "update_user_profile",
                    "arguments": {"name": last_user.rsplit(" ", 1)[-1], "reply_mode": None}}
        if done:
            return f"Prazer, {next(iter(done.values()))['profile']['name']}!"
        return f"Anotado: {last_user}"

    openai_fake.set_handler(handler)
    for user in users.values():  # each user first builds a history of their own
        wait_settled(app, say(app, twilio_fake, user["history"], user["phone"], user["profile"]))

    sids: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def talk(key):
        barrier.wait()
        sids[key] = say(app, twilio_fake, f"meu nome é {users[key]['new_name']}", users[key]["phone"],
                        users[key]["profile"])

    threads = [threading.Thread(target=talk, args=(key,)) for key in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sid in sids.values():
        assert wait_settled(app, sid).status == "answered"

    a_calls = [(s, e) for text, s, e in intervals if "Alicia" in text]
    b_calls = [(s, e) for text, s, e in intervals if "Bruninho" in text]
    assert any(sa < eb and sb < ea for sa, ea in a_calls for sb, eb in b_calls), "turns did not overlap"

    per_user = {"A": 0, "B": 0}
    for body in bodies(openai_fake):
        text = json.dumps(body, ensure_ascii=False)
        owners = [key for key, words in markers.items() if any(word in text for word in words)]
        assert len(owners) == 1, f"a request mixes users: {owners}"
        per_user[owners[0]] += 1
        other = "B" if owners[0] == "A" else "A"
        assert not any(word in text for word in markers[other])
    assert per_user == {"A": 3, "B": 3}

    with app.extensions["endrigo"].db.session() as session:
        names = {u.phone: u.learned_name for u in session.scalars(select(User))}
    assert names == {"+5511911110001": "Alicia", "+5511922220002": "Bruninho"}
    assert sent_to(twilio_fake, users["A"]["phone"])[-1] == "Prazer, Alicia!"
    assert sent_to(twilio_fake, users["B"]["phone"])[-1] == "Prazer, Bruninho!"


# ---- provider faults ---------------------------------------------------------------------------

FAULTS = {
    "500": dict(status=500, times=3),
    "429": dict(status=429, times=3, headers={"retry-after": "0.2"}),
    "timeout": dict(status=500, times=3, delay=1.0),  # the client gives up after 0.4 s
    "malformed": dict(status=200, times=1, raw_body=b'{"id": "resp_1", "object": "response", "output": ['),
}
FAULT_REASONS = {"500": "server error (500)", "429": "rate limit (429)", "timeout": "timed out",
                 "malformed": "malformed response"}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_retryable_fault_sends_the_holding_message_then_the_real_answer(online, openai_fake, twilio_fake, fault):
    app = online(retry_backoff_seconds=(0.3, 0.3), openai_timeout_seconds=0.4)
    openai_fake.fail_next(path_contains="/v1/responses", **FAULTS[fault])
    started = time.monotonic()
    sid = say(app, twilio_fake, "Quais serviços vocês oferecem?")

    wait_for(lambda: len(sent_to(twilio_fake)) >= 1)
    holding_after = time.monotonic() - started
    row = wait_settled(app, sid)
    assert row.status == "answered"
    replies = sent_to(twilio_fake)
    assert replies == [notices.HOLDING, "[fake] Quais serviços vocês oferecem?"]
    requests = bodies(openai_fake)
    assert len(requests) == FAULTS[fault]["times"] + 1  # the SDK's retries, then the inbox's retry
    with app.extensions["endrigo"].db.session() as session:
        turn = session.scalar(select(Turn))
    assert turn.attempts == 2 and turn.status == "answered"
    if fault == "429":
        assert holding_after >= 0.4  # the SDK waited retry-after (0.2 s) twice before giving up
    state = health(app)
    assert FAULT_REASONS[fault] in state["last_error"] and state["state"] == "healthy"


def test_an_invalid_key_fails_at_once_with_an_apology_and_a_reason_without_the_key(online, openai_fake, twilio_fake):
    app = online(retry_backoff_seconds=(0.3, 0.3))
    openai_fake.fail_next(401, path_contains="/v1/responses")
    sid = say(app, twilio_fake, "Oi!")

    row = wait_settled(app, sid)
    assert row.status == "failed"
    assert len(bodies(openai_fake)) == 1  # neither the SDK nor the inbox retries a bad key
    assert sent_to(twilio_fake) == [notices.APOLOGY]
    assert "401" in row.error and openai_fake.api_key not in row.error and "sk-test" not in row.error
    with app.extensions["endrigo"].db.session() as session:
        turn = session.scalar(select(Turn))
    assert turn.status == "failed" and turn.error_kind == "auth"
    state = health(app)
    assert state["state"] == "degraded" and "401" in state["last_error"]
    assert openai_fake.api_key not in state["last_error"]
    time.sleep(0.5)  # no retry is scheduled
    assert len(bodies(openai_fake)) == 1


def test_a_refused_request_fails_without_retries(online, openai_fake, twilio_fake):
    app = online(retry_backoff_seconds=(0.3, 0.3))
    openai_fake.fail_next(400, path_contains="/v1/responses")
    row = wait_settled(app, say(app, twilio_fake, "Oi!"))
    assert row.status == "failed" and "400" in row.error
    assert sent_to(twilio_fake) == [notices.APOLOGY]
    with app.extensions["endrigo"].db.session() as session:
        assert session.scalar(select(Turn)).error_kind == "answer"


# ---- what the model says -------------------------------------------------------------------------

@pytest.mark.parametrize("script, fallback", [
    (lambda fake: fake.queue_output([]), answer_stage.FALLBACK_EMPTY),
    (lambda fake: fake.queue_text("   \n  "), answer_stage.FALLBACK_EMPTY),
    (lambda fake: fake.queue_refusal(), answer_stage.FALLBACK_REFUSAL),
    (lambda fake: fake.queue_incomplete(), answer_stage.FALLBACK_INCOMPLETE),
], ids=["empty", "blank", "refusal", "incomplete"])
def test_no_usable_answer_sends_a_short_fallback(online, openai_fake, twilio_fake, script, fallback):
    app = online()
    script(openai_fake)
    row = wait_settled(app, say(app, twilio_fake, "Oi!"))
    assert row.status == "answered"
    assert sent_to(twilio_fake) == [fallback]
    assert fallback.strip()


def test_a_long_answer_is_sent_in_parts_of_at_most_1600_characters(online, openai_fake, twilio_fake):
    app = online()
    paragraphs = [f"Parágrafo {n}: " + ("a Endrigo Digital cuida do seu marketing. " * 6).strip() for n in range(12)]
    answer = "\n\n".join(paragraphs)
    assert 2900 <= len(answer) <= 3300
    openai_fake.queue_text(answer)
    assert wait_settled(app, say(app, twilio_fake, "Me conte tudo")).status == "answered"
    parts = sent_to(twilio_fake)
    assert len(parts) >= 2 and all(len(part) <= 1600 for part in parts)
    assert "\n\n".join(parts) == answer


# ---- the tool loop -------------------------------------------------------------------------------

def test_bad_tool_arguments_go_back_to_the_model_and_the_loop_continues(online, openai_fake, twilio_fake):
    app = online()
    openai_fake.queue_output([
        {"type": "function_call", "name": "capture_lead", "call_id": "call_email",
         "arguments": {"name": "Ana", "interest": "site", "email": "ana@@loja", "phone": None}},
        {"type": "function_call", "name": "capture_lead", "call_id": "call_phone",
         "arguments": {"name": "Ana", "interest": "site", "email": None, "phone": "1234"}},
        {"type": "function_call", "name": "send_money", "call_id": "call_unknown", "arguments": {}},
        {"type": "function_call", "name": "update_user_profile", "call_id": "call_json",
         "arguments": '{"name": "Ana", "reply_mode": '},
    ])
    openai_fake.queue_text("Pode me confirmar seu e-mail e telefone?")
    assert wait_settled(app, say(app, twilio_fake, "Quero uma proposta")).status == "answered"

    outputs = outputs_of(bodies(openai_fake)[1])
    assert "e-mail" in outputs["call_email"]["error"]
    assert "telefone" in outputs["call_phone"]["error"]
    assert "desconhecida" in outputs["call_unknown"]["error"]
    assert "JSON" in outputs["call_json"]["error"]
    assert sent_to(twilio_fake) == ["Pode me confirmar seu e-mail e telefone?"]
    with app.extensions["endrigo"].db.session() as session:
        assert session.scalar(select(Lead)) is None


def test_at_most_four_tool_rounds_then_a_final_call_without_tools(online, openai_fake, twilio_fake):
    app = online()

    def handler(body):
        if body.get("tool_choice") == "none":
            return "Resposta final sem ferramentas."
        return {"type": "function_call", "name": "get_current_datetime", "arguments": {}}

    openai_fake.set_handler(handler)
    assert wait_settled(app, say(app, twilio_fake, "Que horas são?")).status == "answered"
    requests = bodies(openai_fake)
    assert len(requests) == answer_stage.MAX_TOOL_ROUNDS + 1
    assert [r["tool_choice"] for r in requests] == ["auto"] * answer_stage.MAX_TOOL_ROUNDS + ["none"]
    assert all(r["instructions"] for r in requests)
    assert len(outputs_of(requests[-1])) == answer_stage.MAX_TOOL_ROUNDS
    assert sent_to(twilio_fake) == ["Resposta final sem ferramentas."]


def _direct_context(app, text: str = "Oi") -> TurnContext:
    """A turn context for calling answer_turn directly (unit level, same emulator)."""
    services = app.extensions["endrigo"]
    with services.db.session() as session:
        user = session.scalar(select(User).where(User.phone == "+5511999990001"))
        if user is None:
            user = User(phone="+5511999990001", profile_name="Ana", message_count=1)
            session.add(user)
            session.flush()
        turn = Turn(user_id=user.id, status="processing")
        session.add(turn)
        session.flush()
        snapshot = UserSnapshot(id=user.id, phone=user.phone, channel="whatsapp", name="Ana", reply_mode="auto",
                                message_count=1, first_seen_at=utcnow())
        turn_id = turn.id
    return TurnContext(services=services, turn_id=turn_id, user=snapshot,
                       items=[InboundItem(message_id=0, kind="text", body=text)])


def test_tool_calls_are_recorded_for_the_dashboard(online, openai_fake):
    app = online(start_workers=False)
    ctx = _direct_context(app)
    openai_fake.queue_output([
        {"type": "function_call", "name": "update_user_profile", "arguments": {"name": "Ana Clara", "reply_mode": None}},
        {"type": "function_call", "name": "capture_lead", "arguments": {"name": "Ana", "interest": "x",
                                                                        "email": "nope", "phone": None}},
    ])
    openai_fake.queue_text("Certo!")
    assert answer_stage.answer_turn(ctx) == "Certo!"
    assert [(c["name"], c["ok"], c["round"]) for c in ctx.tool_calls] == [
        ("update_user_profile", True, 1), ("capture_lead", False, 1)]
    assert ctx.tool_calls[0]["arguments"] == {"name": "Ana Clara", "reply_mode": None}
    assert "e-mail" in ctx.tool_calls[1]["error"]
    # The profile in the next call's facts already carries the new name.
    facts = [item["content"] for item in bodies(openai_fake)[1]["input"] if item.get("role") == "developer"]
    assert "- Nome: Ana Clara" in facts[0]


def test_when_time_runs_short_the_last_call_goes_without_tools(online, openai_fake, monkeypatch):
    app = online(start_workers=False)
    monkeypatch.setattr(answer_stage, "ANSWER_BUDGET_MIN_SECONDS", 1.0)
    monkeypatch.setattr(answer_stage, "ANSWER_BUDGET_MAX_SECONDS", 1.0)
    monkeypatch.setattr(answer_stage, "NEW_ROUND_MIN_SECONDS", 0.8)
    monkeypatch.setattr(answer_stage, "MIN_CALL_SECONDS", 0.3)
    openai_fake.set_latency(0.35, "/v1/responses")
    openai_fake.set_handler(lambda body: "Resposta curta." if body.get("tool_choice") == "none"
                            else {"type": "function_call", "name": "get_current_datetime", "arguments": {}})
    assert answer_stage.answer_turn(_direct_context(app)) == "Resposta curta."
    assert [r["tool_choice"] for r in bodies(openai_fake)] == ["auto", "none"]


def test_when_no_time_is_left_a_portuguese_fallback_is_returned(online, openai_fake, monkeypatch):
    app = online(start_workers=False)
    monkeypatch.setattr(answer_stage, "ANSWER_BUDGET_MIN_SECONDS", 1.0)
    monkeypatch.setattr(answer_stage, "ANSWER_BUDGET_MAX_SECONDS", 1.0)
    monkeypatch.setattr(answer_stage, "MIN_CALL_SECONDS", 0.5)
    openai_fake.set_latency(0.7, "/v1/responses")
    openai_fake.set_handler(lambda body: {"type": "function_call", "name": "get_current_datetime", "arguments": {}})
    assert answer_stage.answer_turn(_direct_context(app)) == answer_stage.FALLBACK_OUT_OF_TIME
    assert len(bodies(openai_fake)) == 1


def test_direct_errors_are_classified(online, openai_fake):
    app = online(start_workers=False, openai_max_retries=0)
    openai_fake.fail_next(503, path_contains="/v1/responses")
    with pytest.raises(RetryableTurnError) as retryable:
        answer_stage.answer_turn(_direct_context(app))
    assert retryable.value.kind == "answer"
    openai_fake.fail_next(403, path_contains="/v1/responses")
    with pytest.raises(PermanentTurnError) as auth:
        answer_stage.answer_turn(_direct_context(app))
    assert auth.value.kind == "auth"


def test_a_failure_after_the_handoff_still_tells_the_user(online, openai_fake):
    app = online(start_workers=False, openai_max_retries=0)

    def handler(body):
        openai_fake.fail_next(500, path_contains="/v1/responses")  # the next call fails
        return {"type": "function_call", "name": "request_human_handoff", "arguments": {"reason": "contrato"}}

    openai_fake.set_handler(handler)
    said = answer_stage.answer_turn(_direct_context(app))
    # The honest sentence of the handoff (BUSINESS_HOURS), not a promise of "um pouquinho".
    assert said.startswith("Certo! Já avisei a nossa equipe") and "horário de atendimento" in said
    assert health(app)["state"] == "degraded"


# ---- human handoff -------------------------------------------------------------------------------

def test_after_a_handoff_the_bot_is_silent_until_it_is_closed(online, openai_fake, twilio_fake):
    app = online(handoff_expiry_hours=12, business_hours="always")
    openai_fake.queue_function_call("request_human_handoff", {"reason": "Quer negociar contrato"})
    openai_fake.queue_text("Combinado! Uma pessoa da equipe vai continuar a conversa por aqui.")
    assert wait_settled(app, say(app, twilio_fake, "Quero falar com uma pessoa")).status == "answered"
    assert sent_to(twilio_fake) == ["Combinado! Uma pessoa da equipe vai continuar a conversa por aqui."]
    with app.extensions["endrigo"].db.session() as session:
        handoff = session.scalar(select(Handoff))
        assert handoff.status == "open"
        assert 11.9 * 3600 < (handoff.expires_at - handoff.opened_at).total_seconds() <= 12 * 3600

    silent = wait_settled(app, say(app, twilio_fake, "Alô? Tem alguém aí?"))
    assert silent.status == "waiting_human"
    assert len(sent_to(twilio_fake)) == 1 and len(bodies(openai_fake)) == 2

    with app.extensions["endrigo"].db.session() as session:
        handoff = session.scalar(select(Handoff))
        handoff.status, handoff.closed_at, handoff.closed_by = "closed", utcnow(), "operador"
    openai_fake.queue_text("Oi de novo! Como posso ajudar?")
    assert wait_settled(app, say(app, twilio_fake, "Voltei")).status == "answered"
    assert sent_to(twilio_fake)[-1] == "Oi de novo! Como posso ajudar?"
