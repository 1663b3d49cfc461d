"""What a reconcile cycle may conclude about an instance it did not list."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from test_store import _launch, _order

from cloudstate.service.observations import _missing
from cloudstate.store import Store
from cloudstate.store.tables import Event, utcnow


def test_an_instance_that_ended_after_the_cycle_read_its_list_is_left_terminated(
    store: Store,
) -> None:
    """The cycle reads the uuids of live instances, then locks each missing one; an executor
    may have recorded it ``terminated`` in between. Judged on the fresh, locked row, it stays
    ``terminated`` with no event (the multi-process run saw 511 ``terminated → unknown``)."""
    [instance_uuid] = _launch(store, _order(1))
    with store.unit_of_work() as uow:
        row = uow.instances.get(instance_uuid)
        row.state, row.provider_id = "terminated", "i-gone"
        row.launched_at = utcnow() - timedelta(hours=1)
        uow.commit()
    with store.read() as session:
        before = session.scalar(select(func.count()).select_from(Event))
    with store.unit_of_work() as uow:
        [row] = uow.instances.locked([instance_uuid])
        _missing(uow, row, "sim", utcnow(), timedelta(seconds=0))
        uow.commit()
    with store.unit_of_work() as uow:
        assert uow.instances.get(instance_uuid).state == "terminated"
        assert uow.session.scalar(select(func.count()).select_from(Event)) == before
