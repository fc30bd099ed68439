"""``StockLotUpdate`` (shim.stock_update) without an app: the If-Match value goes in as an
argument, and the lot's read, write and lock are a small in-memory platform."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from shim import errors
from shim.failures import TokensUnavailable
from shim.stock_update import StockLotUpdate, parse_if_match
from shim.upstream import errors as up

READ_TIMEOUT_S = 10.0


class Lot:
    """One stock lot on a pretend platform; ``outcomes`` script what each write does."""

    def __init__(self, quantity: int = 10, scheduled: int = 2) -> None:
        self.quantity = quantity
        self.scheduled = scheduled
        self.lock = threading.Lock()
        self.reads = 0
        self.writes: list[int] = []
        # Each write pops one: "apply", "lost" (applied, no answer), "unsent" (no answer,
        # not applied), "late" (timed out, not applied), "refuse", or an exception to raise.
        self.outcomes: list[Any] = []
        self.failing_reads: list[Exception] = []  # raised by the next reads, in order

    def read(self) -> dict[str, Any]:
        assert self.lock.locked(), "read outside the lot's lock"
        self.reads += 1
        if self.failing_reads:
            raise self.failing_reads.pop(0)
        return self.state()

    def state(self) -> dict[str, Any]:
        return {"quantity_at_pickup_location": self.quantity,
                "quantity_scheduled_for_pickup": self.scheduled}

    def write(self, quantity: int) -> dict[str, Any]:
        assert self.lock.locked(), "write outside the lot's lock"
        self.writes.append(quantity)
        outcome = self.outcomes.pop(0) if self.outcomes else "apply"
        if isinstance(outcome, Exception):
            raise outcome
        if outcome in ("apply", "lost"):
            self.quantity = quantity
        if outcome == "refuse":
            raise up.BusinessError("the update was refused")
        if outcome != "apply":
            raise errors.OutcomeUnknown(timed_out=outcome == "late")
        return self.state()

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self.lock:
            yield


def update(lot: Lot, clock: Callable[[], float] = lambda: 0.0) -> StockLotUpdate:
    return StockLotUpdate(read=lot.read, write=lot.write, hold=lot.hold,
                          read_timeout_s=READ_TIMEOUT_S, clock=clock)


def status_of(call: Callable[[], object]) -> int:
    with pytest.raises(errors.LegacyError) as caught:
        call()
    return caught.value.status


# --- If-Match ---------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, '"10', "W/10", '"10",', "10 11"])
def test_a_missing_or_malformed_if_match_is_a_400(header):
    assert status_of(lambda: parse_if_match(header)) == 400


@pytest.mark.parametrize(("header", "holds"), [
    ('"10"', True), ("*", True), ('"9", "10"', True), ("10", True), ('W/"10"', False),
    ('"9"', False), ("", False), (" \t", False),
])
def test_if_match_holds_on_the_current_etag_only(header, holds):
    lot = Lot(quantity=10)
    if holds:
        assert update(lot).apply(12, parse_if_match(header))["quantity_at_pickup_location"] == 12
    else:
        assert status_of(lambda: update(lot).apply(12, parse_if_match(header))) == 412
        assert lot.writes == []


# --- read, check, write -----------------------------------------------------------------------


def test_below_the_scheduled_quantity_is_a_409_without_a_write():
    lot = Lot(quantity=10, scheduled=5)
    assert status_of(lambda: update(lot).apply(4, parse_if_match('"10"'))) == 409
    assert lot.writes == []


def test_a_refusal_after_pickups_were_booked_is_a_409():
    lot = Lot(quantity=10, scheduled=2)
    lot.outcomes = ["refuse"]
    original = lot.write

    def booked_meanwhile(quantity: int) -> dict[str, Any]:
        lot.scheduled = 8
        return original(quantity)

    lot.write = booked_meanwhile  # type: ignore[method-assign]
    assert status_of(lambda: update(lot).apply(5, parse_if_match('"10"'))) == 409


def test_any_other_refusal_is_the_tables_answer():
    lot = Lot()
    lot.outcomes = ["refuse"]
    assert status_of(lambda: update(lot).apply(5, parse_if_match('"10"'))) == 500
    assert lot.quantity == 10


# --- unconfirmed updates ----------------------------------------------------------------------


def test_a_lost_answer_to_an_applied_update_is_a_success():
    lot = Lot()
    lot.outcomes = ["lost"]
    assert update(lot).apply(7, parse_if_match('"10"'))["quantity_at_pickup_location"] == 7
    assert lot.writes == [7]


def test_an_unapplied_update_is_sent_once_more():
    lot = Lot()
    lot.outcomes = ["unsent", "apply"]
    assert update(lot).apply(7, parse_if_match('"10"'))["quantity_at_pickup_location"] == 7
    assert lot.writes == [7, 7]


def test_a_late_update_is_not_sent_again():
    lot = Lot()
    lot.outcomes = ["late"]
    with pytest.raises(errors.OutcomeUnknown):
        update(lot).apply(7, parse_if_match('"10"'))
    assert lot.writes == [7]


def test_no_resend_once_a_read_deadline_is_spent():
    lot = Lot()
    lot.outcomes = ["unsent"]
    times = iter([0.0, READ_TIMEOUT_S])
    with pytest.raises(errors.OutcomeUnknown):
        update(lot, clock=lambda: next(times)).apply(7, parse_if_match('"10"'))
    assert lot.writes == [7]


def test_a_failed_reread_leaves_the_outcome_open():
    lot = Lot()
    lot.outcomes = ["unsent"]
    original = lot.write

    def then_tokens_fail(quantity: int) -> dict[str, Any]:
        lot.failing_reads = [TokensUnavailable("seller 'main': the access token has expired")]
        return original(quantity)

    lot.write = then_tokens_fail  # type: ignore[method-assign]
    with pytest.raises(errors.OutcomeUnknown):
        update(lot).apply(7, parse_if_match('"10"'))
    assert lot.writes == [7]


def test_a_failed_second_attempt_that_landed_is_a_success():
    lot = Lot()
    lot.outcomes = ["unsent", "lost"]
    assert update(lot).apply(7, parse_if_match('"10"'))["quantity_at_pickup_location"] == 7


def test_a_failed_second_attempt_stays_unknown_whatever_it_raised(caplog):
    lot = Lot()
    lot.outcomes = ["unsent", RuntimeError("a bug")]
    with pytest.raises(errors.OutcomeUnknown):
        update(lot).apply(7, parse_if_match('"10"'))
    assert any("failed unexpectedly" in record.getMessage() for record in caplog.records)


def test_the_update_loads_without_flask():
    """The object runs outside any app: importing it brings no web framework in."""
    code = "import sys, shim.stock_update; print(sorted({'flask'} & set(sys.modules)))"
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert answer.stdout.strip() == "[]"
