"""The durable inbox: per-user ordering, coalescing, retries and crash recovery.

The webhook only INSERTs the inbound row (``intake``) and calls ``Inbox.notify(user_id)``.
A thread of the executor then:

1. claims the user's lease with one atomic UPDATE (``leases``), so one user's messages
   are never processed concurrently, in any thread of any process;
2. takes every pending inbound message as ONE turn at once and runs the pipeline
   (``turns``); when a newer message arrives before the answer is decided, the attempt is
   dropped (nothing of it is sent), the user is given COALESCE_WINDOW_SECONDS of quiet,
   and the grown turn is answered by a second attempt that is not dropped again: a burst
   of any length costs at most two model calls and is answered once;
3. records the outcome: answered; or waiting for a retry with backoff (a holding message
   goes out once); or failed with its reason (an apology goes out) (``outcomes``);
4. releases the lease and looks again, so a message that arrived meanwhile is not stranded.

The recovery loop renews the leases this process holds, breaks those of dead processes,
notifies every user with work left behind and runs the hourly housekeeping
(``maintenance``). All state is in the database, so a crash loses nothing. This module
is the scheduler that ties the parts together.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from app.inbox import maintenance, turns
from app.inbox.leases import Leases
from app.logging import work_context
from app.turn import TurnSuperseded

log = logging.getLogger(__name__)


class Inbox:
    def __init__(self, services):
        self.services = services
        self.settings = services.settings
        self.db = services.db
        self.leases = Leases(services.db, services.settings.lease_seconds)
        self._executor: ThreadPoolExecutor | None = None
        self._scheduled: set[int] = set()
        self._scheduled_lock = threading.Lock()
        self._stop = threading.Event()
        self._recovery_thread: threading.Thread | None = None
        self._running: dict[int, turns.AttemptGuard] = {}  # user id -> guard of the attempt at work

    @property
    def owner(self) -> str:
        return self.leases.owner

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=self.settings.workers, thread_name_prefix="inbox")
        self._recovery_thread = threading.Thread(target=self._recovery_loop, name="inbox-recovery", daemon=True)
        self._recovery_thread.start()

    def shutdown(self, wait: bool = True) -> None:
        self._stop.set()
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=not wait)
            self._executor = None

    def _recovery_loop(self) -> None:
        last_maintenance = 0.0
        while not self._stop.is_set():
            try:
                self.leases.renew_held()
                self.recover()
                if time.monotonic() - last_maintenance >= maintenance.MAINTENANCE_INTERVAL_SECONDS:
                    last_maintenance = time.monotonic()
                    self.maintenance()
            except Exception:  # noqa: BLE001 - keep sweeping; the error is logged
                log.exception("inbox recovery sweep failed")
            self._stop.wait(self.settings.recovery_interval_seconds)

    def maintenance(self) -> None:
        """Hourly housekeeping (app/inbox/maintenance.py)."""
        maintenance.hourly(self.services)

    # ---- scheduling -------------------------------------------------------------------
    def notify(self, user_id: int) -> None:
        """Make sure someone processes ``user_id``'s pending messages (cheap, idempotent)."""
        guard = self._running.get(user_id)
        if guard is not None:
            guard.wake()  # a newer message: the attempt at work is stale (if it may still be dropped)
        if self._executor is None:
            return
        with self._scheduled_lock:
            if user_id in self._scheduled:
                return
            self._scheduled.add(user_id)
        try:
            self._executor.submit(self._drain_scheduled, user_id)
        except RuntimeError:  # executor shut down
            with self._scheduled_lock:
                self._scheduled.discard(user_id)

    def submit(self, fn, *args) -> None:
        """Run a short background task (e.g. a text fallback) on the inbox's executor."""
        if self._executor is None:
            fn(*args)
            return
        self._executor.submit(fn, *args)

    def _drain_scheduled(self, user_id: int) -> None:
        try:
            self.drain(user_id)
        except Exception:  # noqa: BLE001 - the recovery sweep will try this user again
            log.exception("processing user %s failed", user_id)
        finally:
            with self._scheduled_lock:
                self._scheduled.discard(user_id)

    def recover(self) -> list[int]:
        """Notify every user with work left behind; returns their ids."""
        self.leases.break_dead()
        user_ids = maintenance.users_with_work(self.db)
        for user_id in user_ids:
            self.notify(user_id)
        maintenance.handoff_sweep(self.services)
        return user_ids

    def retry_failed_turn(self, turn_id: int) -> bool:
        """Operator's "retry": a failed turn runs again now, with a fresh retry schedule."""
        user_id = maintenance.reopen_failed_turn(self.db, turn_id)
        if user_id is None:
            return False
        self.notify(user_id)
        return True

    def depth(self) -> int:
        """Inbound messages not yet answered (received or in a turn being processed)."""
        return maintenance.pending_count(self.db)

    # ---- processing -------------------------------------------------------------------
    def drain(self, user_id: int) -> None:
        """Process the user's pending work until none is left (or another process holds the lease)."""
        while not self._stop.is_set():
            if not self.leases.claim(user_id):
                return  # the holder looks again after releasing
            try:
                worked = self._process_next_turn(user_id)
                while worked and not self._stop.is_set():
                    worked = self._process_next_turn(user_id)
            finally:
                self.leases.release(user_id)
            # A message committed after our last look, whose notify found the lease taken.
            if not maintenance.has_ready_work(self.db, user_id):
                return

    def _process_next_turn(self, user_id: int) -> bool:
        """Take and run the user's next turn; False when there is nothing to do now."""
        turn_id = turns.take_turn(self.db, user_id)
        if turn_id is None:
            return False
        may_abandon = True
        while True:
            guard = turns.AttemptGuard(self.db, user_id, may_abandon=may_abandon)
            self._running[user_id] = guard
            try:
                with work_context(f"turn={turn_id}"):
                    turns.run_turn(self.services, turn_id, guard)
                return True
            except TurnSuperseded:
                log.info("turn %s: a newer message arrived before the answer; answering the grown turn", turn_id)
            finally:
                self._running.pop(user_id, None)
            # Once: the next attempt waits for quiet, takes the new messages and is not dropped again.
            may_abandon = False
            turns.wait_for_quiet(self.db, user_id, self.settings.coalesce_window_seconds, self._stop)
            turn_id = turns.take_turn(self.db, user_id) or turn_id
