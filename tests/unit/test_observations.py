"""Observing records what was seen; only the owner's ``settle`` ends an operation."""

from __future__ import annotations

import uuid

import pytest

from cloudstate.domain.events import EventType
from cloudstate.domain.observations import Observation, Snapshot, confirmed_gone, observe, settle
from cloudstate.domain.states import InstanceState, Operation


def running(operation: Operation) -> tuple[Snapshot, Observation]:
    current = Snapshot(InstanceState.RUNNING, "running", operation=operation)
    seen = Observation(uuid.uuid4(), "i-1", InstanceState.RUNNING, "running")
    return current, seen


@pytest.mark.parametrize("operation", [Operation.REBOOTING, Operation.STARTING, Operation.STOPPING])
def test_an_observation_never_ends_an_action_in_flight(operation: Operation) -> None:
    """A listing reports what it saw: whatever it shows, the action stays in flight until
    its owner, the executor, settles it."""
    after, changes = observe(*running(operation))
    assert after.operation is operation
    assert EventType.INSTANCE_ACTION_COMPLETED not in [change.type for change in changes]


def test_a_destroy_in_flight_survives_a_confirmed_absence_until_settled() -> None:
    """``confirmed_gone`` records the termination; the destroy is the owner's to complete."""
    current = Snapshot(InstanceState.SHUTTING_DOWN, operation=Operation.DESTROYING)
    after, changes = confirmed_gone(current)
    assert (after.state, after.operation) == (InstanceState.TERMINATED, Operation.DESTROYING)
    assert [change.type for change in changes] == [EventType.INSTANCE_STATE_CHANGED]
    settled, verdict = settle(after)
    assert settled.operation is None
    assert [change.type for change in verdict] == [EventType.INSTANCE_ACTION_COMPLETED]


def test_the_owner_settles_at_the_target_and_fails_when_the_instance_ended_elsewhere() -> None:
    done, completed = settle(Snapshot(InstanceState.STOPPED, operation=Operation.STOPPING))
    failed, refused = settle(Snapshot(InstanceState.TERMINATED, operation=Operation.STARTING))
    waiting, nothing = settle(Snapshot(InstanceState.STOPPING, operation=Operation.STOPPING))
    assert (done.operation, [c.type for c in completed]) == (
        None,
        [EventType.INSTANCE_ACTION_COMPLETED],
    )
    assert (failed.operation, [c.type for c in refused]) == (
        None,
        [EventType.INSTANCE_ACTION_FAILED],
    )
    assert refused[0].details["error"] == "instance became terminated during starting"
    assert (waiting.operation, nothing) == (Operation.STOPPING, [])


def test_a_launch_ends_when_the_instance_settles_with_no_event_of_its_own() -> None:
    """The launcher's work ended when the create was recorded; ``running`` (or an end)
    simply clears the launching flag."""
    current = Snapshot(InstanceState.PENDING, operation=Operation.LAUNCHING)
    seen = Observation(uuid.uuid4(), "i-1", InstanceState.RUNNING, "running")
    after, changes = observe(current, seen)
    assert after.operation is None
    assert [change.type for change in changes] == [EventType.INSTANCE_STATE_CHANGED]
