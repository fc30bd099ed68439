"""The image's HEALTHCHECK: exit 0 if ``GET /healthz`` answers 200 here, else 1.

Standard library only: the slim image has no curl. The port is the one start.sh binds: that
of ``$SHIM_BIND``, else ``$PORT``, else 8080; the request goes to 127.0.0.1 whatever the bind
address, and never through a proxy from the environment.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

TIMEOUT_S = 3.0


def health_url(env: Mapping[str, str] = os.environ) -> str:
    """Return the URL of this container's liveness endpoint."""
    bind = env.get("SHIM_BIND") or f"0.0.0.0:{env.get('PORT') or 8080}"
    return f"http://127.0.0.1:{bind.rpartition(':')[2]}/healthz"


def main() -> int:
    """Probe the endpoint once; return the exit status."""
    url = health_url()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_S) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
        error.close()
    except OSError as error:  # refused, reset, timed out: not (yet) serving
        print(f"healthcheck: {url}: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
