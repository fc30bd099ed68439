"""Paced clients: many keep-alive connections, each pausing between requests (asyncio).

Used where wrk's ``delay()`` misleads: wrk waits before a connection's first request too, and
a gthread worker holds a thread for a fresh connection until its first request arrives, so
wrk's pacing would measure idle connections rather than requests. Here each client connects
(staggered over the first pause), sends its first request at once, then pauses 0 to twice
``think_s`` (at random) before each next one. The offered load is about
``clients / (think_s + latency)``: below capacity, so latency shows queueing, not saturation.
"""

from __future__ import annotations

import asyncio
import random
import time
from urllib.parse import urlsplit

HEADER_END = b"\r\n\r\n"
TIMEOUT_S = 10  # as wrk's --timeout in run.py


class _Window:
    """The measured window, shared by the clients: its bounds, and when all have had their last
    answer."""

    def __init__(self, start: float, end: float, clients: int) -> None:
        self.start, self.end = start, end
        self.sending = clients  # clients that may still send a request
        self.drained = asyncio.Event()

    def stopped_sending(self) -> None:
        """Count one client out; once none may send, ``drained`` lets every connection close.

        Until then every client keeps its connection: ~500 clients waking at the window's end
        to close at once kept the event loop (and the server) busy for tens of ms, and the
        last answers of the window were measured that much late.
        """
        self.sending -= 1
        if not self.sending:
            self.drained.set()


async def _client(host: str, port: int, request: bytes, think_s: float, window: _Window,
                  latencies: list[float], failures: list[int]) -> None:
    await asyncio.sleep(random.uniform(0, 2 * think_s))
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        while True:
            sent = time.monotonic()
            status = await _exchange(reader, writer, request)
            if sent >= window.start:
                latencies.append((time.monotonic() - sent) * 1000)
                if status != 200:
                    failures.append(status)
            pause = random.uniform(0, 2 * think_s)
            if time.monotonic() + pause >= window.end:
                break  # no request after the window; the connection stays open until drained
            await asyncio.sleep(pause)
        window.stopped_sending()
        await window.drained.wait()
    except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
        # A call that failed or took over TIMEOUT_S: counted, and this client stops.
        failures.append(0)
        window.stopped_sending()
    finally:
        if writer is not None:
            writer.close()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> int:
    """Send ``request``, read the whole answer, and return its status."""
    async with asyncio.timeout(TIMEOUT_S):
        writer.write(request)
        head = await reader.readuntil(HEADER_END)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
    return status


async def _run(url: str, bearer: str, clients: int, think_s: float,
               seconds: float) -> tuple[list[float], list[int]]:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    if bearer:
        headers += f"Authorization: Bearer {bearer}\r\n"
    request = (headers + "\r\n").encode()
    latencies: list[float] = []
    failures: list[int] = []
    # Measure once every client has had its first pause: no ramp in the figures.
    start = time.monotonic() + 2 * think_s
    window = _Window(start, start + seconds, clients)
    await asyncio.gather(*(
        _client(parts.hostname, parts.port, request, think_s, window, latencies, failures)
        for _ in range(clients)))
    return latencies, failures


def run(url: str, *, bearer: str, clients: int, think_s: float,
        seconds: float) -> tuple[list[float], int, float]:
    """Return (latencies in ms, failed calls, seconds measured) of a paced run."""
    latencies, failures = asyncio.run(_run(url, bearer, clients, think_s, seconds))
    return latencies, len(failures), seconds
