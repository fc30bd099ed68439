"""JSON on the hot paths: orjson wherever it gives exactly what the standard library gives.

Reading platform answers (``shim.upstream.envelope.decode``) and writing legacy answers
(``shim.json_provider``) cost a tenth of a 100-item page with ``json`` (issue 12); orjson
does both several times faster, but not always the same way. Each function here takes
orjson's result only when it is provably ``json``'s, and otherwise lets ``json`` answer (or
raise) exactly as before:

- reading: orjson turns an integer beyond 64 bits into a float (a 30-digit rpc would come
  out wrong): a body with a run of 19 or more digits goes to ``json``, which keeps it exact
  (``-9223372036854775809``, the first negative beyond int64, has 19). ``json`` gives up
  nesting at about 1000 levels less the depth of the stack, orjson at 1024: a body with 800
  or more ``[`` and ``{`` goes to ``json``. Whatever orjson refuses (``NaN`` literals, a
  byte-order mark, lone surrogates, UTF-16) goes to ``json``, which reads it or refuses it.
- writing: orjson writes UTF-8 where ``json`` (``ensure_ascii``) escapes, leaves DEL raw,
  writes NaN and infinities as ``null``, writes some floats in another notation (``1e-05``
  as ``0.00001``), refuses integers beyond 64 bits, and serializes dates and dataclasses its
  own way. Output that is not ASCII, holds DEL, ``null`` or a float, and anything orjson
  refuses (dates, dataclasses and subclasses of builtin types are handed back to it to
  refuse) is written by ``json``. The shim puts no ``enum.Enum`` member in an answer (orjson
  would write its value, ``json`` refuses it).

``tests/test_jsoncodec.py`` compares both functions with ``json`` (hypothesis, and the edge
cases above); ``tests/test_differential.py`` compares whole answers, byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_DIGITS_AND_OPENERS = bytes.maketrans(b"123456789{", b"000000000[")
_LONG_NUMBER = b"0" * 19
_MAX_OPENERS = 800
_FLOAT_MARKS = bytes.maketrans(b"123456789E", b"000000000e")
_BEFORE_NUMBER = frozenset(b":,[")
_REFUSE = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
           | orjson.OPT_PASSTHROUGH_SUBCLASS)


def loads(body: bytes) -> Any:
    """Return the JSON value in ``body`` exactly as ``json.loads`` does (or raise as it does)."""
    marked = body.translate(_DIGITS_AND_OPENERS)
    if _LONG_NUMBER not in marked and marked.count(b"[") < _MAX_OPENERS:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # json decides: it reads some texts orjson refuses
    return json.loads(body)


def dumps_compact(value: Any) -> str | None:
    """Return ``json.dumps(value, separators=(",", ":"))`` if orjson can write exactly that.

    ``None``: only ``json`` can (the caller then calls it, with its own ``default``).
    """
    try:
        written = orjson.dumps(value, option=_REFUSE)
    except orjson.JSONEncodeError:
        return None
    if not written.isascii() or b"\x7f" in written or b"null" in written \
            or _holds_float(written):
        return None
    return written.decode("ascii")


def _holds_float(written: bytes) -> bool:
    """Return whether orjson's compact output ``written`` may hold a float.

    A float is a number with ``.`` or ``e`` after its first digits; a number starts the
    output or follows ``:``, ``,`` or ``[``. Text in strings may look like one too: then
    ``json`` writes the answer, at its own speed, never a different one.
    """
    marked = written.translate(_FLOAT_MARKS)
    for mark in (b"0.", b"0e"):
        at = marked.find(mark)
        while at != -1:
            start = at
            while start > 0 and marked[start - 1] == 0x30:  # the digits before
                start -= 1
            if start > 0 and marked[start - 1] == 0x2D:  # a minus sign
                start -= 1
            if start == 0 or marked[start - 1] in _BEFORE_NUMBER:
                return True
            at = marked.find(mark, at + 2)
    return False
