"""Hostile load (issue 11's Bar): four attacks on a real ``redmart-shim serve``, each measured
against an unloaded baseline taken in the same run.

    .venv/bin/python bench/hostile_load.py            # about 3 minutes
    .venv/bin/python bench/hostile_load.py --quick    # about 20 s: a smoke run, tiny loads

Everything runs on this machine over loopback (127.0.0.0/8), as separate processes: the
sandbox (Werkzeug's threaded server, ``bench/upstream.py``) and ``python -m shim serve`` on a
seeded SQLite store (``--store postgres``: PostgreSQL + Redis, two workers). Every load loop is
bounded in time and every process is stopped at the end (also on Ctrl-C or SIGTERM).

Scenarios, with the bar each must meet:

  a) slow clients: 300 sockets that send a request line, then one header every 5 s, and 300
     that send nothing, held 20 s (a closed one is opened again), spread over many source
     addresses (30 per address) so a per-address cap alone cannot stop them; a normal client
     (5 GETs/s from its own address) is answered >= 95% within 2 s, its p50 within 3x baseline;
  b) token flood: 64 threads (in a process of their own) posting token calls with a fresh
     random client id each, from a fresh address each (``bench/token_flood.py``'s token_call:
     no per-address throttle applies), for 15 s: the legitimate GET's p50 within 2x
     baseline, worker RSS (peak) <= 150 MB;
  c) noisy tenant: client A PATCHes one stock lot at 10/s while the platform takes 1 s per
     stock-lot call; client B (another seller) GETs a product: B's p99 <= 1 s;
  d) slow platform: every platform call takes 12 s (beyond the 10 s read deadline): once the
     breaker is open (its gauge in /metrics) 503s come within 1 s (p99), and /healthz p99 <=
     100 ms throughout.

The measuring clients are open-loop (a request every 200 ms or 100 ms, each on a fresh
connection, whatever the previous one is doing), so a blocked server shows as timeouts
rather than as fewer samples. Results: printed, and written to bench/results/hostile-latest.md.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import requests
from run import (
    BENCH,
    HOST,
    PYTHON,
    REDIS_URL,
    STORE_ID,
    Bench,
    Processes,
    Server,
    free_port,
    load_average,
    machine,
    parse_args,
    percentile,
    shim_config,
    workspace,
)
from token_flood import token_call

RESULTS = BENCH / "results" / "hostile-latest.md"
PRODUCT = "/v1/products/100150"
LOT = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
LOT_APIS = ("/rss/stockLot/get", "/rss/stockLot/update")
PRODUCT_API = "/rss/product/get"
OTHER_STORE = "415"
CLIENT_A, CLIENT_B = "bench", "tenant-b"
MEASURE_SOURCE = "127.0.0.1"  # the normal clients' address; attackers use others of 127/8


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run (``--quick`` shrinks every one of them)."""

    baseline_s: float = 10.0
    slow_sockets: int = 300
    idle_sockets: int = 300
    per_address: int = 30
    header_every_s: float = 5.0
    hold_s: float = 20.0
    flooders: int = 64
    flood_s: float = 15.0
    patch_rate: float = 10.0
    noisy_s: float = 15.0
    lot_latency_ms: int = 1000
    slow_ms: int = 12000
    slow_s: float = 40.0
    read_timeout_s: float | None = None  # None: the shim's default (10 s)
    slow_rate: float = 10.0

    @classmethod
    def quick(cls) -> Plan:
        """Return a smoke-sized plan: every scenario runs, nothing is loaded much."""
        return cls(baseline_s=1.0, slow_sockets=20, idle_sockets=20, per_address=10,
                   header_every_s=1.0, hold_s=2.0, flooders=4, flood_s=1.5, patch_rate=5.0,
                   noisy_s=2.0, lot_latency_ms=300, slow_ms=1500, slow_s=4.5,
                   read_timeout_s=1.0, slow_rate=5.0)


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Answer:
    """One request of a measuring client: when it went, how long it took, what came back."""

    sent: float  # time.monotonic()
    seconds: float
    status: int | None  # None: no answer (timeout, reset, refused)
    retry_after: str | None = None


@dataclass
class Probe:
    """An open-loop client: ``rate`` requests a second, each on a fresh connection."""

    port: int
    path: str
    bearer: str = ""
    rate: float = 5.0
    timeout_s: float = 10.0
    answers: list[Answer] = field(default_factory=list)

    def one(self) -> Answer:
        """Send one request; return what happened."""
        sent = time.monotonic()
        connection = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout_s,
                                                source_address=(MEASURE_SOURCE, 0))
        headers = {"Authorization": f"Bearer {self.bearer}"} if self.bearer else {}
        try:
            connection.request("GET", self.path, headers=headers)
            response = connection.getresponse()
            response.read()
            return Answer(sent, time.monotonic() - sent, response.status,
                          response.getheader("Retry-After"))
        except (OSError, http.client.HTTPException):
            return Answer(sent, time.monotonic() - sent, None)
        finally:
            connection.close()

    @contextmanager
    def running(self) -> Iterator[Probe]:
        """Send requests at ``rate`` until the block ends (then wait for the last answers)."""
        stop = threading.Event()
        pool = ThreadPoolExecutor(max(4, int(self.rate * self.timeout_s) + 2))

        def pace() -> None:
            started, n = time.monotonic(), 0
            while not stop.is_set():
                pool.submit(lambda: self.answers.append(self.one()))
                n += 1
                stop.wait(max(0.0, started + n / self.rate - time.monotonic()))

        pacer = threading.Thread(target=pace)
        pacer.start()
        try:
            yield self
        finally:
            stop.set()
            pacer.join()
            pool.shutdown(wait=True)

    def latencies(self, *, ok_only: bool = False, after: float = 0.0) -> list[float]:
        """Return the latencies (s) of answers sent after ``after``; no answer counts as inf."""
        return [answer.seconds if answer.status is not None else float("inf")
                for answer in self.answers if answer.sent >= after
                and (not ok_only or answer.status == 200)]

    def statuses(self) -> dict[str, int]:
        """Return how many answers had each status ("none": no answer)."""
        return dict(Counter(str(answer.status or "none") for answer in self.answers))


def p(values: list[float], q: float) -> float:
    """Return percentile ``q`` in ms (NaN for no values; inf stays inf)."""
    return percentile(values, q) * 1000 if values else float("nan")


def within(values: list[float], seconds: float) -> float:
    """Return the share of ``values`` (s) at most ``seconds``."""
    return sum(1 for value in values if value <= seconds) / len(values) if values else 0.0


# --- processes ------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Return the pids of every process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def command_of(pid: int) -> str:
    """Return a process's command line ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def worker_rss_mb(server: Server) -> list[float]:
    """Return the resident memory (MB) of each gunicorn worker of ``serve``, however deep.

    ``serve`` either is gunicorn's master (exec) or starts it beside a front; a worker is a
    gunicorn process whose parent is gunicorn too.
    """
    sizes = []
    for pid in descendants(server.process.pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            parent = int(next(line for line in status.splitlines()
                              if line.startswith("PPid:")).split()[1])
        except (OSError, StopIteration):
            continue
        parent_command = command_of(parent) if parent != server.process.pid else \
            command_of(server.process.pid)
        if "gunicorn" not in command_of(pid) or "gunicorn" not in parent_command:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


class Target:
    """The sandbox and ``redmart-shim serve`` in front of it, seeded with two tenants."""

    def __init__(self, bench: Bench, procs: Processes, workdir: Path, args: argparse.Namespace,
                 plan: Plan) -> None:
        self.bench, self.procs, self.plan = bench, procs, plan
        self.operator_token = secrets.token_hex(24)
        self.upstream = bench.start_upstream("upstream", tls=False)
        self.other_token = "50002" + secrets.token_hex(20)
        requests.post(self.upstream.url + "/_sandbox/sellers", timeout=10, json={
            "store_id": OTHER_STORE, "access_token": self.other_token,
            "refresh_token": "50003" + secrets.token_hex(20)}).raise_for_status()
        port = free_port()
        self.port = port
        env = {**bench.base_env(), "SHIM_BIND": f"{HOST}:{port}", "SHIM_LOG_LEVEL": "warning",
               "SHIM_RATE_LIMIT_PER_SECOND": "1000", "SHIM_OPERATOR_TOKEN": self.operator_token,
               "SHIM_ENCRYPTION_KEY": bench.encryption_key}
        if plan.read_timeout_s is not None:
            env["SHIM_READ_TIMEOUT_S"] = str(plan.read_timeout_s)
        if args.store == "postgres":
            database = procs.database()
            env["SHIM_RATE_LIMIT_STORAGE"] = REDIS_URL
            env["SHIM_RATE_LIMIT_KEY_PREFIX"] = f"hostile-{os.getpid()}"
        else:
            database = f"sqlite:///{workdir / 'shim.sqlite'}"
        config_path = shim_config(workdir / "shim.toml", bench.keys, self.upstream.url, database)
        env["SHIM_CONFIG"] = str(config_path)
        self.seed(config_path, env)
        self.shim = procs.start("shim", [PYTHON, "-m", "shim", "serve"], env, port)
        self.url = self.shim.url
        self.bearer_a = self.token(CLIENT_A)
        self.bearer_b = self.token(CLIENT_B)

    def seed(self, config_path: Path, env: dict[str, str]) -> None:
        """Register both sellers (with the sandbox's tokens) and one client each."""
        from shim import config, credentials, scopes
        from shim.store import Client, Seller, open_store

        keys, now = self.bench.keys, time.time()
        digest = credentials.hash_secret(keys.client_secret)
        store = open_store(config.load(config_path, env=env))
        try:
            for name, store_id, token, client in (
                    ("main", STORE_ID, keys.seller_token, CLIENT_A),
                    ("other", OTHER_STORE, self.other_token, CLIENT_B)):
                store.add_seller(Seller(name=name, store_id=store_id, access_token=token,
                                        refresh_token=token + "r",
                                        access_expires_at=now + 864000,
                                        refresh_expires_at=now + 4320000))
                store.add_client(Client(client_id=client, secret_digest=digest,
                                        scopes=frozenset(scopes.ALL), seller=name))
        finally:
            store.close()

    def token(self, client_id: str) -> str:
        """Return a bearer token for ``client_id``."""
        answer = requests.post(self.url + "/oauth2/token", timeout=30, data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": self.bench.keys.client_secret})
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def control(self, method: str, path: str, body: object = None) -> None:
        """Call the sandbox's control API."""
        requests.request(method, self.upstream.url + "/_sandbox" + path, json=body,
                         timeout=10).raise_for_status()

    def breaker_open(self, api: str) -> bool:
        """Return whether /metrics shows ``api``'s breaker open (in any live worker)."""
        try:
            text = requests.get(self.url + "/metrics", timeout=5, headers={
                "Authorization": f"Bearer {self.operator_token}"}).text
        except requests.RequestException:
            return False
        return f'shim_upstream_breaker_state{{api="{api}"}} 2.0' in text

    def rss(self) -> list[float]:
        """Return each worker's resident memory in MB."""
        return worker_rss_mb(self.shim)


# --- the scenarios --------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the report."""

    scenario: str
    figure: str
    measured: str
    bar: str
    met: bool | None  # None: a figure shown for context, no bar
    load: str = ""
    note: str = ""


def fmt_ms(value: float) -> str:
    """Return milliseconds as text (inf: "no answer")."""
    if value != value:
        return "-"
    return "no answer" if value == float("inf") else f"{value:.1f} ms"


def loads(before: float) -> str:
    """Return "before -> after" 1-minute load averages."""
    return f"{before:.1f} -> {os.getloadavg()[0]:.1f}"


def baseline(target: Target, plan: Plan) -> dict[str, float]:
    """Measure the normal client's GET and /healthz, unloaded."""
    get = Probe(target.port, PRODUCT, target.bearer_a, rate=5.0)
    health = Probe(target.port, "/healthz", rate=5.0)
    with get.running(), health.running():
        time.sleep(plan.baseline_s)
    figures = {"get_p50": p(get.latencies(), 50), "get_p99": p(get.latencies(), 99),
               "health_p50": p(health.latencies(), 50), "health_p99": p(health.latencies(), 99),
               "b_p50": 0.0}
    b = Probe(target.port, PRODUCT, target.bearer_b, rate=5.0)
    with b.running():
        time.sleep(plan.baseline_s / 2)
    figures["b_p50"], figures["b_p99"] = p(b.latencies(), 50), p(b.latencies(), 99)
    print(f"baseline: GET p50 {fmt_ms(figures['get_p50'])} p99 {fmt_ms(figures['get_p99'])}; "
          f"tenant B GET p50 {fmt_ms(figures['b_p50'])}; /healthz p50 "
          f"{fmt_ms(figures['health_p50'])} p99 {fmt_ms(figures['health_p99'])}; worker RSS "
          f"{', '.join(f'{mb:.0f}' for mb in target.rss())} MB", flush=True)
    return figures


def attacker_address(n: int, per_address: int) -> str:
    """Return the source address of attacking socket ``n`` (127.2.x.y, never 127.0.0.1)."""
    group = n // per_address
    return f"127.2.{group // 250}.{group % 250 + 2}"


def slow_clients(target: Target, plan: Plan, base: dict[str, float]) -> list[Row]:
    """a) slow-header and idle sockets held open while a normal client GETs."""
    before = os.getloadavg()[0]
    total = plan.slow_sockets + plan.idle_sockets
    sockets: dict[int, socket.socket] = {}
    counts = Counter()
    request_line = f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{target.port}\r\n".encode()

    def open_one(n: int) -> None:
        try:
            connection = socket.create_connection(
                (HOST, target.port), timeout=0.5,
                source_address=(attacker_address(n, plan.per_address), 0))
            connection.setblocking(False)
            if n < plan.slow_sockets:
                connection.send(request_line)
            sockets[n] = connection
            counts["opened"] += 1
        except OSError:
            counts["refused"] += 1

    def state(connection: socket.socket) -> str:
        try:
            return "answered" if connection.recv(4096, socket.MSG_PEEK) else "closed"
        except BlockingIOError:
            return "open"
        except OSError:
            return "closed"

    deadline = time.monotonic() + plan.hold_s
    for n in range(total):
        if time.monotonic() > deadline:
            break
        open_one(n)
    probe = Probe(target.port, PRODUCT, target.bearer_a, rate=5.0)
    header = 0
    with probe.running():
        while time.monotonic() < deadline:
            header += 1
            for n in range(total):
                if time.monotonic() > deadline:
                    break
                connection = sockets.pop(n, None)
                now = state(connection) if connection is not None else "closed"
                if connection is not None and now == "open":
                    sockets[n] = connection
                    if n < plan.slow_sockets:
                        with suppress(OSError):
                            connection.send(f"X-Slow-{header}: {header}\r\n".encode())
                    continue
                if connection is not None:
                    connection.close()
                    counts[f"{now} by the server"] += 1
                open_one(n)  # the attacker comes back
            time.sleep(min(plan.header_every_s, max(0.0, deadline - time.monotonic())))
    held = sum(1 for connection in sockets.values() if state(connection) == "open")
    for connection in sockets.values():
        connection.close()
    latencies = probe.latencies()
    share, p50 = within(latencies, 2.0), p(latencies, 50)
    note = (f"{plan.slow_sockets} slow-header + {plan.idle_sockets} idle sockets from "
            f"{-(-total // plan.per_address)} addresses; {dict(counts)}; {held} still open at "
            f"the end; normal client answers {probe.statuses()}")
    print(f"a) slow clients: {share:.1%} within 2 s, p50 {fmt_ms(p50)}; {note}", flush=True)
    load = loads(before)
    return [Row("a) slow clients", "normal GETs answered within 2 s", f"{share:.1%}",
                ">= 95%", share >= 0.95, load, note),
            Row("a) slow clients", "normal GET p50 vs baseline",
                f"{fmt_ms(p50)} ({p50 / base['get_p50']:.2f}x)", "<= 3x",
                p50 <= 3 * base["get_p50"], load)]


def flood(port: int, threads: int, seconds: float) -> dict[str, int]:
    """Post token calls with random client ids from fresh addresses on ``threads`` threads
    for ``seconds``; return the answers' statuses (run in a process of its own)."""
    stop, statuses = threading.Event(), Counter()

    def flooder() -> None:
        while not stop.is_set():
            source = (f"127.{secrets.randbelow(250) + 3}.{secrets.randbelow(256)}."
                      f"{secrets.randbelow(250) + 2}")
            try:
                statuses[str(token_call(port, source))] += 1
            except OSError:
                statuses["error"] += 1

    workers = [threading.Thread(target=flooder) for _ in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return dict(statuses)


def token_flood(target: Target, plan: Plan, base: dict[str, float]) -> list[Row]:
    """b) token calls with random client ids from fresh addresses, beside a legitimate GET.

    The flooders run in a process of their own, so that their 64 threads do not slow the
    measuring client down through this process's GIL.
    """
    before = os.getloadavg()[0]
    stop, peak = threading.Event(), [0.0]
    ramp = min(1.0, plan.flood_s / 4)  # let the flood build up before measuring
    flooders = subprocess.Popen(
        [PYTHON, __file__, "--flood", str(target.port), str(plan.flooders),
         str(plan.flood_s + ramp)], stdout=subprocess.PIPE, text=True)

    def sampler() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], max(target.rss(), default=0.0))
            stop.wait(0.1)

    sampling = threading.Thread(target=sampler)
    sampling.start()
    probe = Probe(target.port, PRODUCT, target.bearer_a, rate=5.0)
    try:
        time.sleep(ramp)
        with probe.running():
            time.sleep(plan.flood_s)
        output, _ = flooders.communicate(timeout=plan.flood_s + 60)
        statuses = json.loads(output.strip().splitlines()[-1])
    finally:
        if flooders.poll() is None:
            flooders.kill()
            flooders.wait()
        stop.set()
        sampling.join()
    p50 = p(probe.latencies(), 50)
    note = (f"{plan.flooders} flooders, token answers {dict(statuses)}; legitimate GETs "
            f"{probe.statuses()}")
    print(f"b) token flood: GET p50 {fmt_ms(p50)}, peak worker RSS {peak[0]:.0f} MB; {note}",
          flush=True)
    load = loads(before)
    return [Row("b) token flood", "legitimate GET p50 vs baseline",
                f"{fmt_ms(p50)} ({p50 / base['get_p50']:.2f}x)", "<= 2x",
                p50 <= 2 * base["get_p50"], load, note),
            Row("b) token flood", "worker RSS, peak", f"{peak[0]:.0f} MB", "<= 150 MB",
                0 < peak[0] <= 150, load)]


def noisy_tenant(target: Target, plan: Plan, base: dict[str, float]) -> list[Row]:
    """c) client A PATCHes one lot at 10/s, the platform at 1 s per stock-lot call; B GETs."""
    before = os.getloadavg()[0]
    for api in LOT_APIS:
        target.control("POST", "/faults", {"api": api, "kind": "latency", "rate": 1.0,
                                           "latency_ms": plan.lot_latency_ms})
    patches: Counter = Counter()
    patch_seconds: list[float] = []
    stop = threading.Event()
    pool = ThreadPoolExecutor(int(plan.patch_rate * 40) + 4)

    def patch(quantity: int) -> None:
        sent = time.monotonic()
        connection = http.client.HTTPConnection(HOST, target.port, timeout=40,
                                                source_address=(MEASURE_SOURCE, 0))
        try:
            connection.request("PATCH", LOT, body=json.dumps(
                {"quantityAtPickupLocation": quantity}), headers={
                "Authorization": f"Bearer {target.bearer_a}", "If-Match": "*",
                "Content-Type": "application/merge-patch+json"})
            response = connection.getresponse()
            response.read()
            patches[response.status] += 1
        except (OSError, http.client.HTTPException):
            patches["none"] += 1
        finally:
            connection.close()
            patch_seconds.append(time.monotonic() - sent)

    def pace() -> None:
        started, n = time.monotonic(), 0
        while not stop.is_set():
            pool.submit(patch, 1000 + n)
            n += 1
            stop.wait(max(0.0, started + n / plan.patch_rate - time.monotonic()))

    pacer = threading.Thread(target=pace)
    pacer.start()
    probe = Probe(target.port, PRODUCT, target.bearer_b, rate=5.0)
    try:
        time.sleep(min(2.0, plan.noisy_s / 4))  # let A's queue build up
        with probe.running():
            time.sleep(plan.noisy_s)
    finally:
        stop.set()
        pacer.join()
        pool.shutdown(wait=True)
        target.control("DELETE", "/faults")
    latencies = probe.latencies()
    p99 = p(latencies, 99)
    note = (f"A's PATCHes {dict(patches)} (p50 {fmt_ms(p(patch_seconds, 50))}); B's GETs "
            f"{probe.statuses()}, p50 {fmt_ms(p(latencies, 50))} (baseline "
            f"{fmt_ms(base['b_p50'])})")
    print(f"c) noisy tenant: B's GET p99 {fmt_ms(p99)}; {note}", flush=True)
    b_ok = sum(1 for answer in probe.answers if answer.status == 200) / max(1, len(probe.answers))
    load = loads(before)
    return [Row("c) noisy tenant", "tenant B's GET p99", fmt_ms(p99), "<= 1 s", p99 <= 1000,
                load, note),
            Row("c) noisy tenant", "tenant B's GETs answered 200", f"{b_ok:.1%}", "", None,
                load)]


def slow_platform(target: Target, plan: Plan, base: dict[str, float]) -> list[Row]:
    """d) every platform call slow past the deadline: the breaker's 503s, and /healthz."""
    before = os.getloadavg()[0]
    target.control("POST", "/latency", {"ms": plan.slow_ms})
    gets = Probe(target.port, PRODUCT, target.bearer_a, rate=plan.slow_rate, timeout_s=40)
    health = Probe(target.port, "/healthz", rate=10.0, timeout_s=10)
    opened: list[float] = []
    began = time.monotonic()
    try:
        with gets.running(), health.running():
            deadline = time.monotonic() + plan.slow_s
            while time.monotonic() < deadline:
                if not opened and target.breaker_open(PRODUCT_API):
                    opened.append(time.monotonic())
                time.sleep(0.25)
    finally:
        target.control("POST", "/latency", {"ms": 0})
    health_p99 = p(health.latencies(), 99)
    rows_note = f"GETs {gets.statuses()}; /healthz {health.statuses()}"
    load = loads(before)
    if not opened:
        print(f"d) slow platform: the breaker never opened; {rows_note}", flush=True)
        return [Row("d) slow platform", "503 p99 once the breaker is open", "never opened",
                    "<= 1 s", False, load, rows_note),
                Row("d) slow platform", "/healthz p99", fmt_ms(health_p99), "<= 100 ms",
                    health_p99 <= 100, load)]
    after = [answer for answer in gets.answers if answer.sent >= opened[0]]
    refused = [answer.seconds for answer in after if answer.status == 503]
    p99 = p(refused, 99)
    slow = sum(1 for seconds in refused if seconds > 1)
    note = (f"breaker open (in /metrics) {opened[0] - began:.1f} s after the first GET; "
            f"after that {len(refused)} of {len(after)} answers were 503, {slow} of them "
            f"slower than 1 s (probes), max {fmt_ms(max(refused, default=0) * 1000)}; "
            f"{rows_note}")
    print(f"d) slow platform: 503 p99 {fmt_ms(p99)} once open, /healthz p99 "
          f"{fmt_ms(health_p99)}; {note}", flush=True)
    return [Row("d) slow platform", "503 p99 once the breaker is open", fmt_ms(p99), "<= 1 s",
                p99 <= 1000, load, note),
            Row("d) slow platform", "/healthz p99 (baseline "
                f"{fmt_ms(base['health_p99'])})", fmt_ms(health_p99), "<= 100 ms",
                health_p99 <= 100, load)]


SCENARIOS: dict[str, Callable[[Target, Plan, dict[str, float]], list[Row]]] = {
    "slow": slow_clients, "flood": token_flood, "noisy": noisy_tenant, "platform": slow_platform,
}


# --- the report -----------------------------------------------------------------------------


def report(rows: list[Row], base: dict[str, float], args: argparse.Namespace, plan: Plan,
           started: float, load_before: str, workers: int) -> str:
    """Return the Markdown report."""
    lines = [
        "# Hostile load (issue 11's Bar)",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {machine()}; "
        f"`redmart-shim serve` on {args.store} ({workers} worker(s)), the sandbox as its "
        f"platform; {'--quick (smoke sizes, not the Bar)' if args.quick else 'full sizes'}; "
        f"{time.monotonic() - started:.0f} s; 1-minute load average {load_before} before, "
        f"{load_average()} after.",
        "",
        f"Baseline (unloaded, same run): GET {PRODUCT} p50 {fmt_ms(base['get_p50'])}, p99 "
        f"{fmt_ms(base['get_p99'])}; tenant B's GET p50 {fmt_ms(base['b_p50'])}; /healthz p50 "
        f"{fmt_ms(base['health_p50'])}, p99 {fmt_ms(base['health_p99'])}.",
        "",
        "| scenario | figure | measured | bar | met | load before -> after |",
        "|---|---|---:|---|---|---|",
    ]
    for row in rows:
        met = "-" if row.met is None else ("met" if row.met else "NOT met")
        lines.append(f"| {row.scenario} | {row.figure} | {row.measured} | {row.bar or '-'} | "
                     f"{met} | {row.load} |")
    lines += ["", "Details:", ""]
    lines += [f"- {row.scenario}: {row.note}" for row in rows if row.note]
    lines += ["", f"Sizes: {plan}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start the processes, run the scenarios, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke sizes: about 20 s, every scenario, tiny loads")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                        help="the shim's state: SQLite (one worker, the default layout) or "
                             "PostgreSQL + Redis (two workers)")
    parser.add_argument("--only", help="comma-separated scenarios to run (default all): "
                                       + ", ".join(SCENARIOS))
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help=f"where the Markdown report goes (default {RESULTS})")
    parser.add_argument("--flood", nargs=3, metavar=("PORT", "THREADS", "SECONDS"),
                        help=argparse.SUPPRESS)  # scenario b's flooders, in their own process
    args = parser.parse_args(argv)
    if args.flood:
        port, threads, seconds = args.flood
        print(json.dumps(flood(int(port), int(threads), float(seconds))))
        return 0
    plan = Plan.quick() if args.quick else Plan()
    chosen = [name.strip() for name in (args.only or ",".join(SCENARIOS)).split(",")]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {list(SCENARIOS)}")
    started, load_before = time.monotonic(), load_average()
    print(f"machine: {machine()}; load average {load_before}", flush=True)
    with workspace() as (workdir, procs):
        # Bench for its keys and its sandbox process (the store option here is not used).
        bench = Bench(parse_args(["--store", "postgres", "--upstream-server", "werkzeug"]),
                      workdir, procs)
        target = Target(bench, procs, workdir, args, plan)
        workers = len(target.rss())
        base = baseline(target, plan)
        rows: list[Row] = []
        for name in chosen:
            rows += SCENARIOS[name](target, plan, base)
    text = report(rows, base, args, plan, started, load_before, workers)
    print()
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
