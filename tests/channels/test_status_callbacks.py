"""Twilio's delivery status callbacks (app/channels/twilio/status.py): the status only moves
forward, error codes are kept, the row id in the callback URL finds a row before its SID is known."""
from __future__ import annotations

from sqlalchemy import select

from app.models import Message
from tests.conftest import post_signed, wait_for


def _sent_reply(app, twilio_fake):
    client = app.test_client()
    post_signed(client, "/webhook/whatsapp", twilio_fake.inbound_form(body="Oi"), twilio_fake.auth_token)
    return wait_for(lambda: twilio_fake.sent and twilio_fake.sent[0])


def test_status_callbacks_update_the_outbound_row_in_order(make_app, twilio_fake):
    app = make_app()
    sent = _sent_reply(app, twilio_fake)
    assert sent["status_callback"].startswith("https://bot.example.com/webhook/whatsapp/status?row=")
    client = app.test_client()

    def status_of():
        with app.extensions["endrigo"].db.session() as session:
            return session.scalar(select(Message).where(Message.provider_sid == sent["sid"]))

    wait_for(lambda: status_of() is not None)
    for status in ("sent", "delivered", "read", "sent"):  # the late "sent" must not win
        form = {"MessageSid": sent["sid"], "MessageStatus": status, "AccountSid": twilio_fake.account_sid}
        assert post_signed(client, "/webhook/whatsapp/status", form, twilio_fake.auth_token).status_code == 200
    assert status_of().status == "read"
    unsigned = client.post("/webhook/whatsapp/status", data={"MessageSid": sent["sid"], "MessageStatus": "failed"})
    assert unsigned.status_code == 403
    unknown = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"}
    assert post_signed(client, "/webhook/whatsapp/status", unknown, twilio_fake.auth_token).status_code == 200


def test_failed_delivery_records_the_error_code(make_app, twilio_fake):
    app = make_app()
    sent = _sent_reply(app, twilio_fake)
    wait_for(lambda: _row(app, sent["sid"]) is not None)
    form = {"MessageSid": sent["sid"], "MessageStatus": "undelivered", "ErrorCode": "63016",
            "ErrorMessage": "Outside the allowed window"}
    post_signed(app.test_client(), "/webhook/whatsapp/status", form, twilio_fake.auth_token)
    row = _row(app, sent["sid"])
    assert (row.status, row.error_code) == ("undelivered", "63016")


def _row(app, sid):
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(select(Message).where(Message.provider_sid == sid))


def test_a_status_callback_that_beats_the_recorded_sid_still_finds_its_row(make_app, twilio_fake):
    """Twilio may call back before we stored the SID it gave us: the row id in the URL finds it."""
    from app.channels.outbox import _record_sent
    from app.db import utcnow
    from app.models import User

    app = make_app(start_workers=False)
    services = app.extensions["endrigo"]
    with services.db.session() as session:
        user = User(phone="+5511912345678", first_seen_at=utcnow(), last_seen_at=utcnow())
        session.add(user)
        session.flush()
        row = Message(user_id=user.id, direction="out", channel="whatsapp", kind="text", body="oi",
                      status="sending", part_index=0)
        session.add(row)
        session.flush()
        row_id = row.id
    sid = "SM" + "7" * 32
    callback = services.status_callback_url(row_id)
    path = callback.replace("https://bot.example.com", "")
    form = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": twilio_fake.account_sid}
    assert post_signed(app.test_client(), path, form, twilio_fake.auth_token).status_code == 200
    assert (_row(app, sid).id, _row(app, sid).status) == (row_id, "delivered")
    # Our own bookkeeping, arriving later with Twilio's first answer ("queued"), keeps the news.
    _record_sent(services, row_id, sid, "queued")
    assert _row(app, sid).status == "delivered"
    # A forged row id is useless: the signature covers the query string.
    forged = app.test_client().post(path.replace(f"row={row_id}", f"row={row_id + 1}"), data=form,
                                    headers={"X-Twilio-Signature": twilio_fake.sign(callback, form)})
    assert forged.status_code == 403


def test_the_row_id_finds_only_a_row_whose_sid_is_not_yet_known(make_app, twilio_fake):
    """A callback whose SID is not ours never takes over a row that already has its own SID."""
    from app.db import utcnow
    from app.models import User

    app = make_app(start_workers=False)
    services = app.extensions["endrigo"]
    ours = "SM" + "1" * 32
    with services.db.session() as session:
        user = User(phone="+5511912345678", first_seen_at=utcnow(), last_seen_at=utcnow())
        session.add(user)
        session.flush()
        row = Message(user_id=user.id, direction="out", channel="whatsapp", kind="audio", body=None,
                      status="sent", part_index=0, provider_sid=ours)
        session.add(row)
        session.flush()
        row_id = row.id
    callback = services.status_callback_url(row_id)
    form = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "failed", "ErrorCode": "63019",
            "AccountSid": twilio_fake.account_sid}
    response = post_signed(app.test_client(), callback.replace("https://bot.example.com", ""), form,
                           twilio_fake.auth_token)
    assert response.status_code == 200
    assert (_row(app, ours).id, _row(app, ours).status, _row(app, ours).error_code) == (row_id, "sent", None)
    assert _row(app, "SM" + "2" * 32) is None
