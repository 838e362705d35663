"""The venue's identity on the bus, so that every process can tell a broker that lost its
data from one that is only slow (DESIGN.md, "Slow is not lost").

The first record of the one-partition, compacted ``venue`` topic names the venue: an id
drawn when its topics were first made (``ensure_identity``; whoever writes first wins, a
later proposal is a record after it and changes nothing). Every service, the oracle and
the gateway read it at start and then check, every ``CHECK_EVERY_S``, that the topic
still starts with that record (``VenueWatch``). A broker restarted empty (the embedded
one keeps everything in memory) or a cluster whose topics were recreated answers an empty
topic or another first record: positive evidence, seen twice in a row, and the process
stops with one plain message. A check that cannot be answered (slow, paused, unreachable)
decides nothing: the watchdog of ``services.runtime.broker`` handles a broker gone for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import msgspec

from schemas import VENUE
from services.runtime.bus import Bus, BusError

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
CONFIRMATIONS = 2  # checks in a row that must find the identity gone
READ_EVERY = 10  # checks: the others ask for the offsets only


class VenueIdentity(msgspec.Struct, frozen=True):
    id: str
    created_ns: int


class VenueLost(BusError):
    """The broker no longer holds this venue's data."""


async def read_identity(bus: Bus) -> VenueIdentity | None:
    """The venue's identity (the ``venue`` topic's first record), None if it has none yet."""
    begin, end = await bus.offsets(VENUE, 0)
    if end <= begin:
        return None
    records = await bus.read(VENUE, 0, begin, begin + 1)
    if not records:
        return None
    try:
        return msgspec.msgpack.decode(records[0].value, type=VenueIdentity)
    except msgspec.DecodeError:
        raise BusError(f"the {VENUE} topic's first record is not a venue identity; the topic belongs to "
                       "something else") from None


async def ensure_identity(bus: Bus) -> VenueIdentity:
    """The venue's identity; drawn and written if the venue has none yet."""
    identity = await read_identity(bus)
    if identity is None:
        proposal = VenueIdentity(uuid.uuid4().hex, time.time_ns())
        await bus.send([(VENUE, 0, proposal.id.encode(), msgspec.msgpack.encode(proposal))])
        identity = await read_identity(bus)  # the first record written, ours or an earlier proposal
        if identity is None:
            raise BusError(f"the venue's identity could not be read back from the {VENUE} topic")
        log.info("venue %s: a new venue on this broker", identity.id)
    return identity


class VenueWatch:
    """Checks that the bus still holds the venue ``identity``."""

    def __init__(self, bus: Bus, identity: VenueIdentity):
        self.bus = bus
        self.identity = identity
        self._seen_gone = 0
        self._checks = 0

    async def check(self) -> None:
        """``VenueLost`` once the identity has been found gone ``CONFIRMATIONS`` times in a
        row; a check that cannot be answered counts for nothing. Most checks ask only for
        the topic's offsets (an empty broker's topic is empty); every ``READ_EVERY``-th, and
        each one after a suspect answer, reads the first record too (recreated topics)."""
        self._checks += 1
        try:
            if not self._seen_gone and self._checks % READ_EVERY:
                begin, end = await self.bus.offsets(VENUE, 0)
                if end > begin:
                    return
            found = await read_identity(self.bus)
        except BusError as exc:
            log.debug("venue check not answered: %s", exc)
            return
        if found == self.identity:
            self._seen_gone = 0
            return
        self._seen_gone += 1
        if self._seen_gone < CONFIRMATIONS:
            return
        now = "is empty" if found is None else f"names another venue ({found.id})"
        raise VenueLost(f"the broker lost this venue's data: its {VENUE} topic {now}, not venue {self.identity.id} "
                        f"(a broker restarted empty, or its topics were recreated). The state was on that broker; "
                        "nothing can resume it. To start fresh, run `perpsim up` again (with --bootstrap, on an "
                        "empty cluster or after `perpsim topics`)")

    async def run(self, every_s: float = CHECK_EVERY_S) -> None:
        """Check until the identity is gone (raises ``VenueLost``)."""
        while True:
            await asyncio.sleep(every_s)
            await self.check()
