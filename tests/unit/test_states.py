"""The instance state machine: which actions each state allows, what they do, and the lifecycle.

The expected tables here are written out by hand from SPEC §2 (not recomputed from the code), so a
change to the state machine has to change this file too.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudstate.domain.states import (
    FINAL,
    TRANSITIONAL,
    TRANSITIONS,
    Action,
    ActionEffect,
    InstanceState,
    Operation,
    allowed_actions,
    check_action,
    is_expected_transition,
    is_transitional,
    operation_done,
)
from cloudstate.exceptions import ActionNotAllowedError, ConflictError

S = InstanceState
A = Action
O = Operation  # noqa: E741 - mirrors S and A; the table below reads better with one letter

# Every (state, action) pair, with no operation in flight. SPEC §2: start from stopped, stop and
# reboot from running, destroy from anything not terminated.
#                     start  stop   reboot destroy
ALLOWED_GRID: dict[InstanceState, tuple[bool, bool, bool, bool]] = {
    S.NEW: (False, False, False, True),
    S.PENDING: (False, False, False, True),
    S.RUNNING: (False, True, True, True),
    S.STOPPING: (False, False, False, True),
    S.STOPPED: (True, False, False, True),
    S.REBOOTING: (False, False, False, True),
    S.SHUTTING_DOWN: (False, False, False, True),
    S.TERMINATED: (False, False, False, False),
    S.ERROR: (False, False, False, True),
    S.UNKNOWN: (False, False, False, True),
}
GRID_COLUMNS = (A.START, A.STOP, A.REBOOT, A.DESTROY)


def expected_allowed(state: InstanceState) -> set[Action]:
    return {action for action, ok in zip(GRID_COLUMNS, ALLOWED_GRID[state], strict=True) if ok}


EXPECTED_EFFECTS: dict[Action, ActionEffect] = {
    A.START: ActionEffect(O.STARTING, transitional=S.PENDING, target=S.RUNNING),
    A.STOP: ActionEffect(O.STOPPING, transitional=S.STOPPING, target=S.STOPPED),
    A.REBOOT: ActionEffect(O.REBOOTING, transitional=S.REBOOTING, target=S.RUNNING),
    A.DESTROY: ActionEffect(O.DESTROYING, transitional=S.SHUTTING_DOWN, target=S.TERMINATED),
}

OPERATION_TARGETS: dict[Operation, InstanceState] = {
    O.LAUNCHING: S.RUNNING,
    O.STARTING: S.RUNNING,
    O.STOPPING: S.STOPPED,
    O.REBOOTING: S.RUNNING,
    O.DESTROYING: S.TERMINATED,
}

EVERY_PAIR = list(itertools.product(InstanceState, Action))


def test_the_grid_covers_every_state_and_every_action() -> None:
    """A new state or action must be added to the hand-written table before this file passes."""
    assert set(ALLOWED_GRID) == set(InstanceState)
    assert set(GRID_COLUMNS) == set(Action)
    assert len(EVERY_PAIR) == 40


class TestActionsWithNothingInFlight:
    @pytest.mark.parametrize("state", list(InstanceState))
    def test_allowed_actions_match_the_table(self, state: InstanceState) -> None:
        allowed = allowed_actions(state)
        assert set(allowed) == expected_allowed(state)
        assert len(allowed) == len(set(allowed)), "no action is listed twice"

    @pytest.mark.parametrize(("state", "action"), EVERY_PAIR)
    def test_check_action_accepts_exactly_the_allowed_pairs(
        self, state: InstanceState, action: Action
    ) -> None:
        """Allowed → the action's effect; forbidden → 409-style error listing what is allowed."""
        if action in expected_allowed(state):
            assert check_action(action, state) == EXPECTED_EFFECTS[action]
            return
        with pytest.raises(ActionNotAllowedError) as caught:
            check_action(action, state)
        error = caught.value
        assert error.action == action
        assert error.state == state
        assert set(error.allowed) == {str(a) for a in expected_allowed(state)}
        message = str(error)
        assert f"cannot {action}:" in message
        assert str(state) in message
        for allowed in expected_allowed(state):
            assert str(allowed) in message.split("allowed actions:")[1]

    def test_a_forbidden_action_is_a_conflict(self) -> None:
        with pytest.raises(ConflictError):
            check_action(A.START, S.RUNNING)

    def test_the_message_lists_allowed_actions_for_a_running_instance(self) -> None:
        with pytest.raises(ActionNotAllowedError) as caught:
            check_action(A.START, S.RUNNING)
        assert str(caught.value) == "cannot start: running; allowed actions: stop, reboot, destroy"

    def test_the_message_says_none_when_a_terminated_instance_allows_nothing(self) -> None:
        with pytest.raises(ActionNotAllowedError) as caught:
            check_action(A.DESTROY, S.TERMINATED, subject="i-1")
        assert (
            str(caught.value) == "cannot destroy: instance i-1 is terminated; allowed actions: none"
        )
        assert caught.value.allowed == ()

    @pytest.mark.parametrize("action", list(Action))
    def test_terminated_allows_nothing(self, action: Action) -> None:
        assert allowed_actions(S.TERMINATED) == ()
        with pytest.raises(ActionNotAllowedError):
            check_action(action, S.TERMINATED)

    @pytest.mark.parametrize("state", sorted(set(InstanceState) - {S.TERMINATED}))
    def test_destroy_is_allowed_from_every_state_but_terminated(self, state: InstanceState) -> None:
        assert check_action(A.DESTROY, state) == EXPECTED_EFFECTS[A.DESTROY]


IN_FLIGHT = [O.LAUNCHING, O.STARTING, O.STOPPING, O.REBOOTING]


class TestActionsWithAnOperationInFlight:
    @pytest.mark.parametrize(
        ("state", "operation", "action"),
        list(itertools.product(InstanceState, IN_FLIGHT, Action)),
    )
    def test_only_destroy_can_be_added_while_an_operation_is_in_flight(
        self, state: InstanceState, operation: Operation, action: Action
    ) -> None:
        """A stop accepted but not yet observed still blocks a second stop, a start or a reboot."""
        may_destroy = A.DESTROY in expected_allowed(state)
        assert set(allowed_actions(state, operation)) == ({A.DESTROY} if may_destroy else set())
        if action is A.DESTROY and may_destroy:
            assert check_action(action, state, operation) == EXPECTED_EFFECTS[A.DESTROY]
        else:
            with pytest.raises(ActionNotAllowedError) as caught:
                check_action(action, state, operation)
            assert caught.value.allowed == (("destroy",) if may_destroy else ())

    @pytest.mark.parametrize(("state", "action"), EVERY_PAIR)
    def test_nothing_can_be_added_while_destroying(
        self, state: InstanceState, action: Action
    ) -> None:
        assert allowed_actions(state, O.DESTROYING) == ()
        with pytest.raises(ActionNotAllowedError) as caught:
            check_action(action, state, O.DESTROYING)
        assert caught.value.allowed == ()

    def test_the_error_shows_the_state_and_the_operation_in_flight(self) -> None:
        with pytest.raises(ActionNotAllowedError) as caught:
            check_action(A.STOP, S.RUNNING, O.STOPPING, subject="abc")
        assert caught.value.state == "running (stopping)"
        assert str(caught.value) == (
            "cannot stop: instance abc is running (stopping); allowed actions: destroy"
        )


@given(
    state=st.sampled_from(InstanceState),
    operation=st.one_of(st.none(), st.sampled_from(Operation)),
)
def test_an_operation_in_flight_never_adds_actions(
    state: InstanceState, operation: Operation | None
) -> None:
    """For any state and operation, the allowed actions are a subset of the idle state's."""
    assert set(allowed_actions(state, operation)) <= set(allowed_actions(state))


@given(
    state=st.sampled_from(InstanceState),
    operation=st.one_of(st.none(), st.sampled_from(Operation)),
    action=st.sampled_from(Action),
)
def test_check_action_agrees_with_allowed_actions(
    state: InstanceState, operation: Operation | None, action: Action
) -> None:
    allowed = allowed_actions(state, operation)
    if action in allowed:
        assert check_action(action, state, operation) == EXPECTED_EFFECTS[action]
    else:
        with pytest.raises(ActionNotAllowedError) as caught:
            check_action(action, state, operation)
        assert caught.value.allowed == tuple(str(a) for a in allowed)


class TestLifecycleGraph:
    def test_every_state_has_an_entry_naming_only_known_states(self) -> None:
        assert set(TRANSITIONS) == set(InstanceState)
        for successors in TRANSITIONS.values():
            assert successors <= set(InstanceState)

    def test_terminated_is_final(self) -> None:
        assert {S.TERMINATED} == FINAL
        assert TRANSITIONS[S.TERMINATED] == frozenset()

    @pytest.mark.parametrize("state", sorted(set(InstanceState) - {S.TERMINATED}))
    def test_every_live_state_can_reach_terminated(self, state: InstanceState) -> None:
        assert S.TERMINATED in TRANSITIONS[state]

    @pytest.mark.parametrize("state", list(InstanceState))
    def test_no_state_leads_back_to_new(self, state: InstanceState) -> None:
        """``new`` means "not yet sent"; once sent, an instance never becomes new again."""
        assert S.NEW not in TRANSITIONS[state]

    @pytest.mark.parametrize("state", sorted(set(InstanceState) - {S.TERMINATED}))
    def test_terminated_cannot_come_back(self, state: InstanceState) -> None:
        assert is_expected_transition(S.TERMINATED, state) is False

    @pytest.mark.parametrize("state", list(InstanceState))
    def test_no_change_is_always_expected(self, state: InstanceState) -> None:
        assert is_expected_transition(state, state) is True

    @pytest.mark.parametrize(
        ("old", "new", "expected"),
        [
            (S.NEW, S.PENDING, True),
            (S.NEW, S.RUNNING, True),
            (S.NEW, S.STOPPED, False),
            (S.PENDING, S.RUNNING, True),
            (S.PENDING, S.REBOOTING, False),
            (S.RUNNING, S.STOPPING, True),
            (S.RUNNING, S.REBOOTING, True),
            (S.RUNNING, S.PENDING, False),
            (S.STOPPING, S.STOPPED, True),
            (S.STOPPING, S.REBOOTING, False),
            (S.STOPPED, S.PENDING, True),
            (S.STOPPED, S.STOPPING, False),
            (S.STOPPED, S.REBOOTING, False),
            (S.REBOOTING, S.RUNNING, True),
            (S.SHUTTING_DOWN, S.TERMINATED, True),
            (S.SHUTTING_DOWN, S.RUNNING, False),
            (S.ERROR, S.RUNNING, True),
            (S.ERROR, S.NEW, False),
            (S.UNKNOWN, S.STOPPED, True),
            (S.UNKNOWN, S.ERROR, True),
            (S.UNKNOWN, S.NEW, False),
        ],
    )
    def test_is_expected_transition_follows_the_graph(
        self, old: InstanceState, new: InstanceState, expected: bool
    ) -> None:
        assert is_expected_transition(old, new) is expected

    @pytest.mark.parametrize(("state", "action"), EVERY_PAIR)
    def test_an_accepted_action_moves_along_the_graph(
        self, state: InstanceState, action: Action
    ) -> None:
        """The first observable step of an accepted action is an expected transition."""
        if action not in expected_allowed(state):
            return
        effect = EXPECTED_EFFECTS[action]
        assert is_expected_transition(state, effect.transitional) or is_expected_transition(
            state, effect.target
        )
        assert is_expected_transition(effect.transitional, effect.target)

    def test_transitional_states_are_the_ones_that_change_on_their_own(self) -> None:
        expected = {S.NEW, S.PENDING, S.STOPPING, S.REBOOTING, S.SHUTTING_DOWN}
        assert expected == TRANSITIONAL
        for state in InstanceState:
            assert is_transitional(state) is (state in expected)


class TestOperationDone:
    def test_every_operation_has_a_target(self) -> None:
        assert set(OPERATION_TARGETS) == set(Operation)

    @pytest.mark.parametrize(
        ("operation", "state"), list(itertools.product(Operation, InstanceState))
    )
    def test_done_when_the_target_is_reached_failed_when_terminated_or_error(
        self, operation: Operation, state: InstanceState
    ) -> None:
        """True at the target; False once it can no longer succeed; None while in progress."""
        result = operation_done(operation, state)
        if state == OPERATION_TARGETS[operation]:
            assert result is True
        elif state in (S.TERMINATED, S.ERROR):
            assert result is False
        else:
            assert result is None

    def test_destroy_succeeds_on_terminated(self) -> None:
        assert operation_done(O.DESTROYING, S.TERMINATED) is True

    def test_a_start_that_ends_terminated_has_failed(self) -> None:
        assert operation_done(O.STARTING, S.TERMINATED) is False

    def test_a_stop_is_still_in_progress_while_stopping(self) -> None:
        assert operation_done(O.STOPPING, S.STOPPING) is None

    def test_a_launch_is_still_in_progress_while_pending(self) -> None:
        assert operation_done(O.LAUNCHING, S.PENDING) is None
