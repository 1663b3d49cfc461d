"""The one claim/lease primitive (``store.claims``), on SQLite and PostgreSQL: a claim is
taken once, an expired lease is taken over, and a lost lease fences its old holder out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from cloudstate.store import Store
from cloudstate.store.claims import Lease, claim_one, claimable
from cloudstate.store.tables import Account, utcnow

LEASE = Lease(Account.lease_owner, Account.lease_expires_at)


def _accounts(store: Store, *names: str) -> None:
    with store.unit_of_work() as uow:
        for name in names:
            uow.accounts.add(name, "simulator")
        uow.commit()


def _take(store: Store, worker: str, seconds: float = 60) -> str | None:
    """Claim the first free account for ``worker``, as the reconciler leases one."""
    now = utcnow()
    with store.unit_of_work() as uow:
        row = claim_one(uow.session, select(Account).where(LEASE.free(now)).order_by(Account.id))
        if row is None:
            return None
        row.lease_owner, row.lease_expires_at = worker, now + timedelta(seconds=seconds)
        name = row.name
        uow.commit()
    return name


def test_a_claimed_row_is_not_claimed_again_until_its_lease_expires(store: Store) -> None:
    """Two accounts, three claimers: each account goes to one worker; the third finds none;
    once a lease has expired, its row is taken over."""
    _accounts(store, "a", "b")
    assert _take(store, "w1", seconds=0.2) == "a"
    assert _take(store, "w2") == "b"
    assert _take(store, "w3") is None
    with store.unit_of_work() as uow:
        uow.session.get_one(Account, 1).lease_expires_at = utcnow() - timedelta(seconds=1)
        uow.commit()
    assert _take(store, "w3") == "a"


def test_renewal_and_release_apply_only_while_the_lease_is_held(store: Store) -> None:
    """The fencing rule: the old holder's renewal and release match nothing once another
    worker has taken the lease over, so it cannot write under it."""
    _accounts(store, "a")
    _take(store, "old", seconds=60)
    now = utcnow()
    with store.unit_of_work() as uow:
        assert LEASE.renew(uow.session, Account.name == "a", "old", now, now + timedelta(60))
        assert not LEASE.renew(uow.session, Account.name == "a", "other", now, now)
        uow.commit()
    with store.unit_of_work() as uow:  # the lease runs out; "new" takes it over
        uow.session.get_one(Account, 1).lease_expires_at = now - timedelta(seconds=1)
        uow.commit()
    assert _take(store, "new") == "a"
    with store.unit_of_work() as uow:
        assert not LEASE.renew(uow.session, Account.name == "a", "old", utcnow(), utcnow())
        assert not LEASE.release(uow.session, Account.name == "a", "old")
        assert LEASE.release(uow.session, Account.name == "a", "new")
        uow.commit()
    with store.read() as session:
        assert session.get_one(Account, 1).lease_owner is None


@pytest.mark.postgres
def test_concurrent_claimers_skip_a_row_being_claimed(postgres_store: Store) -> None:
    """PostgreSQL: while one transaction is claiming a row, another claimer passes over it
    at once (SKIP LOCKED) instead of waiting, and takes the next."""
    _accounts(postgres_store, "a", "b")
    statement = select(Account).order_by(Account.id)
    with postgres_store.unit_of_work() as first, postgres_store.unit_of_work() as second:
        mine = claim_one(first.session, statement)
        theirs = list(second.session.scalars(claimable(second.session, statement)))
        assert mine is not None
        assert (mine.name, [row.name for row in theirs]) == ("a", ["b"])
