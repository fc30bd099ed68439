"""What a seller who rewrote the integration would run: the official lazop-sdk, one call at a time.

``lazop_direct.py API_URL API_PATH PARAMS_JSON WARMUP_S DURATION_S`` calls ``API_PATH`` in a
sequential loop and prints one JSON line: the latency of every measured call (ms) and the
count of calls that did not answer code "0". The SDK opens a new connection (and, over TLS,
does a new handshake) on every call: ``requests.get`` without a session. That is the point of
the comparison.

The SDK writes a log directory under ``~`` at import, so the driver points HOME at a temp
directory. Credentials come from the environment (BENCH_APP_KEY, BENCH_APP_SECRET,
BENCH_SELLER_TOKEN); REQUESTS_CA_BUNDLE makes it trust the bench's self-signed upstream.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> None:
    """Run the loop and print the result line."""
    from lazop_sdk.base import LazopClient, LazopRequest

    api_url, api_path, params_json = argv[0], argv[1], argv[2]
    warmup_s, duration_s = float(argv[3]), float(argv[4])
    params = json.loads(params_json)
    client = LazopClient(api_url, os.environ["BENCH_APP_KEY"], os.environ["BENCH_APP_SECRET"],
                         timeout=10)
    token = os.environ["BENCH_SELLER_TOKEN"]

    def call() -> bool:
        request = LazopRequest(api_path, "GET")
        for name, value in params.items():
            request.add_api_param(name, value)
        answer = client.execute(request, token)
        result = answer.body.get("result") if isinstance(answer.body, dict) else None
        return answer.code == "0" and isinstance(result, dict) and result.get("success") is True

    latencies: list[float] = []
    failures = 0
    warmup_end = time.monotonic() + warmup_s
    while time.monotonic() < warmup_end:
        call()
    end = time.monotonic() + duration_s
    while (now := time.monotonic()) < end:
        ok = call()
        latencies.append((time.monotonic() - now) * 1000)
        failures += not ok
    print(json.dumps({"latencies_ms": latencies, "failures": failures,
                      "duration_s": duration_s}))


if __name__ == "__main__":
    main(sys.argv[1:])
