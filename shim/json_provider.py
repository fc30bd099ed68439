"""The app's JSON as the legacy API (behind Kong) wrote it: member order kept, compact."""

from __future__ import annotations

from flask.json.provider import DefaultJSONProvider


class LegacyJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, keeping each schema's member order, without spaces."""

    sort_keys = False
    compact = True
