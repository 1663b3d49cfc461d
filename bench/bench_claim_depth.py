"""Delivery claim cost against the depth of one queue: M deliveries waiting on one key.

    .venv/bin/python bench/bench_claim_depth.py [--depths 1000,50000] [--keys 200] [--claims 30]

For each depth M, a throwaway PostgreSQL database gets one subscription, M events on one
ordering key (a flapping instance, a receiver down for a day) and one event on each of
``--keys`` other keys, all queued by the real unit of work (so each key has its explicit
head). Then the deliverer's real claim (a window of 100) runs ``--claims`` times, each rolled
back so every run sees the same queue, and once more under ``EXPLAIN (ANALYZE, BUFFERS)``.
It prints the median claim time per depth and the ratio of the deepest to the shallowest:
the claim should cost what its window costs, not what is queued behind one head.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import timedelta

from explain_queries import _explaining, _throwaway
from sqlalchemy import text

from cloudstate.config import load_settings
from cloudstate.domain.events import EventDraft, EventType
from cloudstate.engine.sequencer import number_events
from cloudstate.service.accounts import add_subscription
from cloudstate.store import Store
from cloudstate.store.tables import utcnow

BASE = "postgresql://postgres@127.0.0.1:5432/test"
WINDOW = 100
BATCH = 2000


def seed(store: Store, depth: int, keys: int) -> None:
    """``depth`` events on the key ``flapping`` first (the oldest), then one per other key."""
    add_subscription(store, "http", "https://receiver.example/hook", {})
    subjects = ["flapping"] * depth + [f"steady-{n}" for n in range(keys)]
    for start in range(0, len(subjects), BATCH):
        with store.unit_of_work() as uow:
            for subject in subjects[start : start + BATCH]:
                draft = EventDraft(EventType.REALM_AVAILABILITY_CHANGED, {"realm": subject})
                uow.record(draft)
            uow.commit()
    while number_events(store):
        pass
    with store.unit_of_work() as uow:
        uow.session.execute(text("ANALYZE"))
        uow.commit()


def claim_once(store: Store) -> int:
    with store.unit_of_work() as uow:
        taken = uow.deliveries.claim("bench", WINDOW, utcnow(), timedelta(seconds=60))
        uow.session.rollback()
    return len(taken)


def measure(url: str, depth: int, keys: int, claims: int) -> float:
    with _throwaway(url) as scratch:
        store = Store.from_settings(load_settings(database_url=scratch))
        store.upgrade()
        try:
            seed(store, depth, keys)
            assert claim_once(store) == min(WINDOW, keys + 1)  # one per key, heads only
            times = []
            for _ in range(claims):
                started = time.perf_counter()
                claim_once(store)
                times.append((time.perf_counter() - started) * 1000)
            print(f"\n### claim of {WINDOW} with {depth:,} queued on one key, {keys} other keys\n")
            with _explaining(store):
                claim_once(store)
            return statistics.median(times)
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", default="1000,50000")
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--claims", type=int, default=30)
    parser.add_argument("--url", default=os.environ.get("CLOUDSTATE_BENCH_POSTGRES_URL", BASE))
    args = parser.parse_args()
    depths = [int(value) for value in args.depths.split(",")]
    medians = {depth: measure(args.url, depth, args.keys, args.claims) for depth in depths}
    print()
    for depth, ms in medians.items():
        print(f"claim.median_ms depth={depth:>7,}  {ms:7.2f} ms")
    shallow, deep = medians[min(depths)], medians[max(depths)]
    print(
        f"claim.ratio deepest/shallowest       {deep / shallow:7.2f}  (target <= 2.00: "
        f"{'met' if deep <= 2 * shallow else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
