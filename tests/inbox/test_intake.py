"""The durable inbound insert (app/inbox/intake.py): group commit by one writer thread;
repeats inside one batch are caught."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.models import Message, User

PATH = "/webhook/whatsapp"


@pytest.fixture
def app(make_app):
    return make_app(start_workers=False)


def count(app, model, *where):
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def test_group_commit_under_concurrency_stores_each_sid_once_and_counts_right(app, twilio_fake):
    """Many requests at once share transactions; repeats inside one batch are still caught."""
    import threading

    from app.turn import Inbound

    writer = app.extensions["endrigo"].inbound_writer
    sids = ["SM" + f"{i:032x}" for i in range(40)]
    results, errors = [], []

    def store(sid, phone):
        try:
            inbound = Inbound(sid=sid, phone=phone, wa_id=None, profile_name="P", body="oi", kind="text",
                              media_url=None, media_type=None, num_media=0)
            results.append((sid, writer.store(inbound, "whatsapp")))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(sid, f"+55119000000{i % 4:02d}"))
               for i, sid in enumerate(sids + sids[:10])]  # 10 sids arrive twice
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    created = [sid for sid, (_, was_created) in results if was_created]
    assert sorted(created) == sorted(sids)  # each sid created exactly once
    assert count(app, Message) == 40
    with app.extensions["endrigo"].db.session() as session:
        assert sorted(session.scalars(select(User.message_count))) == [10, 10, 10, 10]


def test_one_batch_with_repeated_users_and_sids_is_stored_right(app):
    """Three statements for a whole batch: repeated phones share a user, a repeated sid is a duplicate."""
    from app.inbox.intake import _store_batch
    from app.turn import Inbound

    def item(sid, phone, name):
        return Inbound(sid=sid, phone=phone, wa_id=None, profile_name=name, body="oi", kind="text",
                       media_url=None, media_type=None, num_media=0), "whatsapp"

    db = app.extensions["endrigo"].db
    first = _store_batch(db, [item("SM" + "1" * 32, "+5511900000001", "Ana")])
    batch = [item("SM" + "2" * 32, "+5511900000001", "Ana Paula"), item("SM" + "3" * 32, "+5511900000002", "Bia"),
             item("SM" + "2" * 32, "+5511900000001", "Ana Paula"), item("SM" + "1" * 32, "+5511900000001", "Ana"),
             item("SM" + "4" * 32, "+5511900000002", None)]
    results = _store_batch(db, batch)
    ana, bia = first[0][0], results[1][0]
    assert results == [(ana, True), (bia, True), (ana, False), (ana, False), (bia, True)]
    with db.session() as session:
        users = {u.phone: (u.message_count, u.profile_name) for u in session.scalars(select(User))}
    assert users == {"+5511900000001": (2, "Ana"), "+5511900000002": (2, "Bia")}
    assert count(app, Message) == 4


def test_when_a_batch_fails_each_message_is_stored_on_its_own(app, monkeypatch):
    """One row the database refuses must not fail the other requests of its batch."""
    from app.inbox import intake
    from app.inbox.intake import _Pending
    from app.turn import Inbound

    refused = "SM" + "f" * 32
    store_batch = intake._store_batch

    def refuse_one_row(db, items):
        if any(inbound.sid == refused for inbound, _ in items):
            raise ValueError("the database refused a row")
        return store_batch(db, items)

    monkeypatch.setattr(intake, "_store_batch", refuse_one_row)

    def pending(sid, phone):
        return _Pending(Inbound(sid=sid, phone=phone, wa_id=None, profile_name="P", body="oi", kind="text",
                                media_url=None, media_type=None, num_media=0), "whatsapp")

    batch = [pending("SM" + "a" * 32, "+5511900000001"), pending(refused, "+5511900000002"),
             pending("SM" + "b" * 32, "+5511900000003")]
    app.extensions["endrigo"].inbound_writer._write(batch)
    assert all(p.done.is_set() for p in batch)
    assert [type(p.error).__name__ for p in batch] == ["NoneType", "ValueError", "NoneType"]
    assert batch[0].result[1] is True and batch[2].result[1] is True
    with app.extensions["endrigo"].db.session() as session:
        assert sorted(session.scalars(select(Message.provider_sid))) == ["SM" + "a" * 32, "SM" + "b" * 32]
