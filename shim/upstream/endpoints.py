"""Where the platform answers: the defaults of the client and of the settings."""

from __future__ import annotations

DEFAULT_API_URL = "https://api.lazada.sg/rest"
DEFAULT_AUTH_URL = "https://auth.lazada.com/rest"
