"""Property test: any sequence of store operations keeps the books balanced.

Every outbox number ever handed out is accounted for exactly once: still queued, sent and
later deleted by retention, or dropped by the offline bounds and announced in an
``outbox.dropped`` event. Event numbers stay gapless and each event keeps one outbox row
until it is sent or dropped.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from agent.metrics.folding import roll_up
from agent.store import Store
from protocol.desired import DesiredState

ops = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 2000)),
        st.tuples(st.just("samples"), st.integers(0, 5)),
        st.tuples(st.just("desired"), st.integers(0, 30)),
        st.tuples(st.just("local"), st.integers(0, 1)),
        st.tuples(st.just("observed"), st.integers(0, 3)),
        st.tuples(st.just("sent"), st.integers(0, 40)),
        st.tuples(st.just("prune"), st.integers(0, 3)),
        st.tuples(st.just("bounds"), st.integers(200, 20_000)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(ops)
def test_outbox_books_balance(program: list[tuple[str, int]]) -> None:
    work = Path(tempfile.mkdtemp(prefix="sb-store-prop-"))
    store = Store.open(work / "agent.db", device_id="prop-dev")
    clock = time.time()  # sent_at is wall-clock, and prune must be able to expire it
    deleted_sent = 0
    try:
        for op, arg in program:
            clock += 30
            if op == "event":
                store.event("e", "x" * arg)
            elif op == "samples":
                for i in range(arg):
                    store.record_samples(clock + i, {"cpu": float(i)})
                roll_up(store, clock + 120)
            elif op == "desired":
                store.put_desired(DesiredState(arg, None))
            elif op == "local":
                if arg:
                    store.put_local_desired(None)
                else:
                    store.clear_local_desired()
            elif op == "observed":
                store.save_observed([{"name": "web", "state": str(arg)}])
            elif op == "sent":
                stats = store.outbox_stats()
                if stats["first_pending_seq"] is not None:
                    store.outbox_mark_sent(stats["first_pending_seq"] + arg)
            elif op == "prune":
                out = store.prune(
                    raw=3600,
                    minute=86400,
                    hour=86400,
                    outbox_max_bytes=10**9,
                    outbox_max_age=10**9,
                    now=clock + arg * 3600,
                )
                deleted_sent += out["sent"]
            elif op == "bounds":
                store.enforce_outbox_bounds(max_bytes=arg, max_age=10**9)
            elif op == "reopen":
                store.close()
                store = Store.open(work / "agent.db", device_id="prop-dev")

        conn = store._conn
        issued = conn.execute("SELECT value FROM sequences WHERE name='outbox'").fetchone()[0]
        present = [r[0] for r in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
        evs = store.events(after_seq=0, limit=100_000)
        dropped_counts = sum(e.data["count"] for e in evs if e.kind == "outbox.dropped")
        dropped_seqs = {
            s
            for e in evs
            if e.kind == "outbox.dropped"
            for lo, hi in e.data["ranges"]
            for s in range(lo, hi + 1)
        }
        event(f"sent rows deleted: {bool(deleted_sent)}, drops: {bool(dropped_counts)}")
        assert len(present) + deleted_sent + dropped_counts == issued
        assert not dropped_seqs & set(present)
        assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
        # Each event's outbox copy appears at most once.
        copies = [
            r[0]
            for r in conn.execute(
                "SELECT json_extract(payload, '$.seq') FROM outbox WHERE kind = 'event'"
            )
        ]
        assert len(copies) == len(set(copies))
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
