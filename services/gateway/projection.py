"""What the gateway knows of the market, folded from ``market.data``: per market the book
(from deltas), the last trades, one-minute candles of trades, of the mark, of the index and
of the mark's premium over the index (a week of each), the mark and index, and funding."""

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
    funding_history: deque = field(default_factory=lambda: deque(maxlen=1000))  # (ts ns, rate ppb, mark)
    updated_ns: int = 0
    # one-minute candles, oldest first: [open ms, open, high, low, close, volume lots,
    # quote micro, trades, taker-buy lots, taker-buy quote micro] (prices in ticks)
    candles: deque = field(default_factory=lambda: deque(maxlen=CANDLES_KEPT))
    mark_candles: deque = field(default_factory=lambda: deque(maxlen=CANDLES_KEPT))  # [open ms, o, h, l, c]
    index_candles: deque = field(default_factory=lambda: deque(maxlen=CANDLES_KEPT))  # the same, of the index
    # the same, of the premium (mark − index) / index in parts per billion
    premium_candles: deque = field(default_factory=lambda: deque(maxlen=CANDLES_KEPT))


CANDLES_KEPT = 7 * 24 * 60
MINUTE_MS = 60_000


def _candle(candles: deque, ts_ns: int, price: int, extra: int = 5) -> list:
    """The one-minute candle ``ts_ns`` falls in, opened if new (a late event joins the
    newest candle rather than reopening an old one); ``extra`` zeroed counters follow
    the prices."""
    start = ts_ns // 1_000_000 // MINUTE_MS * MINUTE_MS
    if candles and candles[-1][0] >= start:
        candle = candles[-1]
        candle[2] = max(candle[2], price)
        candle[3] = min(candle[3], price)
        candle[4] = price
        return candle
    candle = [start, price, price, price, price] + [0] * extra
    candles.append(candle)
    return candle


def _mark_candle(candles: deque, ts_ns: int, price: int) -> None:
    _candle(candles, ts_ns, price, extra=0)


def premium_ppb(mark: int, index: int) -> int:
    """The mark's premium over the index, (mark − index) / index, in parts per billion
    (rounded towards zero)."""
    difference = (mark - index) * 1_000_000_000
    return difference // index if difference >= 0 else -(-difference // index)


class MarketProjection:
    def __init__(self, value_per_tick_lot: dict[str, int]):
        """``value_per_tick_lot``: per market symbol, micro units per tick·lot."""
        self.value_per_tick_lot = value_per_tick_lot
        self.markets = {symbol: MarketState() for symbol in value_per_tick_lot}

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
            ts = message.ts or time.time_ns()
            state.trades.append((message.trade_id, message.price, message.size, int(message.taker_side), ts))
            candle = _candle(state.candles, ts, message.price)
            quote = message.price * message.size * self.value_per_tick_lot[message.market]
            candle[5] += message.size
            candle[6] += quote
            candle[7] += 1
            if message.taker_side > 0:
                candle[8] += message.size
                candle[9] += quote
        elif isinstance(message, MarkPrice):
            state.mark, state.index = message.mark_price, message.index_price
            ts = message.ts or time.time_ns()
            _mark_candle(state.mark_candles, ts, message.mark_price)
            if message.index_price > 0:
                _mark_candle(state.index_candles, ts, message.index_price)
                _mark_candle(state.premium_candles, ts, premium_ppb(message.mark_price, message.index_price))
        elif isinstance(message, Funding):
            state.funding_rate_ppb, state.funding_ts = message.rate_ppb, message.ts
            state.funding_history.append((message.ts, message.rate_ppb, state.mark))

    def best(self, symbol: str) -> tuple[tuple[int, int], tuple[int, int]]:
        """(best bid, best ask) as (price, size); (0, 0) for an empty side."""
        state = self.markets[symbol]
        return max(state.bids.items(), default=(0, 0)), min(state.asks.items(), default=(0, 0))

    def depth(self, symbol: str, limit: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        state = self.markets[symbol]
        bids = sorted(state.bids.items(), key=lambda level: -level[0])[:limit]
        asks = sorted(state.asks.items())[:limit]
        return bids, asks


def aggregate(candles: deque, interval_ms: int, start_ms: int | None, end_ms: int | None, limit: int) -> list[list]:
    """Candles of ``interval_ms`` (a multiple of a minute) from one-minute ones: the last
    ``limit`` that open within [start, end]."""
    out: list[list] = []
    for candle in candles:
        opened = candle[0] // interval_ms * interval_ms
        if (start_ms is not None and opened < start_ms // interval_ms * interval_ms) or \
                (end_ms is not None and opened > end_ms):
            continue
        if out and out[-1][0] == opened:
            merged = out[-1]
            merged[2] = max(merged[2], candle[2])
            merged[3] = min(merged[3], candle[3])
            merged[4] = candle[4]
            for i in range(5, len(candle)):
                merged[i] += candle[i]
        else:
            out.append([opened] + candle[1:])
    if start_ms is not None:
        return out[:limit]
    return out[-limit:]
