"""One writer per producer name: claims, epochs, and the fence every reader keeps
(docs/services.md, "Trust model").

An instance takes a name before it writes under it: a service instance that is assigned an
input partition takes that partition (``risk.in[3]``) before it emits anything for it,
and the oracle takes ``oracle``. A claim (``Claim``) is a record of the compacted,
one-partition ``claims`` topic keyed by the name, with an epoch one above the last
claim's. Every record the instance sends carries, in its ``perpsim-epochs`` header, the
epoch of each of its producers in the record (``risk.p3``, ``risk.p3.margin`` ...).

Readers keep the highest epoch they have seen per producer (``services.runtime.fence``): the services'
runners in their snapshots, the client and the gateway in memory. A message under a lower
epoch than one already seen is what a stale instance still sends after another took its
place (paused, cut off from the broker, or started twice): a runner dead-letters it with
the reason, a client skips it. The stale instance finds the newer claim itself
(``ClaimWatch``, every ``WATCH_EVERY_S``, and before it saves a partition it is losing):
a service instance stops serving that partition (it gets it back, under a new claim, if
the group assigns it again), the oracle stops; both log who took over.

For the services, whose output is a deterministic fold of their input, a successor
re-emits what its predecessor sent with the same sequence numbers, so a new epoch keeps
the sequence; the oracle's numbers come from its clock, so under a new epoch its sequence
starts again (``Fence.new_epoch``), and a stray oracle's numbers cannot outlive it.

What this does not do: keep out a writer that forges a claim or a header. The embedded
broker authenticates no one; on a shared cluster ACLs decide who may write which topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import msgspec

from schemas import CLAIMS
from services.runtime.bus import Bus, BusError

log = logging.getLogger(__name__)

WATCH_EVERY_S = 2.0


class Claim(msgspec.Struct, frozen=True):
    name: str  # what is claimed: "<input topic>[<partition>]", or "oracle"
    epoch: int
    instance: str  # who claimed it: "<service>-<random>", in the logs of both sides
    ts_ns: int


class Fenced(BusError):
    """Another instance took over a name this one writes under (``name``)."""

    def __init__(self, message: str, name: str = ""):
        super().__init__(message)
        self.name = name


def instance_id(service: str) -> str:
    return f"{service}-{uuid.uuid4().hex[:8]}"


def partition_claim(topic: str, partition: int) -> str:
    return f"{topic}[{partition}]"


async def latest_claims(bus: Bus, bounds: tuple[int, int] | None = None) -> dict[str, Claim]:
    """The newest claim of every name (the last record of its key in the log); ``bounds``:
    the topic's offsets, when the caller has them."""
    claims: dict[str, Claim] = {}
    begin, end = bounds or await bus.offsets(CLAIMS, 0)  # each claim is a batch of its own: the end is exact
    records = await bus.read(CLAIMS, 0, begin, end) if end > begin else []
    if end > begin and (not records or records[-1].offset != end - 1):
        raise BusError(f"the {CLAIMS} topic could not be read to its end ({end}) this time")
    for record in records:
        try:
            claim = msgspec.msgpack.decode(record.value, type=Claim)
        except msgspec.DecodeError:
            log.warning("a record of %s at offset %d is not a claim; ignored", CLAIMS, record.offset)
            continue
        claims[claim.name] = claim
    return claims


async def take(bus: Bus, name: str, instance: str) -> Claim:
    """Claim ``name`` for ``instance`` at the epoch after the newest; returns the claim once
    it is stored and read back as the newest (two taking at once: the later record wins,
    and the other finds it and stops)."""
    previous = (await latest_claims(bus)).get(name)
    claim = Claim(name, (previous.epoch if previous else 0) + 1, instance, time.time_ns())
    await bus.send([(CLAIMS, 0, name.encode(), msgspec.msgpack.encode(claim))])
    if previous is not None and previous.instance != instance:
        log.info("%s took %s at epoch %d from %s (epoch %d)", instance, name, claim.epoch, previous.instance,
                 previous.epoch)
    else:
        log.info("%s took %s at epoch %d", instance, name, claim.epoch)
    return claim


class ClaimWatch:
    """Finds out, every ``WATCH_EVERY_S``, whether another instance took a name this one holds."""

    def __init__(self, bus: Bus, instance: str):
        self.bus = bus
        self.instance = instance
        self.held: dict[str, Claim] = {}
        self.found: list[Fenced] = []  # what ``run`` found taken, for the owner to act on
        # the claims as last read, and the topic's end then: claims change rarely, and a check
        # that finds the end where it was reads nothing more (a read of records is not cheap
        # on a loaded broker, and shares the bus's one reader with the services' log checks)
        self._claims: dict[str, Claim] = {}
        self._end = -1

    async def run(self) -> None:
        """Check every ``WATCH_EVERY_S`` in the background (a read of the claims must never
        hold up the work: on a loaded broker it can take a while)."""
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            try:
                taken = await self.taken()
            except Exception as exc:  # noqa: BLE001 - the watch must outlive a surprise; said, then tried again
                log.warning("%s could not check its claims (%s: %s); trying again", self.instance,
                            type(exc).__name__, exc)
                continue
            self.found += taken  # after the read: ``pop_found`` may have replaced the list meanwhile

    def pop_found(self) -> list[Fenced]:
        found, self.found = self.found, []
        return found

    def hold(self, claim: Claim) -> None:
        self.held[claim.name] = claim

    def release(self, name: str) -> None:
        self.held.pop(name, None)

    async def taken(self) -> list[Fenced]:
        """The names held that another instance has claimed since (each no longer held, as
        a ``Fenced`` that says who took it). A read that fails decides nothing (slow is not
        lost): it is tried again at the next check."""
        if not self.held:
            return []
        try:
            bounds = await self.bus.offsets(CLAIMS, 0)
            if bounds[1] != self._end:
                self._claims, self._end = await latest_claims(self.bus, bounds), bounds[1]
            claims = self._claims
        except BusError as exc:
            log.info("%s could not read the claims this time (%s)", self.instance, exc)
            return []
        taken = []
        for name, mine in sorted(self.held.items()):  # as held now: the read took a while
            newest = claims.get(name)
            if newest is not None and newest.instance != self.instance and newest.epoch >= mine.epoch:
                self.held.pop(name, None)
                taken.append(Fenced(f"{newest.instance} took over {name} at epoch {newest.epoch} (this instance, "
                                    f"{self.instance}, held epoch {mine.epoch}): it was paused or cut off long "
                                    "enough to be replaced, or started twice; what it still writes under the "
                                    "old epoch is refused by every reader", name))
        return taken
