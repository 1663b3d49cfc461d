"""The order supervisor: sees orders through to the end.

Every second it releases instances whose dependencies are running, times out launches past
their order's deadline, and pushes rollbacks (cancels included) until every instance of the
order is destroyed. All of it is read from the store each tick (see
``service.order_control``), so any worker can take over from one that died.
"""

from __future__ import annotations

from cloudstate.engine import failpoints
from cloudstate.engine.loop import TickResult
from cloudstate.service import order_control
from cloudstate.store import Store
from cloudstate.store.tables import utcnow


class OrderSupervisor:
    name = "orders"

    def __init__(self, store: Store) -> None:
        self.store = store

    def interval(self) -> float:
        return 1.0

    def tick(self) -> TickResult:
        released = order_control.release_dependencies(self.store)
        timed_out = order_control.time_out_orders(self.store, utcnow())
        if order_control.rolling_back(self.store):
            failpoints.hit("rollback.before_destroy")
        destroys = order_control.push_rollbacks(self.store)
        if destroys:
            failpoints.hit("rollback.after_destroy")
        worked = bool(released or timed_out or destroys)
        return TickResult(worked=worked, busy=order_control.open_work(self.store))
