"""The core engines wired together in one process, synchronously, with no bus.

``CoreExchange.submit(command)`` hands a ``risk.in`` command to the risk engine and routes
everything that follows, as the topics of DESIGN.md would — orders to the market's
matching engine, outcomes and fills back to risk, bucket states and liquidation-order
outcomes to the liquidation engine, its orders and transfers to matching and its outcomes
to risk — until nothing is left to route, and returns every event emitted on the way in
order. It is what the services do over Kafka, minus Kafka: tests, scenarios and the CLI
use it to run the real engines deterministically. Helpers take decimal strings, as a
user would type them.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any

from exchange.accounts import cross_totals, isolated_totals
from exchange.liquidation import LiquidationEngine
from exchange.markets import MICRO, Market, default_markets
from exchange.matching import MatchingEngine
from exchange.oracle import Oracle
from exchange.risk import RiskEngine
from exchange.venues import Venue
from schemas.enums import (
    Condition,
    Liquidity,
    MarginMode,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import (
    BBO,
    AdjustIsolatedMargin,
    CancelOrder,
    Deposit,
    Fill,
    Funding,
    MarginSnapshot,
    MarkPrice,
    Message,
    PlaceOrder,
    PositionTransfer,
    SetLeverage,
    SetMarginMode,
    Withdraw,
)
from schemas.topics import (
    LIQUIDATION,
    LIQUIDATION_IN,
    MATCH_IN,
    MATCHING,
    ORACLE,
    RISK,
    RISK_IN,
    ROUTES,
    destinations,
)

# the engine each topic feeds here (account.events and market.data have readers outside the core)
_ENGINE_OF = {RISK_IN: "risk", MATCH_IN: "match", LIQUIDATION_IN: "liquidation"}
_SERVICE_OF = {"risk": RISK, "match": MATCHING, "liquidation": LIQUIDATION}


def _targets(service: str, event: Any) -> list[str]:
    """The engines that ``event``, emitted by ``service``, goes to (``schemas.topics.ROUTES``),
    each once: in one process a fill to both accounts' partitions is one delivery."""
    targets: list[str] = []
    for route, _ in destinations(service, event):
        engine = _ENGINE_OF.get(route.topic)
        if engine is not None and engine not in targets:
            targets.append(engine)
    return targets


def money(amount: str | int | Decimal) -> int:
    """Micro units of a decimal amount of quote ("2000" -> 2_000_000_000)."""
    value = Decimal(str(amount)) * MICRO
    if value != value.to_integral_value():
        raise ValueError(f"{amount} has more than 6 decimals")
    return int(value)


def usdc(micro: int, exact: bool = True) -> str:
    """Micro units as USDC for a reader: "1,999.25 USDC", to the micro unit when cents
    hide it (unless ``exact`` is False: to the cent, as a display shows it)."""
    if not exact:
        return f"{micro / MICRO:,.2f} USDC"
    cents, rest = divmod(abs(micro), 10_000)
    text = f"{cents // 100:,}.{cents % 100:02d}" + (f"{rest:04d}".rstrip("0") if rest else "")
    return ("-" if micro < 0 else "") + text + " USDC"


class CoreExchange:
    """Risk and matching engines for a set of markets, routed in-process."""

    def __init__(self, markets: dict[str, Market] | None = None, insurance_account: str = "insurance",
                 liquidation_fee_ppm: int = 0, liquidation: bool = True, oracle: Oracle | None = None,
                 venue: Venue | None = None):
        """``liquidation=False`` leaves triggered buckets alone (to test risk by itself);
        with an ``oracle``, ``advance(ts)`` publishes its marks and funding; ``venue``: the
        profile whose ADL ranking and liquidation policy apply (Hyperliquid's by default;
        its markets and mark rule are the caller's to pass, as ``markets`` and ``oracle``)."""
        self.oracle = oracle
        self.markets = markets or default_markets()
        self.risk = RiskEngine(self.markets, insurance_account=insurance_account,
                               liquidation_fee_ppm=liquidation_fee_ppm, adl_ranking=venue.adl if venue else None)
        self.matching = {symbol: MatchingEngine(market) for symbol, market in self.markets.items()}
        self.liquidation = (LiquidationEngine(self.markets, self.risk, insurance_account=insurance_account,
                                              policy=venue.liquidation if venue else None) if liquidation else None)
        self.seq = 0
        self.ts = 0
        self.log: list[Message] = []

    def submit(self, command: Any, to: str = "risk") -> list[Message]:
        """Apply a ``risk.in`` message (or, with ``to="match"``, a ``match.in`` one) and
        everything it causes; returns the events, in order."""
        if to not in ("risk", "match", "liquidation"):
            raise ValueError(f"submit goes to 'risk', 'match' or 'liquidation', not {to!r}")
        emitted: list[Message] = []
        queue: deque[tuple[str, Any]] = deque([(to, command)])
        if to == "risk" and type(command) in ROUTES[ORACLE] and getattr(command, "market", "") in self.matching:
            # the oracle's marks go to matching too (conditional orders watch them)
            queue.extend((where, command) for where in _targets(ORACLE, command) if where != "risk")
        while queue:
            target, message = queue.popleft()
            if target == "risk":
                outputs = self.risk.apply(message)
            elif target == "liquidation":
                if self.liquidation is None:
                    continue
                outputs = self.liquidation.apply(message)
            else:
                outputs = self.matching[message.market].apply(message)
                if self.oracle is not None:
                    for event in outputs:
                        if isinstance(event, (BBO, Fill)):
                            self.oracle.observe(event)
            # a forwarded event (risk passing a liquidation order's outcome on) is not new
            emitted.extend(event for event in outputs if event is not message)
            service = _SERVICE_OF[target]
            queue.extend((where, event) for event in outputs for where in _targets(service, event))
        self.log.extend(emitted)
        return emitted

    # ------------------------------------------------------------ decimal helpers

    def stamp(self) -> tuple[str, int]:
        self.seq += 1
        self.ts += 1
        return "core", self.seq

    def deposit(self, account: str, amount: str | int) -> list[Message]:
        return self.submit(Deposit(*self.stamp(), account, money(amount), self.ts))

    def withdraw(self, account: str, amount: str | int) -> list[Message]:
        return self.submit(Withdraw(*self.stamp(), account, money(amount), self.ts))

    def set_mode(self, account: str, market: str, mode: MarginMode) -> list[Message]:
        return self.submit(SetMarginMode(*self.stamp(), account, market, mode, self.ts))

    def set_leverage(self, account: str, market: str, leverage: int) -> list[Message]:
        return self.submit(SetLeverage(*self.stamp(), account, market, leverage, self.ts))

    def adjust_margin(self, account: str, market: str, amount: str | int) -> list[Message]:
        return self.submit(AdjustIsolatedMargin(*self.stamp(), account, market, money(amount), self.ts))

    def place(self, account: str, market: str, side: Side, size: str, price: str | None = None, *,
              tif: TimeInForce = TimeInForce.GTC, reduce_only: bool = False,
              stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER,
              client_order_id: str = "", condition: Condition = Condition.NONE, trigger: str | None = None,
              source: TriggerSource = TriggerSource.MARK, close_position: bool = False,
              activation: str | None = None, callback_pct: str | None = None) -> list[Message]:
        """A new order; with ``condition``, a conditional one (``trigger`` price, or for a
        trailing stop ``callback_pct`` and an optional ``activation`` price); a
        close-position order takes size "0"."""
        spec = self.markets[market]
        kind = OrderType.MARKET if price is None else OrderType.LIMIT
        ticks = 0 if price is None else spec.price_to_ticks(price)
        stamp = self.stamp()
        callback = 0 if callback_pct is None else int(Decimal(callback_pct) * 10_000)
        return self.submit(PlaceOrder(*stamp, account, market, client_order_id or f"o{stamp[1]}", side, kind,
                                      tif, ticks, spec.size_to_lots(size), reduce_only, stp, self.ts, condition,
                                      0 if trigger is None else spec.price_to_ticks(trigger), source,
                                      close_position, 0 if activation is None else spec.price_to_ticks(activation),
                                      callback))

    def cancel(self, account: str, market: str, order_id: int) -> list[Message]:
        return self.submit(CancelOrder(*self.stamp(), account, market, order_id, self.ts))

    def transfer(self, market: str, buyer: str, seller: str, price: str, size: str,
                 liquidity: Liquidity) -> list[Message]:
        """Move a position outside the book (backstop, ADL) through matching."""
        spec = self.markets[market]
        return self.submit(PositionTransfer(*self.stamp(), market, buyer, seller, spec.price_to_ticks(price),
                                            spec.size_to_lots(size), liquidity, self.ts), to="match")

    def mark(self, market: str, price: str, index: str | None = None) -> list[Message]:
        spec = self.markets[market]
        return self.submit(MarkPrice(*self.stamp(), market, spec.price_to_ticks(index or price),
                                     spec.price_to_ticks(price), self.ts))

    def funding(self, market: str, rate_ppb: int, price: str) -> list[Message]:
        spec = self.markets[market]
        return self.submit(Funding(*self.stamp(), market, rate_ppb, spec.price_to_ticks(price), self.ts))

    def advance(self, ts: int) -> list[Message]:
        """Move the clock to ``ts`` (ns): the oracle's marks and funding, and what they cause."""
        if self.oracle is None:
            raise RuntimeError("this exchange has no oracle; pass oracle=Oracle(...)")
        self.ts = max(self.ts, ts)
        emitted: list[Message] = []
        for event in self.oracle.tick(ts):
            emitted.append(event)
            self.log.append(event)
            emitted.extend(self.submit(event))
        return emitted

    def snapshot(self, account: str) -> MarginSnapshot:
        return self.risk.snapshot(account, self.ts)

    def equity(self, account_id: str) -> int:
        """Cross account value plus every isolated bucket's equity, at the current marks."""
        account = self.risk.accounts.get(account_id)
        if account is None:
            return 0
        equity = cross_totals(account, self.risk.marks)[0]
        for position in account.positions.values():
            if position.size and position.mode is MarginMode.ISOLATED:
                equity += isolated_totals(position, self.risk.marks)[0]
        return equity
