"""What the gateway knows of the market, folded from ``market.data``: per market the book
(from deltas), the last trades, the mark and index, and funding."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from schemas.events import BookDelta, BookSnapshot, Funding, MarkPrice, Trade


@dataclass
class MarketState:
    bids: dict[int, int] = field(default_factory=dict)  # price ticks -> size lots
    asks: dict[int, int] = field(default_factory=dict)
    update_id: int = 0
    trades: deque = field(default_factory=lambda: deque(maxlen=1000))  # (id, price, size, taker side, ts)
    mark: int = 0
    index: int = 0
    funding_rate_ppb: int = 0
    funding_ts: int = 0
    funding_history: deque = field(default_factory=lambda: deque(maxlen=1000))  # (ts ns, rate ppb)
    updated_ns: int = 0


class MarketProjection:
    def __init__(self, symbols: list[str]):
        self.markets = {symbol: MarketState() for symbol in symbols}

    def apply(self, message) -> None:
        state = self.markets.get(getattr(message, "market", ""))
        if state is None:
            return
        state.updated_ns = message.ts or time.time_ns()
        if isinstance(message, BookDelta):
            for side, levels in ((state.bids, message.bids), (state.asks, message.asks)):
                for price, size in levels:
                    if size:
                        side[price] = size
                    else:
                        side.pop(price, None)
            state.update_id += 1
        elif isinstance(message, BookSnapshot):
            state.bids = dict(message.bids)
            state.asks = dict(message.asks)
            state.update_id += 1
        elif isinstance(message, Trade):
            state.trades.append((message.trade_id, message.price, message.size, int(message.taker_side), message.ts))
        elif isinstance(message, MarkPrice):
            state.mark, state.index = message.mark_price, message.index_price
        elif isinstance(message, Funding):
            state.funding_rate_ppb, state.funding_ts = message.rate_ppb, message.ts
            state.funding_history.append((message.ts, message.rate_ppb))

    def depth(self, symbol: str, limit: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        state = self.markets[symbol]
        bids = sorted(state.bids.items(), key=lambda level: -level[0])[:limit]
        asks = sorted(state.asks.items())[:limit]
        return bids, asks
