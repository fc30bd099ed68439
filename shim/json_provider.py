"""The app's JSON as the legacy API (behind Kong) wrote it: member order kept, compact."""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider

from shim import jsoncodec

_COMPACT = {"separators": (",", ":")}  # what ``response`` passes for a compact answer


class LegacyJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, keeping each schema's member order, without spaces.

    A compact answer is written by orjson when that gives exactly ``json``'s text (ASCII
    escapes and all, ``shim.jsoncodec``), else by ``json`` as before.
    """

    sort_keys = False
    compact = True

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs == _COMPACT and self.ensure_ascii and not self.sort_keys:
            written = jsoncodec.dumps_compact(obj)
            if written is not None:
                return written
        return super().dumps(obj, **kwargs)
