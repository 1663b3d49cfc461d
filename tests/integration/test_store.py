"""The store on real SQLite and real PostgreSQL: migrations, secrets at rest, the outbox."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, select, text

from cloudstate.config import load_settings
from cloudstate.domain.events import EventDraft, EventType
from cloudstate.domain.orders import resolve_order
from cloudstate.domain.states import InstanceState
from cloudstate.domain.subscriptions import SubscriptionFilter
from cloudstate.engine.sequencer import number_events
from cloudstate.exceptions import (
    AlreadyExistsError,
    ConflictError,
    CryptoError,
    NotFoundError,
    ValidationError,
)
from cloudstate.store import ConcurrentUpdateError, Store
from cloudstate.store import database as database_module
from cloudstate.store.database import Database
from cloudstate.store.repositories import InstanceQuery
from cloudstate.store.tables import Account, Base, Delivery, Event, Instance
from databases import psycopg_url

SECRET = "AKIA-very-secret-value-42"


def _order(count: int = 3, **extra: object) -> dict[str, object]:
    return {
        "account": "sim",
        "image": "img-basic",
        "hardware_profile": "small",
        "instances": [{"uuid": str(uuid.uuid4())} for _ in range(count)],
        **extra,
    }


def _launch(store: Store, request: dict[str, object]) -> list[uuid.UUID]:
    """Accept an order the way the service does: rows and instance.created events together."""
    order = resolve_order(request)
    with store.unit_of_work() as uow:
        account = uow.accounts.find("sim") or uow.accounts.add("sim", "simulator")
        uow.orders.add(order, request)
        for spec in order.instances:
            row = uow.instances.add(spec, account, order.id)
            uow.record(
                EventDraft(
                    EventType.INSTANCE_CREATED, {"state": "new"}, spec.uuid, order.id, "sim"
                ),
                row,
            )
        uow.commit()
    return [spec.uuid for spec in order.instances]


class TestMigrations:
    def test_upgrade_from_empty_creates_every_table_and_matches_the_models(
        self, settings: object, store: Store
    ) -> None:
        """A fresh database migrates to head, and the models have no drift from migrations."""
        assert store.database.is_current()
        with store.database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []

    def test_upgrade_is_idempotent(self, store: Store) -> None:
        """Running the upgrade again (as every start-up does) changes nothing."""
        head = store.database.current_revision()
        store.upgrade()
        assert store.database.current_revision() == head

    def test_new_sqlite_file_starts_without_schema(self, tmp_path: Path) -> None:
        """Before the upgrade a database reports no revision, so readiness can say so."""
        database = Database(f"sqlite:///{tmp_path / 'empty.db'}")
        assert database.current_revision() is None
        assert not database.is_current()
        database.upgrade()
        assert database.is_current()
        database.dispose()

    @pytest.mark.postgres
    def test_upgrade_from_empty_on_a_brand_new_postgres_database(self, postgres_url: str) -> None:
        """A PostgreSQL database that never saw cloudstate migrates from nothing to head."""
        admin = create_engine(
            postgres_url.replace("postgresql://", "postgresql+psycopg://"),
            isolation_level="AUTOCOMMIT",
        )
        name = f"cs_fresh_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = postgres_url.rsplit("/", 1)[0] + "/" + name
        database = Database(url)
        try:
            assert database.current_revision() is None
            database.upgrade()
            assert database.is_current()
            with database.engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"compare_type": True})
                assert compare_metadata(context, Base.metadata) == []
        finally:
            database.dispose()  # a failed assertion must not leave a connection open
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            admin.dispose()


@pytest.mark.postgres
class TestPooledConnections:
    """Connections are pinged at checkout only after sitting idle; a dead one is replaced."""

    @staticmethod
    def _backend(database: Database) -> int:
        with database.engine.connect() as connection:
            return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())

    @staticmethod
    def _counting_pings(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[object]:
        pings: list[object] = []
        ping = database.engine.dialect.do_ping

        def counted(dbapi_connection: object) -> bool:
            pings.append(dbapi_connection)
            return ping(dbapi_connection)

        monkeypatch.setattr(database.engine.dialect, "do_ping", counted)
        return pings

    def test_a_connection_back_a_moment_ago_is_used_without_a_ping(
        self, postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Back-to-back units of work reuse one connection and send no ping in between."""
        database = Database(postgres_url)
        pings = self._counting_pings(database, monkeypatch)
        try:
            first = self._backend(database)
            assert [self._backend(database) for _ in range(3)] == [first] * 3
            assert pings == []
        finally:
            database.dispose()

    def test_an_idle_connection_that_died_is_replaced_at_checkout(
        self, postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A pooled connection terminated while idle (as by a database restart) is pinged at
        the next checkout, found dead and replaced: the caller's statement just works."""
        monkeypatch.setattr(database_module, "IDLE_PING_SECONDS", 0.0)
        database = Database(postgres_url)
        pings = self._counting_pings(database, monkeypatch)
        try:
            dead = self._backend(database)
            admin = create_engine(psycopg_url(postgres_url))
            with admin.begin() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dead})
            admin.dispose()
            assert self._backend(database) not in (dead, 0)
            assert len(pings) >= 1
        finally:
            database.dispose()


class TestSecretsAtRest:
    def test_credentials_are_encrypted_in_the_rows(self, store: Store) -> None:
        """The credentials column holds a Fernet token; the plaintext is nowhere in the row."""
        with store.unit_of_work() as uow:
            uow.accounts.add("aws", "ec2", credentials={"secret_access_key": SECRET})
            uow.commit()
        with store.database.engine.connect() as connection:
            raw = connection.execute(text("SELECT * FROM accounts")).one()
        assert SECRET not in repr(raw)
        assert all(
            SECRET.encode() not in bytes(v) for v in raw if isinstance(v, bytes | memoryview)
        )
        with store.unit_of_work() as uow:
            account = uow.accounts.get("aws")
            assert uow.accounts.credentials(account) == {"secret_access_key": SECRET}

    def test_credentials_never_appear_in_the_sqlite_file(self, home: Path) -> None:
        """Reading the database file (and its WAL) byte for byte finds no plaintext secret."""
        settings = load_settings(home=home)
        store = Store.from_settings(settings)
        store.upgrade()
        with store.unit_of_work() as uow:
            uow.accounts.add("aws", "ec2", credentials={"secret_access_key": SECRET})
            uow.commit()
        store.close()
        files = list(home.glob("cloudstate.db*"))
        assert files
        for path in files:
            assert SECRET.encode() not in path.read_bytes(), path.name

    def test_a_generated_local_key_is_private_to_the_owner(self, home: Path) -> None:
        """Without CLOUDSTATE_SECRET_KEYS a key is generated once in the home, mode 0600."""
        settings = load_settings(home=home)
        first = Store.from_settings(settings)
        second = Store.from_settings(settings)
        token = first.secrets.encrypt(b"x")
        assert second.secrets.decrypt(token) == b"x"
        assert settings.secret_key_path.stat().st_mode & 0o777 == 0o600

    def test_key_rotation_keeps_old_secrets_readable_and_reencrypts(self, home: Path) -> None:
        """A new key first and the old one after: old tokens decrypt; rotate moves them over."""
        old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
        before = Store.from_settings(load_settings(home=home, secret_keys=old))
        before.upgrade()
        with before.unit_of_work() as uow:
            uow.accounts.add("aws", "ec2", credentials={"key": SECRET})
            uow.commit()
        both = Store.from_settings(load_settings(home=home, secret_keys=f"{new},{old}"))
        with both.unit_of_work() as uow:
            assert uow.accounts.credentials(uow.accounts.get("aws")) == {"key": SECRET}
            assert uow.accounts.rotate_secrets() == 1
            uow.commit()
        after = Store.from_settings(load_settings(home=home, secret_keys=new))
        with after.unit_of_work() as uow:
            assert uow.accounts.credentials(uow.accounts.get("aws")) == {"key": SECRET}
        only_old = Store.from_settings(load_settings(home=home, secret_keys=old))
        with (
            only_old.unit_of_work() as uow,
            pytest.raises(CryptoError, match="cannot be decrypted"),
        ):
            uow.accounts.credentials(uow.accounts.get("aws"))
        for store in (before, both, after, only_old):
            store.close()


class TestAccounts:
    def test_duplicate_and_invalid_names_are_refused(self, store: Store) -> None:
        """A taken name is a conflict; a malformed name is a validation error on 'name'."""
        with store.unit_of_work() as uow:
            uow.accounts.add("sim", "simulator")
            uow.commit()
        with store.unit_of_work() as uow, pytest.raises(AlreadyExistsError, match="sim"):
            uow.accounts.add("sim", "simulator")
        with store.unit_of_work() as uow, pytest.raises(ValidationError) as caught:
            uow.accounts.add("Bad Name!", "simulator")
        assert caught.value.errors[0].field == "name"

    def test_an_account_with_live_instances_cannot_be_removed(self, store: Store) -> None:
        """Removing an account that still has instances would orphan them: refused."""
        _launch(store, _order(1))
        with store.unit_of_work() as uow, pytest.raises(ConflictError, match="still has 1"):
            uow.accounts.remove(uow.accounts.get("sim"))


class TestOutbox:
    def test_a_change_and_its_events_commit_together(self, store: Store) -> None:
        """Accepting an order writes instances and one instance.created event each."""
        uuids = _launch(store, _order(3))
        number_events(store)  # PostgreSQL: a cursor is given after commit (a worker's job)
        with store.read() as session:
            assert session.scalar(select(Instance).where(Instance.uuid == uuids[0])) is not None
            events = list(session.scalars(select(Event).order_by(Event.seq)))
        assert [e.instance_uuid for e in events] == uuids
        assert [e.instance_seq for e in events] == [1, 1, 1]
        assert [e.type for e in events] == ["instance.created"] * 3
        assert [e.seq for e in events] == sorted(e.seq for e in events)

    def test_a_failed_unit_of_work_writes_nothing(self, store: Store) -> None:
        """An exception before commit leaves neither the change nor its event behind."""
        order = resolve_order(_order(2))

        def crash_before_commit() -> None:
            with store.unit_of_work() as uow:
                account = uow.accounts.add("sim", "simulator")
                for spec in order.instances:
                    row = uow.instances.add(spec, account, None)
                    uow.record(EventDraft(EventType.INSTANCE_CREATED, {}, spec.uuid), row)
                raise RuntimeError("crash before commit")

        with pytest.raises(RuntimeError):
            crash_before_commit()
        with store.read() as session:
            assert session.scalars(select(Event)).all() == []
            assert session.scalars(select(Instance)).all() == []
            assert session.scalars(select(Account)).all() == []

    def test_a_unit_of_work_left_without_commit_rolls_back(self, store: Store) -> None:
        """Forgetting commit() is not a half-write: nothing is kept."""
        with store.unit_of_work() as uow:
            uow.accounts.add("sim", "simulator")
        with store.read() as session:
            assert session.scalars(select(Account)).all() == []

    def test_per_instance_sequence_has_no_gaps(self, store: Store) -> None:
        """Each instance numbers its own events 1, 2, 3, ... across transactions."""
        [instance_uuid] = _launch(store, _order(1))
        for state in ("pending", "running", "stopping"):
            with store.unit_of_work() as uow:
                row = uow.instances.get(instance_uuid)
                row.state = state
                uow.record(
                    EventDraft(EventType.INSTANCE_STATE_CHANGED, {"state": state}, instance_uuid),
                    row,
                )
                uow.commit()
        with store.read() as session:
            seqs = session.scalars(
                select(Event.instance_seq).where(Event.instance_uuid == instance_uuid)
            ).all()
        assert list(seqs) == [1, 2, 3, 4]

    def test_concurrent_writers_to_one_instance_cannot_reuse_a_number(self, store: Store) -> None:
        """Two units of work that read the same instance: the second to commit must retry."""
        if store.database.is_sqlite:
            pytest.skip("SQLite write transactions begin IMMEDIATE, so two cannot interleave")
        [instance_uuid] = _launch(store, _order(1))
        first, second = store.unit_of_work(), store.unit_of_work()
        with first, second:
            a, b = first.instances.get(instance_uuid), second.instances.get(instance_uuid)
            first.record(EventDraft(EventType.INSTANCE_STATE_CHANGED, {}, instance_uuid), a)
            first.commit()
            second.record(EventDraft(EventType.INSTANCE_STATE_CHANGED, {}, instance_uuid), b)
            with pytest.raises(ConcurrentUpdateError):
                second.commit()
        with store.read() as session:
            seqs = session.scalars(
                select(Event.instance_seq).where(Event.instance_uuid == instance_uuid)
            ).all()
        assert sorted(seqs) == [1, 2]

    @pytest.mark.postgres
    def test_a_conflict_found_by_an_autoflush_is_a_concurrent_update_too(
        self, postgres_store: Store
    ) -> None:
        """A stale row flushed by a query inside the unit (not by ``commit``) raises the same
        ``ConcurrentUpdateError``, never the ORM's own exception (the API gave a 500)."""
        store = postgres_store
        [instance_uuid] = _launch(store, _order(1))

        def write_a_stale_row() -> None:
            with store.unit_of_work() as stale:
                row = stale.instances.get(instance_uuid)
                with store.unit_of_work() as other:
                    other.instances.get(instance_uuid).name = "renamed"
                    other.commit()
                row.name = "mine"
                stale.accounts.names()  # a query: autoflushes the stale row

        with pytest.raises(ConcurrentUpdateError):
            write_a_stale_row()

    def test_parallel_writers_keep_global_sequence_and_per_instance_numbers(
        self, store: Store
    ) -> None:
        """Eight threads writing events for their own instances: no lost or repeated numbers."""
        uuids = _launch(store, _order(8))
        errors: list[BaseException] = []

        def write(instance_uuid: uuid.UUID) -> None:
            try:
                for step in range(10):
                    with store.unit_of_work() as uow:
                        row = uow.instances.get(instance_uuid)
                        uow.record(
                            EventDraft(
                                EventType.INSTANCE_STATE_CHANGED, {"n": step}, instance_uuid
                            ),
                            row,
                        )
                        uow.commit()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(u,)) for u in uuids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        number_events(store)
        with store.read() as session:
            events = session.scalars(select(Event).order_by(Event.seq)).all()
        assert len(events) == 8 + 80
        assert [e.seq for e in events] == list(range(1, 89))  # gap-free, every one numbered
        for instance_uuid in uuids:
            mine = [e.instance_seq for e in events if e.instance_uuid == instance_uuid]
            assert mine == list(range(1, 12))

    def test_events_fan_out_to_matching_subscriptions_only(self, store: Store) -> None:
        """A delivery row is written, in the same transaction, for each matching subscription."""
        with store.unit_of_work() as uow:
            everything = uow.subscriptions.add("callable", "all", SubscriptionFilter())
            web = uow.subscriptions.add(
                "callable", "web", SubscriptionFilter(labels={"role": "web"})
            )
            failures = uow.subscriptions.add(
                "callable",
                "failures",
                SubscriptionFilter(types=frozenset({EventType.INSTANCE_LAUNCH_FAILED})),
            )
            uow.commit()
            ids = (everything.id, web.id, failures.id)
        _launch(store, _order(2, labels={"role": "web"}))
        _launch(store, _order(1, labels={"role": "db"}))
        with store.read() as session:
            rows = session.scalars(select(Delivery)).all()
        per_subscription = {sid: sum(1 for d in rows if d.subscription_id == sid) for sid in ids}
        assert per_subscription == {ids[0]: 3, ids[1]: 2, ids[2]: 0}
        assert all(d.status == "pending" for d in rows)


class TestInstances:
    def test_list_filters_by_state_account_order_and_labels(self, store: Store) -> None:
        """Every filter narrows the list, and they combine."""
        web = _launch(store, _order(2, labels={"role": "web", "env": "prod"}))
        db = _launch(store, _order(1, labels={"role": "db", "env": "prod"}))
        with store.unit_of_work() as uow:
            uow.instances.get(web[0]).state = InstanceState.RUNNING
            order_of_db = uow.instances.get(db[0]).order_id
            uow.commit()
        with store.unit_of_work() as uow:
            listing = uow.instances.list

            def uuids(query: InstanceQuery) -> set[uuid.UUID]:
                return {row.uuid for row in listing(query)}

            assert uuids(InstanceQuery(labels={"role": "web"})) == set(web)
            assert uuids(InstanceQuery(labels={"env": "prod", "role": "db"})) == set(db)
            assert uuids(InstanceQuery(states=[InstanceState.RUNNING])) == {web[0]}
            assert uuids(InstanceQuery(account="sim")) == set(web + db)
            assert uuids(InstanceQuery(account="other")) == set()
            assert uuids(InstanceQuery(order_id=order_of_db)) == set(db)

    def test_pages_cover_every_instance_once(self, store: Store) -> None:
        """Walking pages with the last uuid as the cursor visits each instance exactly once."""
        created = set(_launch(store, _order(25)))
        seen: list[uuid.UUID] = []
        after = None
        with store.unit_of_work() as uow:
            while page := uow.instances.list(InstanceQuery(), after=after, limit=7):
                seen += [row.uuid for row in page]
                after = page[-1].uuid
        assert len(seen) == 25
        assert set(seen) == created

    def test_unknown_uuids_are_named_in_the_error(self, store: Store) -> None:
        """Asking for instances that do not exist names each missing uuid."""
        [known] = _launch(store, _order(1))
        missing = uuid.uuid4()
        with store.unit_of_work() as uow, pytest.raises(NotFoundError, match=str(missing)):
            uow.instances.get_many([known, missing])

    def test_limits_outside_the_allowed_range_are_refused(self, store: Store) -> None:
        """A page size of 0 or above 1000 is a validation error on 'limit'."""
        with store.unit_of_work() as uow:
            for limit in (0, 1001, -5):
                with pytest.raises(ValidationError, match="limit"):
                    uow.instances.list(InstanceQuery(), limit=limit)

    def test_generated_key_material_is_encrypted(self, store: Store) -> None:
        """A generated private key is stored encrypted and only decrypted on request."""
        [instance_uuid] = _launch(store, _order(1))
        material = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-body\n"
        with store.unit_of_work() as uow:
            uow.instances.set_key_material(uow.instances.get(instance_uuid), material)
            uow.commit()
        with store.database.engine.connect() as connection:
            raw = connection.execute(text("SELECT key_material FROM instances")).scalar_one()
        assert b"secret-key-body" not in bytes(raw)
        with store.unit_of_work() as uow:
            assert uow.instances.key_material(uow.instances.get(instance_uuid)) == material
