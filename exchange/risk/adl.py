"""Auto-deleveraging: which positions ADL closes first, by the venue's ranking.

A ranking is a policy object the venue profile chooses (``exchange.venues``), in the manner
of nautilus_trader's fee and fill models: ``score`` orders the candidates, higher first.

- ``HyperliquidRanking`` (the default): ``pnl_factor · notional / bucket equity``, with the
  PnL factor ``P / entry`` for longs and ``entry / P`` for shorts.
- ``BinanceRanking`` ("What is Auto-Deleveraging"): ``PnL% · effective leverage`` in profit,
  ``PnL% / effective leverage`` in loss, with the effective leverage ``notional / bucket
  equity``.

Ties go to the larger notional, then to the account id. Buckets with no equity or in
liquidation, and the insurance fund, are not candidates.
"""

from __future__ import annotations

from fractions import Fraction

from exchange.accounts import ISOLATED, PositionKey, cross_totals
from exchange.risk.partition import Partition


class AdlRanking:
    """How a venue ranks the positions on the profitable side for ADL."""

    def __init__(self, name: str) -> None:
        self.name = name

    def score(self, side: int, notional: int, entry_notional: int, equity: int) -> Fraction:
        """The rank of a position on ``side`` (+1 long, −1 short) worth ``notional`` at the
        mark, ``entry_notional`` at entry, in a bucket with ``equity`` (> 0): higher goes first."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class HyperliquidRanking(AdlRanking):
    def __init__(self) -> None:
        super().__init__("hyperliquid")

    def score(self, side: int, notional: int, entry_notional: int, equity: int) -> Fraction:
        factor = Fraction(notional, entry_notional) if side > 0 else Fraction(entry_notional, notional)
        return factor * Fraction(notional, equity)


class BinanceRanking(AdlRanking):
    def __init__(self) -> None:
        super().__init__("binance")

    def score(self, side: int, notional: int, entry_notional: int, equity: int) -> Fraction:
        leverage = Fraction(notional, equity)
        pnl = Fraction(side * (notional - entry_notional), entry_notional)
        return pnl * leverage if pnl > 0 else pnl / leverage


class Deleveraging:
    """The ADL candidates of one risk partition."""

    def __init__(self, p: Partition, ranking: AdlRanking) -> None:
        self.p = p
        self.ranking = ranking

    def candidates(self, market: str, side: int) -> list[tuple[str, int]]:
        """Positions on ``side`` (+1 long, −1 short) of ``market`` that ADL may close, as
        (account, size), best ranked first, then larger notional, then account id."""
        p = self.p
        ranked = []
        for account_id in p.holders.get(market, ()):
            account = p.accounts[account_id]
            position = account.positions[PositionKey(account_id, market)]
            if position.sign != side or account_id == p.insurance_account:
                continue
            if position.bucket() in account.liquidating:
                continue
            price = p.marks.price(position)
            if position.mode is ISOLATED:
                equity = position.margin + position.unrealized_pnl(price)
            else:
                equity = cross_totals(account, p.marks)[0]
            if equity <= 0 or price <= 0:
                continue
            notional = position.notional(price)
            score = self.ranking.score(side, notional, position.entry_value, equity)
            ranked.append((-score, -notional, account_id, abs(position.size)))
        ranked.sort()
        return [(account_id, size) for _, _, account_id, size in ranked]
