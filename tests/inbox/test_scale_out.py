"""Scale-out with real processes: two web instances and two Celery workers on one PostgreSQL and one Redis.

* Load: CI size 100 messages from 20 users (``SCALE_OUT_FULL=1``: 500 from 50), each user's
  messages alternating between the two instances, with bursts: every message answered
  exactly once (counted at the Twilio emulator), each user's replies in order.
* A worker SIGKILLed mid-turn: the other worker finishes its turn; nothing lost or doubled.
* Redis stopped and restarted (a redis-server of the test's own, no persistence) under
  load: webhooks keep answering 200 and nothing is lost or doubled.

Needs PostgreSQL (TEST_DATABASE_URL) and Redis on 127.0.0.1 (REDIS_URL, default
redis://127.0.0.1:6379/13: a DB number and a key prefix of the test's own).
"""
from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from app.pipeline.notices import HOLDING
from tests.conftest import TEST_DATABASE_URL, wait_for
from tests.ops.test_metrics import parse, value
from tests.pg_schema import throwaway_schema
from tests.redis_server import RedisServer, free_port, unique_prefix
from tests.scale_cluster import Cluster

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13")
FULL = os.environ.get("SCALE_OUT_FULL") == "1"
USERS, PER_USER = (50, 10) if FULL else (20, 5)

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs PostgreSQL (TEST_DATABASE_URL)")


def _redis_or_skip(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {url}")


def phone(user: int) -> str:
    return f"whatsapp:+551190000{user:04d}"


def body(user: int, k: int) -> str:
    return f"usuario {user} mensagem {k}"


def answers(twilio) -> list[dict]:
    """What Twilio received, less the holding notices (a slow, loaded machine may send one per turn)."""
    with twilio._lock:
        sent = list(twilio.sent)
    holding = [m for m in sent if m["body"] == HOLDING]
    assert len(holding) == len({m["to"] for m in holding}), "a user got the holding message twice"
    return [m for m in sent if m["body"] != HOLDING]


def replies_by_user(twilio) -> dict[str, list[list[int]]]:
    """Per recipient, in the order Twilio received them: the message numbers each reply answers."""
    out: dict[str, list[list[int]]] = defaultdict(list)
    for message in answers(twilio):
        out[message["to"]].append([int(n) for n in re.findall(r"mensagem (\d+)", message["body"] or "")])
    return out


def assert_each_message_answered_once_in_order(twilio, users: int, per_user: int) -> None:
    replies = replies_by_user(twilio)
    assert sorted(replies) == sorted(phone(u) for u in range(users))
    for user in range(users):
        answered = replies[phone(user)]
        flat = [n for reply in answered for n in reply]
        # Each message in exactly one reply (a burst: one reply for all of it), none twice.
        assert sorted(flat) == list(range(1, per_user + 1)), (phone(user), answered)
        # Replies in the order the user wrote.
        assert flat == sorted(flat), (phone(user), answered)


def send_conversations(cluster: Cluster, users: int, per_user: int, errors: list, *, pause: float = 0.45,
                       start_user: int = 0) -> None:
    """Each user writes ``per_user`` messages, alternating instances; messages 2-3 are a burst."""
    def converse(user: int) -> None:
        with requests.Session() as session:
            for k in range(1, per_user + 1):
                form = cluster.twilio.inbound_form(from_=phone(user), body=body(user, k))
                for _attempt in range(50):
                    try:
                        status = cluster.post(user + k, form, session)
                        break
                    except requests.RequestException:
                        time.sleep(0.1)  # Twilio retries a webhook it could not deliver
                else:
                    status = None
                if status != 200:
                    errors.append((user, k, status))
                time.sleep(0.01 if k == 2 else pause)

    with ThreadPoolExecutor(max_workers=min(users, 25)) as pool:
        list(pool.map(converse, range(start_user, start_user + users)))


@pytest.fixture(scope="module")
def pg_url():
    url, drop = throwaway_schema(TEST_DATABASE_URL)
    yield url
    drop()


@pytest.fixture(scope="module")
def cluster(pg_url, _twilio_server, _openai_server, tmp_path_factory):
    _redis_or_skip(REDIS_URL)
    prefix = unique_prefix("scale")
    cluster = Cluster(pg_url, REDIS_URL, prefix, _twilio_server, _openai_server, tmp_path_factory.mktemp("scale"))
    try:
        cluster.start_webs(2)
        cluster.worker_metrics = f"127.0.0.1:{free_port()}"
        cluster.start_worker("w1", wait=False)
        cluster.start_worker("w2", wait=False, WORKER_METRICS_ADDRESS=cluster.worker_metrics)
        cluster.wait_worker_ready("w1")
        cluster.wait_worker_ready("w2")
        yield cluster
    finally:
        cluster.stop()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)


def test_two_web_instances_two_workers_every_message_answered_once_in_order(cluster, twilio_fake, openai_fake):
    openai_fake.set_latency(0.05)
    errors: list = []
    started = time.monotonic()
    send_conversations(cluster, USERS, PER_USER, errors)
    assert errors == []
    total = USERS * PER_USER
    try:
        wait_for(lambda: cluster.answered() == total, timeout=120 if FULL else 40, interval=0.2)
    except AssertionError:
        raise AssertionError(f"{cluster.answered()}/{total} answered\n{cluster.logs()}") from None
    elapsed = time.monotonic() - started
    time.sleep(1.0)  # a duplicate, if any, would arrive now
    assert_each_message_answered_once_in_order(twilio_fake, USERS, PER_USER)
    assert len(answers(twilio_fake)) == cluster.answered_turns()  # one reply per turn, none twice
    assert cluster.answered_turns() < total  # bursts were answered as one turn
    # Both workers took turns (the queue spreads users over them).
    logs = {name: (cluster.logdir / f"{name}.log").read_text(errors="replace") for name in ("w1", "w2")}
    assert all(re.search(r"turn \d+ answered", text) for text in logs.values())
    # Metrics: each web instance counts the webhooks it stored; the database figures are the
    # same from either; a worker serves its own counts (WORKER_METRICS_ADDRESS).
    webs = [parse(cluster.scrape(base + "/metrics")) for _process, base in cluster.webs]
    assert sum(value(s, "endrigo_webhooks_received_total", outcome="stored") for s in webs) == total
    assert all(value(s, "endrigo_turns_total", outcome="answered") == cluster.answered_turns() for s in webs)
    assert all(value(s, "endrigo_queue_depth") == 0 for s in webs)
    worker = parse(cluster.scrape(f"http://{cluster.worker_metrics}/metrics"))
    assert 0 < value(worker, "endrigo_stage_duration_seconds_count", stage="answer") < cluster.answered_turns()
    assert requests.get(f"http://{cluster.worker_metrics}/metrics", timeout=5).status_code == 401
    print(f"\n{total} messages from {USERS} users: {cluster.answered_turns()} turns in {elapsed:.1f} s")


def test_a_worker_killed_mid_turn_its_turn_is_finished_by_the_other_worker(cluster, twilio_fake, openai_fake):
    openai_fake.set_latency(1.5)  # the kill lands while the answer is being written
    users = range(100, 108)
    for user in users:
        assert cluster.post(user, twilio_fake.inbound_form(from_=phone(user), body=body(user, 1))) == 200
    victim = cluster.workers["w1"].pid

    def victim_mid_turn():
        return any(owner.split(":")[1] == str(victim) for owner in cluster.lease_owners())
    wait_for(victim_mid_turn, timeout=20, interval=0.05)
    assert answers(twilio_fake) == []
    cluster.kill("w1")
    try:
        wait_for(lambda: len(answers(twilio_fake)) == len(users), timeout=30, interval=0.1)
    except AssertionError:
        raise AssertionError(f"{len(answers(twilio_fake))}/{len(users)} replies\n{cluster.logs()}") from None
    time.sleep(2.0)  # the dead worker's task comes back after the visibility timeout: no second reply
    assert sorted(Counter(m["to"] for m in answers(twilio_fake)).values()) == [1] * len(users)
    assert cluster.answered() == cluster.inbound()
    w2 = (cluster.logdir / "w2.log").read_text(errors="replace")
    assert "breaking the lease of dead process" in w2


def test_redis_stopped_and_restarted_under_load_loses_nothing(_twilio_server, _openai_server, twilio_fake,
                                                             openai_fake, tmp_path):
    url, drop = throwaway_schema(TEST_DATABASE_URL)  # a schema of its own: its counts are its own
    server = RedisServer().start()
    cluster = Cluster(url, server.url(0), unique_prefix("restart"), _twilio_server, _openai_server, tmp_path)
    try:
        cluster.start_webs(2)
        cluster.start_worker("w1", wait=False)
        cluster.start_worker("w2", wait=False)
        cluster.wait_worker_ready("w1")
        cluster.wait_worker_ready("w2")
        openai_fake.set_latency(0.05)
        users, per_user = 10, 4
        errors: list = []
        sender = threading.Thread(target=send_conversations, args=(cluster, users, per_user, errors),
                                  kwargs={"pause": 0.6})
        sender.start()
        time.sleep(0.8)
        server.stop()  # Redis gone, its queue and keys with it
        time.sleep(1.5)
        health = requests.get(cluster.webs[0][1] + "/health", timeout=5).json()
        server.start()  # back on the same port, empty
        sender.join()
        assert errors == []
        assert health["status"] == "degraded" and health["queue"]["reachable"] is False
        total = users * per_user
        try:
            wait_for(lambda: cluster.answered() == total, timeout=40, interval=0.2)
        except AssertionError:
            raise AssertionError(f"{cluster.answered()}/{total} answered\n{cluster.logs()}") from None
        time.sleep(1.0)
        assert_each_message_answered_once_in_order(twilio_fake, users, per_user)
        assert len(answers(twilio_fake)) == cluster.answered_turns()
    finally:
        cluster.stop()
        server.stop()
        drop()


def test_a_prefork_child_killed_mid_turn_has_its_task_redelivered_by_celery(_twilio_server, _openai_server,
                                                                          twilio_fake, openai_fake, tmp_path):
    """acks_late + reject_on_worker_lost: the parent puts the dead child's task back on the queue."""
    _redis_or_skip(REDIS_URL)
    url, drop = throwaway_schema(TEST_DATABASE_URL)
    prefix = unique_prefix("prefork")
    cluster = Cluster(url, REDIS_URL, prefix, _twilio_server, _openai_server, tmp_path)
    try:
        cluster.start_webs(1)
        worker = cluster.start_worker("p1", concurrency=1, pool="processes")  # = prefork (see app/worker.py)
        openai_fake.set_latency(2.0)
        assert cluster.post(0, twilio_fake.inbound_form(from_=phone(1), body=body(1, 1))) == 200

        def child_mid_turn():
            owners = [o.split(":")[1] for o in cluster.lease_owners()]
            return next((int(pid) for pid in owners if int(pid) != worker.pid), None)
        try:
            child = wait_for(child_mid_turn, timeout=20, interval=0.05)
        except AssertionError:
            raise AssertionError(cluster.logs()) from None
        os.kill(child, 9)
        try:
            wait_for(lambda: len(answers(twilio_fake)) == 1 and cluster.answered() == 1, timeout=30, interval=0.1)
        except AssertionError:
            raise AssertionError(cluster.logs()) from None
        time.sleep(1.0)
        assert len(answers(twilio_fake)) == 1
        log = (cluster.logdir / "p1.log").read_text(errors="replace")
        assert "WorkerLostError" in log
        received = re.findall(r"Task endrigo\.drain\[([0-9a-f-]+)\] received", log)
        assert any(received.count(task) >= 2 for task in received), received  # the same task, delivered again
    finally:
        cluster.stop()
        drop()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
