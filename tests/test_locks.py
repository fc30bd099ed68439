"""KeyedLocks: one holder per key, keys independent, bounded waits, no leftover entries."""

from __future__ import annotations

import threading
import time
from contextlib import suppress

import pytest

from shim.locks import KeyedLocks, LockQueueFull, LockTimeout

WAIT_S = 5.0  # only reached when the code under test is broken


def test_one_key_is_held_by_one_thread_at_a_time():
    locks = KeyedLocks()
    inside, most_inside, guard = [0], [0], threading.Lock()
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(20):
            with locks.hold("lot", timeout=WAIT_S):
                with guard:
                    inside[0] += 1
                    most_inside[0] = max(most_inside[0], inside[0])
                time.sleep(0.0005)  # give another thread the chance to break in
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most_inside[0] == 1
    assert len(locks) == 0


def test_a_waiter_enters_only_after_the_holder_leaves():
    locks = KeyedLocks()
    order: list[str] = []
    held = threading.Event()

    def waiter() -> None:
        held.wait(WAIT_S)
        with locks.hold("lot", timeout=WAIT_S):
            order.append("waiter in")

    thread = threading.Thread(target=waiter)
    thread.start()
    with locks.hold("lot", timeout=WAIT_S):
        held.set()
        time.sleep(0.05)
        order.append("holder out")
    thread.join()
    assert order == ["holder out", "waiter in"]


def test_different_keys_are_held_at_the_same_time():
    locks = KeyedLocks()
    both_in = threading.Barrier(2, timeout=WAIT_S)  # breaks (and fails) if keys serialize

    def work(key: str) -> None:
        with locks.hold(key, timeout=WAIT_S):
            both_in.wait()

    threads = [threading.Thread(target=work, args=(key,)) for key in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not both_in.broken
    assert len(locks) == 0


def test_a_busy_key_times_out():
    locks = KeyedLocks()
    with locks.hold(("stock-lot", "414", 100150, 23789), timeout=WAIT_S):
        outcome: list[BaseException | None] = []

        def late() -> None:
            began = time.monotonic()
            try:
                with locks.hold(("stock-lot", "414", 100150, 23789), timeout=0.1):
                    outcome.append(None)
            except LockTimeout as error:
                outcome.append(error)
                outcome.append(time.monotonic() - began)

        thread = threading.Thread(target=late)
        thread.start()
        thread.join()
        assert len(locks) == 1
    error, waited = outcome
    assert isinstance(error, LockTimeout)
    assert 0.1 <= waited < 1.0
    assert len(locks) == 0


def test_the_lock_is_not_reentrant():
    # A view must never hold a key twice: the second hold waits for itself, then times out.
    locks = KeyedLocks()
    with (locks.hold("lot", timeout=WAIT_S), pytest.raises(LockTimeout),
          locks.hold("lot", timeout=0.05)):
        pass
    assert len(locks) == 0


def test_entries_are_dropped_after_errors_and_timeouts():
    locks = KeyedLocks()
    with pytest.raises(RuntimeError), locks.hold("a", timeout=WAIT_S):
        assert len(locks) == 1
        raise RuntimeError("the view failed")
    assert len(locks) == 0
    for key in range(100):
        with locks.hold(key, timeout=WAIT_S):
            pass
    assert len(locks) == 0
    with locks.hold("a", timeout=WAIT_S):  # the key still works after everything above
        assert len(locks) == 1
    assert len(locks) == 0


def test_the_dict_shrinks_to_zero_under_contention():
    locks = KeyedLocks()
    start = threading.Barrier(12)

    def work(index: int) -> None:
        start.wait()
        for round_ in range(30):
            # Some threads give up almost at once: leaving by timeout must clean up too.
            with suppress(LockTimeout), locks.hold(f"k{(index + round_) % 3}",
                                                   timeout=0.001 if index % 4 == 0 else WAIT_S):
                pass

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(locks) == 0


def wait_until(condition, timeout: float = WAIT_S) -> bool:
    """Poll ``condition`` until it holds; False if it never did (the code is broken)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_past_its_waiters_a_key_refuses_at_once_and_the_queue_drains():
    locks = KeyedLocks()
    entered: list[str] = []

    def waiter(name: str) -> None:
        with locks.hold("lot", timeout=WAIT_S, waiters=2):
            entered.append(name)

    with locks.hold("lot", timeout=WAIT_S, waiters=2):
        threads = [threading.Thread(target=waiter, args=(name,)) for name in ("w1", "w2")]
        for thread in threads:
            thread.start()
        assert wait_until(lambda: locks.queued("lot") == 3)
        # The holder and two waiters: a third waiter is refused without waiting (the
        # generous timeout would otherwise let it wait for the holder).
        with pytest.raises(LockQueueFull) as refused, \
                locks.hold("lot", timeout=WAIT_S, waiters=2):
            pass
        assert isinstance(refused.value, LockTimeout)  # the same legacy family: a busy lot
        assert refused.value.scope == "lot"
        assert locks.queued("lot") == 3  # the refusal left no trace
        with locks.hold("other", timeout=WAIT_S, waiters=0):  # other keys are unaffected
            pass
    for thread in threads:
        thread.join()
    assert sorted(entered) == ["w1", "w2"]
    assert len(locks) == 0 and locks.queued("lot") == 0


def test_no_waiters_allowed_means_only_a_free_key_is_taken():
    locks = KeyedLocks()
    with (locks.hold("lot", timeout=WAIT_S, waiters=0), pytest.raises(LockQueueFull),
          locks.hold("lot", timeout=WAIT_S, waiters=0)):
        pass
    with locks.hold("lot", timeout=WAIT_S, waiters=0):
        pass
    assert len(locks) == 0
