"""The names of a position and of a margin bucket, as the engines and the snapshots key them.

- ``PositionKey``: ``account``'s position in ``market`` on ``side`` (``PositionSide.BOTH``
  in one-way mode, the only mode today; hedge mode would hold a ``LONG`` and a ``SHORT``
  in one market under two keys).
- ``BucketId``: ``account``'s cross bucket (``position`` None), or the isolated bucket of
  ``position``.

Both are ``NamedTuple``s: hashable, ordered, and encoded by msgspec as arrays, so the
snapshots (``schemas.state``) hold them as they are. On the wire the messages still name a
bucket by (mode, market) with ``""`` for the cross bucket (``LiquidationTrigger``,
``LiquidationOutcome``, ``CollateralTransfer``); ``exchange.accounts.wire_market`` and
``bucket_from_wire`` are the only places that read or write that convention.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.enums import PositionSide


class PositionKey(NamedTuple):
    account: str
    market: str
    side: PositionSide = PositionSide.BOTH


class BucketId(NamedTuple):
    account: str
    position: PositionKey | None = None
