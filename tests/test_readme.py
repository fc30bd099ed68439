"""The README's first promises, run as written: the walkthrough against a real demo process."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import Processes

README = Path(__file__).resolve().parent.parent / "README.md"


def walkthrough() -> str:
    """Return the shell block under the README's Walkthrough heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Walkthrough", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"demo exited early: {process.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("demo did not start listening")


@pytest.fixture
def demo(processes):
    port = free_port()
    process = processes.start([sys.executable, "-m", "shim", "demo", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(port, process)
    yield port
    process.terminate()
    process.wait(timeout=10)


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    assert "./scripts/demo" in first_block
    assert "./scripts/test" in first_block
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "./scripts/test" in ci


def run_walkthrough(processes: Processes, base: str) -> str:
    """Run the walkthrough as written against the shim at ``base``; check what it printed."""
    script = walkthrough()
    assert script.startswith("BASE=http://127.0.0.1:8080\n")
    script = script.replace("BASE=http://127.0.0.1:8080", f"BASE={base}", 1)
    run = processes.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                        text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert '{"page":1,"pageSize":2,"items":[{"id":"23789","name":"ABC Merchant"' in out
    assert '"rpc":100150' in out  # the docs' product is at location 23789
    # the read shows the docs' stock lot and its ETag; the PATCH answers 200 with the new one
    assert 'etag: "10"' in out
    assert '{"id":"0","quantityAtPickupLocation":10,"quantityScheduledForPickup":2,' \
           '"quantityAvailableForSale":8}' in out
    assert 'etag: "20"' in out
    assert '"quantityAtPickupLocation":20,"quantityScheduledForPickup":2,' \
           '"quantityAvailableForSale":18' in out
    assert re.search(r'\[\{"id":\d+,"status":"(pending|pickedup)"', out)
    assert "error" not in out.lower()
    return out


def test_walkthrough_runs_as_written_against_the_demo(demo, processes):
    run_walkthrough(processes, f"http://127.0.0.1:{demo}")


def test_the_readmes_pictures_are_in_the_repository():
    """Each picture the README shows is a committed PNG (a snapshot of a browser test's)."""
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text(encoding="utf-8"))
    assert pictures
    for picture in pictures:
        assert (README.parent / picture).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), picture
