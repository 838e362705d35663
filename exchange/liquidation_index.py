"""Which buckets a mark update must look at: liquidation detection in time proportional
to the buckets near liquidation, not to all of them.

Two kinds of entry, both kept by the risk engine as accounts change:
- **Price keys.** Isolated positions and one-position cross buckets sit in a per-market,
  per-mode, per-side ``SortedList`` keyed by their exact liquidation price (an integer key
  such that for an integer mark ``P`` a long is liquidatable iff ``P < key``, a short iff
  ``P > key``; ``exchange.accounts.index_key``). A mark update reads only the keys it
  crossed.
- **Movement budgets.** A cross bucket with positions in several markets cannot be keyed
  by one price. When it is (re)keyed, ``S = equity − MM − #positions`` is its slack and
  ``K = Σ |s_X| · v_X · (1 + highest mmr of X)`` the most value one tick of adverse move
  in each market can consume, so while no market has travelled (Σ |Δmark| since the
  keying) more than ``⌊S/K⌋`` ticks, it cannot be under maintenance. Each market keeps
  the travel of its mark and an index of ``travel at keying + ⌊S/K⌋``; a mark update pops
  only the buckets whose budget it exhausted.

Ordering invariant: ``crossed`` lists candidates in a fixed order (cross then isolated
price keys, longs then shorts, then exhausted budgets, each in key order), so the risk
engine checks them, and numbers what it emits, identically on every replay.
"""

from __future__ import annotations

from collections.abc import Iterable

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from exchange.accounts import CROSS, ISOLATED, Position, ceil_div
from schemas.enums import MarginMode


class LiquidationIndex:
    def __init__(self, symbols: Iterable[str]):
        # (market, mode, sign) -> (price key, PositionKey)
        self._prices: dict[tuple[str, MarginMode, int], SortedList] = {}
        self._budgets: dict[str, SortedList] = {symbol: SortedList() for symbol in symbols}  # (travel, account)
        self._travel: dict[str, int] = {symbol: 0 for symbol in self._budgets}
        self._budget_entries: dict[str, list[tuple[str, int]]] = {}  # account -> (market, threshold)

    # ------------------------------------------------------------------ price keys

    def key_price(self, position: Position, key: int) -> None:
        """Key ``position`` by its liquidation price ``key`` (it must not be keyed now)."""
        index_id = (position.market.symbol, position.mode, position.sign)
        index = self._prices.get(index_id)
        if index is None:
            index = self._prices[index_id] = SortedList()
        item = (key, position.key)
        index.add(item)
        position.index_entry = (index, item)

    @staticmethod
    def unkey_price(position: Position) -> None:
        entry = position.index_entry
        if entry is not None:
            entry[0].remove(entry[1])
            position.index_entry = None

    # ------------------------------------------------------------- movement budgets

    def key_budget(self, account_id: str, positions: list[Position], slack: int) -> None:
        """Key a multi-market cross bucket (its ``positions``) by its movement budget, given
        its ``slack`` ``equity − MM − #positions`` (not negative)."""
        # |s|·v·(1 + mmr_max) per tick, rounded up (a larger sensitivity is a smaller budget)
        sensitivity = 0
        for p in positions:
            mmr = p.market.tiers[-1].mmr
            sensitivity += ceil_div(abs(p.size) * p.market.value_per_tick_lot * (mmr.denominator + mmr.numerator),
                                    mmr.denominator)
        allowed = slack // sensitivity
        self._add_budget(account_id, [(p.market.symbol, self._travel[p.market.symbol] + allowed) for p in positions])

    def _add_budget(self, account_id: str, thresholds: list[tuple[str, int]]) -> None:
        for symbol, threshold in thresholds:
            self._budgets[symbol].add((threshold, account_id))
        self._budget_entries[account_id] = thresholds

    def unkey_budget(self, account_id: str) -> None:
        for symbol, threshold in self._budget_entries.pop(account_id, ()):
            self._budgets[symbol].remove((threshold, account_id))

    # ------------------------------------------------------------------ snapshots

    def export(self) -> tuple[dict[str, int], list[tuple[str, list[tuple[str, int]]]]]:
        """The marks' travel and each budget's thresholds (price keys are not kept: they
        are a function of the positions, re-keyed on restore)."""
        return dict(self._travel), [(account, list(entries)) for account, entries in self._budget_entries.items()]

    def load(self, travel: dict[str, int], budgets: list[tuple[str, list[tuple[str, int]]]]) -> None:
        self._travel.update(travel)
        for account, thresholds in budgets:
            self._add_budget(account, [(entry[0], entry[1]) for entry in thresholds])

    # ----------------------------------------------------------------- mark moves

    def crossed(self, symbol: str, mark: int, previous: int | None) -> list[str]:
        """The accounts a move of ``symbol``'s mark from ``previous`` to ``mark`` may have
        put under maintenance (possibly repeated; in the order of the invariant above)."""
        candidates: list[str] = []
        for mode in (CROSS, ISOLATED):
            longs = self._prices.get((symbol, mode, 1))
            if longs:
                candidates.extend(held.account for _, held in longs.irange((mark + 1,)))
            shorts = self._prices.get((symbol, mode, -1))
            if shorts:
                candidates.extend(held.account for _, held in shorts.irange(maximum=(mark,)))
        if previous is not None:
            self._travel[symbol] += abs(mark - previous)
            # budgets strictly below the travel are exhausted
            candidates.extend(account for _, account in self._budgets[symbol].irange(maximum=(self._travel[symbol],)))
        return candidates
