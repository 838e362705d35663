"""The matching service: consumes ``match.in``, one engine per market.

Inputs: orders, cancels and amends from risk, liquidation orders and transfers, and the
oracle's marks (which only conditional orders use).

Outputs (``schemas.topics.ROUTES``): order outcomes (and triggered conditional orders) and fills to ``risk.in`` (keyed by account; a fill to both
accounts' partitions) and to ``account.events``; trades (the public view of fills) to
``market.data`` (keyed by market), and there, once per fetched batch, each market's book
delta and BBO (coalesced: every level the batch changed, at its size now).
"""

from __future__ import annotations

from exchange.markets import Market
from exchange.matching import MatchingEngine
from schemas import MATCH_IN, RejectReason
from schemas.events import Message, NewOrder, OrderRejected
from schemas.state import MatchingState
from schemas.topics import MATCHING, ROUTES
from services.runtime.runner import ServiceSpec


class UnknownMarket(LookupError):
    """A command names a market this exchange does not list."""


class MatchingProcessor:
    """The engines of one ``match.in`` partition: one per market."""

    def __init__(self, markets: dict[str, Market], partition: int):
        self.engines = {symbol: MatchingEngine(market) for symbol, market in markets.items()}
        for engine in self.engines.values():
            engine.coalesce = True  # book deltas and BBO once per batch (flush)
        self.producer = f"match.p{partition}"
        self.seq = 0

    def flush(self, offset: int, ts: int = 0) -> list[Message]:
        """Each market's book changes of the batch: one ``BookDelta`` (every level it
        changed, at its size now) and a ``BBO`` if the top moved, numbered with the input
        offset they reflect (``MatchingEngine.publish_book``)."""
        return [event for engine in self.engines.values() for event in engine.publish_book(offset)]

    def export(self) -> MatchingState:
        return MatchingState(self.producer, self.seq, [engine.export() for engine in self.engines.values()])

    def load(self, state: MatchingState) -> None:
        self.producer, self.seq = state.producer, state.seq
        for market in state.markets:
            engine = self.engines.get(market.market)
            if engine is None:
                raise ValueError(f"the snapshot holds market {market.market!r}, which this exchange does not list")
            engine.load(market)

    def apply(self, message: Message) -> list[Message]:
        engine = self.engines.get(getattr(message, "market", ""))
        if engine is not None:
            return engine.apply(message)
        if isinstance(message, NewOrder):
            self.seq += 1
            return [OrderRejected(self.producer, self.seq, message.market, message.account, message.order_id,
                                  message.client_order_id, RejectReason.UNKNOWN_MARKET,
                                  f"no market {message.market!r}; markets: {', '.join(self.engines)}", message.ts)]
        raise UnknownMarket(f"no market {getattr(message, 'market', None)!r}")


def spec(markets: dict[str, Market]) -> ServiceSpec:
    return ServiceSpec("matching", MATCH_IN, lambda partition: MatchingProcessor(markets, partition), ROUTES[MATCHING], MATCHING)
