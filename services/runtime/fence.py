"""The epochs a record carries, and the fence a reader keeps (``services.runtime.claims``
says who takes a name at which epoch).

A writer's records carry, in their ``perpsim-epochs`` header, the epoch at which it holds
the name of each of its producers in the record. A reader keeps the highest epoch seen
per producer (``Fence``); a message under a lower one is a stale instance's.
"""

from __future__ import annotations

import msgspec

STAMP = "perpsim-epochs"  # the record header: msgpack {producer: epoch}


def stamp_header(epochs: dict[str, int]) -> tuple[tuple[str, bytes], ...]:
    return ((STAMP, msgspec.msgpack.encode(epochs)),) if epochs else ()


def stamps(headers: tuple[tuple[str, bytes], ...]) -> dict[str, int]:
    """The epochs a record's headers give its producers (none: an unstamped writer, a client)."""
    for key, value in headers:
        if key == STAMP:
            try:
                return msgspec.msgpack.decode(value, type=dict[str, int])
            except msgspec.DecodeError:
                return {}
    return {}


class Fence:
    """The highest epoch seen per producer, and what a message under another one is."""

    def __init__(self, epochs: dict[str, int] | None = None):
        self.epochs = epochs if epochs is not None else {}

    def fenced(self, producer: str, epoch: int | None) -> str | None:
        """Why a message of ``producer`` stamped ``epoch`` comes from a stale instance, or
        None. A higher epoch than seen is a successor: remembered (``new_epoch`` says so
        first, for whoever keeps per-epoch sequences)."""
        if epoch is None:
            return None
        known = self.epochs.get(producer, 0)
        if epoch < known:
            return (f"{producer!r} wrote under epoch {epoch}, but another instance took its name at epoch {known}: "
                    "refused as a stale instance's (services.runtime.claims)")
        if epoch > known:
            self.epochs[producer] = epoch
        return None

    def new_epoch(self, producer: str, epoch: int | None) -> bool:
        return epoch is not None and epoch > self.epochs.get(producer, 0)
