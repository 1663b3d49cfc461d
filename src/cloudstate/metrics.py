"""Process metrics (Prometheus). Counters live in the process that does the work; state counts
(instances, events, deliveries) are read from the database at scrape time by the API."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PROVIDER_CALLS = Counter(
    "cloudstate_provider_calls", "Calls made to providers", ["account", "call"]
)
PROVIDER_ERRORS = Counter(
    "cloudstate_provider_errors", "Provider calls that failed", ["account", "call", "error"]
)
LOOP_LAG = Gauge(
    "cloudstate_loop_lag_seconds", "How late the last tick of each worker loop started", ["task"]
)
