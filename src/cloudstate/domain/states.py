"""Instance states, actions and the in-flight operation: the state machine, with no I/O.

The provider is the truth about an instance; cloudstate normalizes whatever it reports into
``InstanceState`` and keeps the raw string beside it. Actions are validated against the
normalized state *and* the operation in flight (Nova's vm_state/task_state split): a stop that
was accepted but not yet observed still blocks a second stop or a start.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cloudstate.exceptions import ActionNotAllowedError


class InstanceState(StrEnum):
    NEW = "new"  # accepted, not yet sent to the provider
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    REBOOTING = "rebooting"
    SHUTTING_DOWN = "shutting_down"
    TERMINATED = "terminated"
    ERROR = "error"  # launch or provider failure; the reason says which
    UNKNOWN = "unknown"  # cannot currently be observed; the reason says why


class Action(StrEnum):
    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    DESTROY = "destroy"


class Operation(StrEnum):
    """What cloudstate is doing to an instance right now (at most one at a time)."""

    LAUNCHING = "launching"
    STARTING = "starting"
    STOPPING = "stopping"
    REBOOTING = "rebooting"
    DESTROYING = "destroying"


class OperationStatus(StrEnum):
    """Where an accepted action is: ``queued`` (to send), ``calling`` (claimed, being sent),
    ``waiting`` (the provider accepted it; its executor awaits the evidence), then one of
    ``succeeded``, ``failed`` or ``cancelled`` (superseded before it was sent)."""

    QUEUED = "queued"
    CALLING = "calling"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


UNSETTLED_OPERATIONS = (OperationStatus.QUEUED, OperationStatus.CALLING, OperationStatus.WAITING)


class UnknownReason(StrEnum):
    """Why an instance is ``unknown``; events and the API carry it."""

    PROVIDER_UNREACHABLE = "provider_unreachable"
    CREDENTIALS = "credentials"
    NOT_YET_VISIBLE = "not_yet_visible"
    MISSING = "missing"  # absent from the provider's list, and we did not destroy it
    UNMAPPED_STATE = "unmapped_state"  # the provider reported a state we cannot map


TRANSITIONAL: frozenset[InstanceState] = frozenset(
    {
        InstanceState.NEW,
        InstanceState.PENDING,
        InstanceState.STOPPING,
        InstanceState.REBOOTING,
        InstanceState.SHUTTING_DOWN,
    }
)
"""States that change on their own soon; the reconciler polls fast while any is present."""

FINAL: frozenset[InstanceState] = frozenset({InstanceState.TERMINATED})
"""States an instance never leaves."""

_EVERY_STATE = frozenset(InstanceState)

TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    InstanceState.NEW: frozenset(
        {
            InstanceState.PENDING,
            InstanceState.RUNNING,
            InstanceState.ERROR,
            InstanceState.TERMINATED,
        }
    ),
    InstanceState.PENDING: frozenset(
        {
            InstanceState.RUNNING,
            InstanceState.STOPPING,
            InstanceState.STOPPED,
            InstanceState.SHUTTING_DOWN,
            InstanceState.TERMINATED,
            InstanceState.ERROR,
            InstanceState.UNKNOWN,
        }
    ),
    InstanceState.RUNNING: frozenset(
        {
            InstanceState.STOPPING,
            InstanceState.STOPPED,
            InstanceState.REBOOTING,
            InstanceState.SHUTTING_DOWN,
            InstanceState.TERMINATED,
            InstanceState.ERROR,
            InstanceState.UNKNOWN,
        }
    ),
    InstanceState.STOPPING: frozenset(
        {
            InstanceState.STOPPED,
            InstanceState.RUNNING,
            InstanceState.SHUTTING_DOWN,
            InstanceState.TERMINATED,
            InstanceState.ERROR,
            InstanceState.UNKNOWN,
        }
    ),
    InstanceState.STOPPED: frozenset(
        {
            InstanceState.PENDING,
            InstanceState.RUNNING,
            InstanceState.SHUTTING_DOWN,
            InstanceState.TERMINATED,
            InstanceState.ERROR,
            InstanceState.UNKNOWN,
        }
    ),
    InstanceState.REBOOTING: frozenset(
        {
            InstanceState.RUNNING,
            InstanceState.STOPPING,
            InstanceState.STOPPED,
            InstanceState.SHUTTING_DOWN,
            InstanceState.TERMINATED,
            InstanceState.ERROR,
            InstanceState.UNKNOWN,
        }
    ),
    InstanceState.SHUTTING_DOWN: frozenset(
        {InstanceState.TERMINATED, InstanceState.ERROR, InstanceState.UNKNOWN}
    ),
    InstanceState.TERMINATED: frozenset(),
    # An error or unknown instance may turn out to be in any live state once observed again.
    InstanceState.ERROR: _EVERY_STATE - {InstanceState.NEW, InstanceState.ERROR},
    InstanceState.UNKNOWN: _EVERY_STATE - {InstanceState.NEW, InstanceState.UNKNOWN},
}
"""The lifecycle graph: which normalized states may follow which.

Observation always wins (the provider is the truth), so the reconciler records a change that is
not in this graph too, but flags it as unexpected; tests use the graph to check the simulator.
"""

_ACTIONS_BY_STATE: dict[InstanceState, tuple[Action, ...]] = {
    InstanceState.NEW: (Action.DESTROY,),
    InstanceState.PENDING: (Action.DESTROY,),
    InstanceState.RUNNING: (Action.STOP, Action.REBOOT, Action.DESTROY),
    InstanceState.STOPPING: (Action.DESTROY,),
    InstanceState.STOPPED: (Action.START, Action.DESTROY),
    InstanceState.REBOOTING: (Action.DESTROY,),
    InstanceState.SHUTTING_DOWN: (Action.DESTROY,),
    InstanceState.TERMINATED: (),
    InstanceState.ERROR: (Action.DESTROY,),
    InstanceState.UNKNOWN: (Action.DESTROY,),
}


@dataclass(frozen=True)
class ActionEffect:
    """What accepting an action means: the operation it starts and the state it aims for."""

    operation: Operation
    transitional: InstanceState
    target: InstanceState


EFFECTS: dict[Action, ActionEffect] = {
    Action.START: ActionEffect(Operation.STARTING, InstanceState.PENDING, InstanceState.RUNNING),
    Action.STOP: ActionEffect(Operation.STOPPING, InstanceState.STOPPING, InstanceState.STOPPED),
    Action.REBOOT: ActionEffect(
        Operation.REBOOTING, InstanceState.REBOOTING, InstanceState.RUNNING
    ),
    Action.DESTROY: ActionEffect(
        Operation.DESTROYING, InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED
    ),
}


def allowed_actions(state: InstanceState, operation: Operation | None = None) -> tuple[Action, ...]:
    """The actions a caller may request now.

    While an operation is in flight only ``destroy`` may be added (it supersedes the others);
    once destroying, nothing more.
    """
    allowed = _ACTIONS_BY_STATE[state]
    if operation is None:
        return allowed
    if operation is Operation.DESTROYING:
        return ()
    return tuple(action for action in allowed if action is Action.DESTROY)


def check_action(
    action: Action, state: InstanceState, operation: Operation | None = None, subject: str = ""
) -> ActionEffect:
    """Return the action's effect, or raise ``ActionNotAllowedError`` listing what is allowed."""
    allowed = allowed_actions(state, operation)
    if action not in allowed:
        shown = f"{state} ({operation})" if operation else str(state)
        raise ActionNotAllowedError(action, shown, [str(a) for a in allowed], subject)
    return EFFECTS[action]


def is_expected_transition(old: InstanceState, new: InstanceState) -> bool:
    """True when ``old → new`` is on the lifecycle graph (or no change at all)."""
    return old == new or new in TRANSITIONS[old]


def is_transitional(state: InstanceState) -> bool:
    return state in TRANSITIONAL


def operation_done(operation: Operation, state: InstanceState) -> bool | None:
    """Has the observed ``state`` finished ``operation``?

    True: reached its target. False: the operation can no longer succeed (for example the
    instance terminated while starting). None: still in progress.
    """
    if operation is Operation.LAUNCHING:
        target = InstanceState.RUNNING
    else:
        target = next(e.target for e in EFFECTS.values() if e.operation is operation)
    if state == target:
        return True
    if state in (InstanceState.TERMINATED, InstanceState.ERROR):
        return False
    return None
