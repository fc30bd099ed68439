"""Setting a stock lot's quantity, with the concurrency control the new API lacks.

The platform has no ETag, If-Match or "below scheduled" check, so the shim supplies them:
the ETag is the quoted quantity at the location (the legacy docs' ``If-Match: "10"``), and a
PATCH holds a per-lot lock across read, checks and write, so two clients holding the same
ETag cannot both succeed through this process.

An update the platform does not confirm (no answer, a garbled one, a backend failure) is
settled under the same lock by reading the lot again (``settle``). A PATCH therefore answers
200 only for an update the platform applied, a definitive failure (412, 409, 429, ...) only
for one it did not and never will, and otherwise the explicit "outcome unknown" 503.

No Flask here: ``StockLotUpdate`` is given the If-Match value, the lot's read and write, and
its lock, so it runs (and is tested) without an app or a request.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import ETags
from werkzeug.http import parse_etags

from shim import errors
from shim.schemas.stock_lots import etag_of
from shim.store.errors import StoreUnavailable
from shim.upstream import BusinessError

log = logging.getLogger(__name__)

StockLot = dict[str, Any]  # loaded through RssStockLotResultSchema

# RFC 9110 entity tags ("10", W/"10") or "*"; bare digits too, which some clients sent.
_ETAG = r'(?:W/)?"[\x21\x23-\x7e]*"|[0-9]+'
IF_MATCH = re.compile(rf"\*|(?:{_ETAG})(?:[ \t]*,[ \t]*(?:{_ETAG}))*")


def parse_if_match(header: str | None) -> ETags:
    """Return the entity tags of an If-Match header; a missing or malformed one is a 400."""
    if header is None:
        raise errors.bad_request("the If-Match header is required: send the ETag of a read")
    value = header.strip(" \t")
    if value and not IF_MATCH.fullmatch(value):  # empty: a list that matches nothing
        raise errors.bad_request('If-Match must be "*" or a list of entity tags, like "10"')
    return parse_etags(header)


def if_match_holds(if_match: ETags, current: str) -> bool:
    """Return whether ``if_match`` names the ETag ``current`` (strong comparison) or is "*"."""
    return bool(if_match.star_tag or if_match.contains(current))


@dataclass(frozen=True)
class StockLotUpdate:
    """One PATCH of one stock lot: read, check, write and settle, all under the lot's lock.

    ``read`` returns the lot now; ``write`` sends the update and returns the lot the
    platform answered, raising ``errors.OutcomeUnknown`` when the platform did not confirm
    it and letting a ``BusinessError`` (the service's refusal) through as it is. Both raise
    legacy failures otherwise. ``hold`` holds the lot's lock for a ``with`` block.
    """

    read: Callable[[], StockLot]
    write: Callable[[int], StockLot]
    hold: Callable[[], AbstractContextManager[Any]]
    read_timeout_s: float
    clock: Callable[[], float] = field(default=time.monotonic)

    def apply(self, quantity: int, if_match: ETags) -> StockLot:
        """Set the quantity if ``if_match`` still holds and pickups stay covered; return the lot."""
        with self.hold():
            started = self.clock()
            current = self.read()
            if not if_match_holds(if_match, etag_of(current)):
                raise errors.Problem(412, errors.PRECONDITION_TITLE)
            if quantity < current["quantity_scheduled_for_pickup"]:
                raise errors.Problem(409, errors.CONFLICT_TITLE)
            try:
                return self._write(quantity)
            except errors.OutcomeUnknown as unknown:
                return self.settle(quantity, current, unknown, started)

    def settle(self, quantity: int, before: StockLot, unknown: errors.OutcomeUnknown,
               started: float) -> StockLot:
        """Return the lot if an unconfirmed update was applied, or send it once more; else raise.

        Runs under the lot's lock, so only an outside writer can have changed the lot since
        ``before`` was read. The re-read decides:
        - the requested quantity: applied, or (when ``before`` showed it already) the lot is
          in the state asked for whatever became of the attempt; the update sets, it does not
          add; so the 200;
        - ``before``'s quantity: not applied (yet). The If-Match still holds, so the update is
          what the client asked for and is sent once more, unless the first attempt timed out
          (the platform is slow, and a late write can still land: do not pile on) or the
          PATCH has already used a read deadline (so it stays within about three of them);
        - anything else, or no answer: the outcome stays open.
        Once an attempt's outcome is open the PATCH answers 200 or ``OutcomeUnknown``, never a
        definitive failure: that first attempt may still be applied after any later answer.
        """
        was = before["quantity_at_pickup_location"]
        now = self.reread()
        if now is not None and now["quantity_at_pickup_location"] == quantity:
            log.warning("unconfirmed update of a stock lot: the re-read shows the quantity "
                        "asked for")
            return now
        resend = (now is not None and now["quantity_at_pickup_location"] == was
                  and quantity >= now["quantity_scheduled_for_pickup"] and not unknown.timed_out
                  and self.clock() - started < self.read_timeout_s)
        if not resend:
            log.warning("outcome of a stock lot update unknown: %s", "the re-read failed"
                        if now is None else "the lot changed"
                        if now["quantity_at_pickup_location"] != was
                        else "not sent again (slow platform, or pickups booked)")
            raise unknown
        log.warning("unconfirmed update of a stock lot was not applied; sending it once more")
        try:
            return self._write(quantity)
        except Exception as failure:  # whatever it is, the first attempt's fate is still open
            if not _answered(failure):
                log.exception("second attempt of a stock lot update failed unexpectedly")
            now = self.reread()
            if now is not None and now["quantity_at_pickup_location"] == quantity:
                return now
            raise errors.OutcomeUnknown() from None

    def reread(self) -> StockLot | None:
        """Return the current lot, or ``None`` if it cannot be read now."""
        try:
            return self.read()
        except Exception as failure:
            if _answered(failure):
                return None
            raise

    def _write(self, quantity: int) -> StockLot:
        """Send the update; after a refusal, the 409 if pickups were booked meanwhile.

        The lock only orders writers going through this process; the warehouse can raise
        ``quantityScheduledForPickup`` between the read and the write, and the platform's
        refusal messages are undocumented, so the re-read tells.
        """
        try:
            return self.write(quantity)
        except BusinessError as refusal:
            if quantity < self.read()["quantity_scheduled_for_pickup"]:
                raise errors.Problem(409, errors.CONFLICT_TITLE) from None
            raise errors.from_upstream(refusal) from None


def _answered(failure: BaseException) -> bool:
    """Return whether ``failure`` has a legacy answer (not a bug in the shim)."""
    return isinstance(failure, StoreUnavailable) or errors.answers(failure)
