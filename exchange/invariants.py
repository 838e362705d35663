"""The invariants that hold after every step (DESIGN.md), as one checking function.

Money is conserved to the unit:

    deposits − withdrawals = Σ cross balances (insurance fund included) + Σ isolated margins
                             + fees collected + funding rounding kept
                             − Σ over positions of sign · entry_value

The last term is the open positions' claim on each other: every fill moves value between
two accounts, and what one side has realized the other still carries as unrealized PnL.
Valued at any common price it equals Σ uPnL (because Σ long = Σ short), so it nets to zero
once every position is closed; funding nets to zero up to the rounding the exchange keeps.

Per market, the total long size equals the total short size, and matching and risk agree
on every position and on which conditional orders wait for their trigger.
"""

from __future__ import annotations

from collections.abc import Iterable

from exchange.matching import MatchingEngine
from exchange.risk import RiskEngine
from schemas.keys import PositionKey


class InvariantViolation(AssertionError):
    """An invariant does not hold; the message lists every one that failed."""


def violations(risk: RiskEngine | Iterable[RiskEngine], matching: Iterable[MatchingEngine] = ()) -> list[str]:
    """Every invariant that does not hold, as sentences; empty when all hold.

    ``risk`` may be several partitions: money is conserved across them together.
    """
    engines = [risk] if isinstance(risk, RiskEngine) else list(risk)
    problems = []
    inflow = sum(engine.deposits - engine.withdrawals for engine in engines)
    held = 0
    sizes: dict[str, int] = {}
    positions: dict[PositionKey, int] = {}
    for engine in engines:
        held += engine.fees + engine.funding_net
        for account in engine.accounts.values():
            held += account.balance
            for position in account.positions.values():
                held += position.margin - position.sign * position.entry_value
                sizes[position.market.symbol] = sizes.get(position.market.symbol, 0) + position.size
                if position.size:
                    positions[position.key] = position.size
                if position.size == 0 and (position.entry_value or position.margin):
                    problems.append(f"{account.account_id} {position.market.symbol}: flat position keeps "
                                    f"entry value {position.entry_value} and margin {position.margin}")
            reserved = sum(order.reserved for order in account.orders.values())
            if reserved != account.reserved:
                problems.append(f"{account.account_id}: reservations add up to {reserved}, "
                                f"account says {account.reserved}")
    if inflow != held:
        problems.append(f"money is not conserved: deposits − withdrawals = {inflow}, held = {held} "
                        f"(difference {held - inflow})")
    for symbol, total in sizes.items():
        if total:
            problems.append(f"{symbol}: long and short sizes differ by {total} lots")
    waiting = {(order.market, order.order_id) for engine in engines for account in engine.accounts.values()
               for order in account.orders.values() if order.conditional}
    for engine in matching:
        symbol = engine.market.symbol
        held_here = {(symbol, order_id) for order_id in engine.triggers.orders}
        for market, order_id in sorted(held_here - waiting):
            problems.append(f"{market}: matching holds conditional order {order_id}, risk does not know it waits")
        for market, order_id in sorted(o for o in waiting - held_here if o[0] == symbol):
            problems.append(f"{market}: risk thinks conditional order {order_id} waits, matching does not hold it")
        for key, size in engine.positions.items():
            if positions.get(key, 0) != size:
                problems.append(f"{symbol} {key.account}: matching holds {size}, risk holds {positions.get(key, 0)}")
        for key, size in positions.items():
            if key.market == symbol and engine.positions.get(key, 0) != size:
                problems.append(f"{symbol} {key.account}: risk holds {size}, matching holds "
                                f"{engine.positions.get(key, 0)}")
    return problems


def check(risk: RiskEngine | Iterable[RiskEngine], matching: Iterable[MatchingEngine] = ()) -> None:
    """Raise ``InvariantViolation`` listing every invariant that does not hold."""
    problems = violations(risk, matching)
    if problems:
        raise InvariantViolation("; ".join(problems))
