"""The ``processes`` fixture: children stop on SIGINT even when the run ignores it, and none
outlives its test."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import Processes

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """This process ignores SIGINT, as under ``cmd &`` in a script or nohup."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_ignored")
def test_a_child_stops_on_sigint_though_the_run_ignores_it(processes: Processes) -> None:
    child = processes.start(SLEEPER)
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=10) == -signal.SIGINT


@pytest.mark.usefixtures("sigint_ignored")
def test_a_plain_popen_child_inherits_the_ignored_sigint(processes: Processes) -> None:
    """The reason for the fixture: without it the child ignores SIGINT too."""
    child = subprocess.Popen(SLEEPER)
    try:
        child.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=1)
    finally:
        child.kill()
        child.wait(timeout=10)


@pytest.mark.usefixtures("sigint_ignored")
def test_run_resets_sigint_too(processes: Processes) -> None:
    result = processes.run([sys.executable, "-c",
                            "import signal; print(signal.getsignal(signal.SIGINT))"],
                           capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == str(signal.default_int_handler)


def test_close_kills_what_is_left_and_its_group() -> None:
    started = Processes()
    alone = started.start(SLEEPER, stdout=subprocess.PIPE)
    leader = started.start([sys.executable, "-c",
                            "import subprocess, sys, time; "
                            f"print(subprocess.Popen({SLEEPER!r}).pid, flush=True); "
                            "time.sleep(60)"],
                           stdout=subprocess.PIPE, text=True, start_new_session=True)
    grandchild = int(leader.stdout.readline())
    started.close()
    assert alone.returncode == -signal.SIGKILL and alone.stdout.closed
    assert leader.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while alive(grandchild):  # killed with its group
        assert time.monotonic() < deadline
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Return whether ``pid`` runs (a zombie waiting for init to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
