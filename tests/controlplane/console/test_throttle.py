"""The sign-in throttle on SQLite and PostgreSQL, with a controlled clock."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import Engine

from controlplane.console import throttle
from controlplane.core.db import session_factory, utcnow


def test_delays_grow_per_address_and_account_then_are_forgotten(db_engine: Engine) -> None:
    sessions = session_factory(db_engine)
    now = utcnow()
    waits = []
    with sessions() as db:
        for _ in range(throttle.ACCOUNT_FREE_FAILURES - 1):
            assert throttle.admit(db, "10.0.0.1", "Admin", now) == throttle.Admission(0, 0)
        # The 5th failure puts the first delay in force; each further one doubles it.
        for _ in range(8):
            admission = throttle.admit(db, "10.0.0.1", "admin ", now)
            assert admission.wait == 0
            waits.append(admission.delay_if_failed)
            assert throttle.admit(db, "10.0.0.1", "admin", now).wait == admission.delay_if_failed
            now += timedelta(seconds=admission.delay_if_failed)
        assert waits == [5, 10, 20, 40, 80, 160, 320, 640]
        assert throttle.admit(db, "10.0.0.1", "admin", now).delay_if_failed == 900  # the cap
        assert "admin" in throttle.blocked_accounts(db, now)
        # Another address, the same account: not affected.
        assert throttle.admit(db, "10.0.0.2", "admin", now).wait == 0
        # An hour without failures and the count starts again.
        later = now + throttle.MAX_DELAY + throttle.FORGET_AFTER + timedelta(seconds=1)
        assert throttle.admit(db, "10.0.0.1", "admin", later) == throttle.Admission(0, 0)


def test_one_address_trying_many_accounts_waits(db_engine: Engine) -> None:
    now = utcnow()
    with session_factory(db_engine)() as db:
        for number in range(throttle.ADDRESS_FREE_FAILURES):
            assert throttle.admit(db, "10.0.0.3", f"user{number}", now).wait == 0
        assert throttle.admit(db, "10.0.0.3", "someone-else", now).wait == 5
        assert throttle.admit(db, "10.0.0.4", "someone-else", now).wait == 0


def test_success_takes_its_charge_back(db_engine: Engine) -> None:
    now = utcnow()
    with session_factory(db_engine)() as db:
        for _ in range(throttle.ACCOUNT_FREE_FAILURES - 1):
            throttle.admit(db, "10.0.0.5", "owner", now)
        assert throttle.admit(db, "10.0.0.5", "owner", now).delay_if_failed == 5
        throttle.succeeded(db, "10.0.0.5", "owner")
        db.commit()
        assert throttle.admit(db, "10.0.0.5", "owner", now) == throttle.Admission(0, 0)
        assert throttle.forget_account(db, "OWNER") == 1


def test_parallel_guesses_cannot_outrun_the_count(db_engine: Engine) -> None:
    """Twenty attempts at once: each is charged under the row's lock, so at most the free
    ones (and the one whose charge starts the wait) get through."""
    sessions = session_factory(db_engine)
    admitted: list[int] = []
    start = threading.Barrier(20)
    # One clock for all: on a loaded machine the twenty could span the first delay's 5 s, and
    # an attempt after it has run out rightly gets through.
    now = utcnow()

    def guess() -> None:
        with sessions() as db:
            start.wait()
            admitted.append(throttle.admit(db, "10.0.0.6", "target", now).wait)

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(0) == throttle.ACCOUNT_FREE_FAILURES


def test_a_directory_accounts_failures_are_found_by_its_row(db_engine: Engine) -> None:
    """People type `alice`; the console's row is `ldap:alice`: listing and unlocking the row
    must find what the sign-ins counted."""
    now = utcnow()
    with session_factory(db_engine)() as db:
        for _ in range(throttle.ACCOUNT_FREE_FAILURES):
            throttle.admit(db, "10.0.0.7", "Alice", now)
        assert throttle.account_key("ldap:alice") in throttle.blocked_accounts(db, now)
        assert throttle.forget_account(db, "ldap:alice") == 1
        assert throttle.admit(db, "10.0.0.7", "alice", now).wait == 0
