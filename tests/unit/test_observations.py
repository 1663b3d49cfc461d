"""Observation rules that decide when an in-flight operation is over."""

from __future__ import annotations

import uuid

from cloudstate.domain.events import EventType
from cloudstate.domain.observations import Observation, Snapshot, observe
from cloudstate.domain.states import InstanceState, Operation


def running(operation: Operation, *, sent: bool) -> tuple[Snapshot, Observation]:
    current = Snapshot(InstanceState.RUNNING, "running", operation=operation, operation_sent=sent)
    seen = Observation(uuid.uuid4(), "i-1", InstanceState.RUNNING, "running")
    return current, seen


def test_a_reboot_not_yet_sent_is_not_completed_by_seeing_the_instance_running() -> None:
    """A reboot starts and ends in ``running``: until the provider accepted it, a listing
    that shows the instance running says nothing, and the reboot stays in flight."""
    after, changes = observe(*running(Operation.REBOOTING, sent=False))
    assert after.operation is Operation.REBOOTING
    assert changes == []


def test_a_sent_reboot_is_completed_once_the_instance_is_running_again() -> None:
    after, changes = observe(*running(Operation.REBOOTING, sent=True))
    assert after.operation is None
    assert [change.type for change in changes] == [EventType.INSTANCE_ACTION_COMPLETED]


def test_a_start_is_completed_by_reaching_running_whether_or_not_it_was_sent() -> None:
    """Start and stop aim at a state other than where they began: reaching it (by someone
    else's hand, too) completes them."""
    after, changes = observe(*running(Operation.STARTING, sent=False))
    assert after.operation is None
    assert [change.type for change in changes] == [EventType.INSTANCE_ACTION_COMPLETED]
