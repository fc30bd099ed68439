"""Background tasks: they repeat, survive their own failures, and stop when told."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from shim.periodic import Periodic


def test_the_action_repeats_until_stopped():
    runs = []
    third = threading.Event()

    def action():
        runs.append(1)
        if len(runs) == 3:
            third.set()

    task = Periodic("counter", 0.01, action).start()
    assert third.wait(5)
    task.stop()
    assert not task.running
    stopped_at = len(runs)
    time.sleep(0.05)  # five intervals
    assert len(runs) == stopped_at


def test_a_failing_action_is_logged_and_tried_again(caplog):
    attempts = []
    second = threading.Event()

    def action():
        attempts.append(1)
        if len(attempts) >= 2:
            second.set()
        raise OSError("store down")

    with caplog.at_level(logging.ERROR, logger="shim.periodic"):
        task = Periodic("flaky", 0.01, action).start()
        assert second.wait(5)
        task.stop()
    failures = [r for r in caplog.records if r.getMessage()
                == "background task flaky failed; trying again in one interval"]
    assert failures and failures[0].exc_info[0] is OSError


def test_the_first_run_waits_one_interval():
    ran = threading.Event()
    task = Periodic("slow", 60, ran.set).start()
    assert not ran.wait(0.1)
    task.stop()  # also ends the wait at once
    assert not task.running


@pytest.mark.parametrize("interval", [0, -1])
def test_the_interval_must_be_positive(interval):
    with pytest.raises(ValueError):
        Periodic("bad", interval, lambda: None)
