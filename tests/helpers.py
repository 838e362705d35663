"""Small factories for tests: commands with readable defaults, and event filters."""

from __future__ import annotations

import itertools
from typing import Any

from schemas.enums import OrderType, SelfTradePrevention, Side, TimeInForce
from schemas.events import (
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    NewOrder,
    PositionTransfer,
)

_seq = itertools.count(1)

BUY = Side.BUY
SELL = Side.SELL


def order(
    order_id: int,
    account: str,
    side: Side,
    size: int,
    price: int = 0,
    *,
    market: str = "BTC-PERP",
    tif: TimeInForce = TimeInForce.GTC,
    order_type: OrderType | None = None,
    reduce_only: bool = False,
    stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER,
    reference_price: int = 0,
    liquidation: bool = False,
    ts: int = 0,
) -> NewOrder:
    if order_type is None:
        order_type = OrderType.MARKET if price == 0 else OrderType.LIMIT
    return NewOrder(
        "test", next(_seq), account, market, order_id, f"c{order_id}", side, order_type, tif,
        price, size, reduce_only, stp, ts, reference_price, liquidation,
    )


def cancel(order_id: int, account: str, market: str = "BTC-PERP") -> CancelOrder:
    return CancelOrder("test", next(_seq), account, market, order_id)


def amend(order_id: int, account: str, price: int, size: int, market: str = "BTC-PERP",
          reference_price: int = 0) -> AmendOrder:
    return AmendOrder("test", next(_seq), account, market, order_id, price, size, 0, reference_price)


def cancel_all(account: str, market: str = "BTC-PERP", **kwargs: Any) -> CancelAllOrders:
    return CancelAllOrders("test", next(_seq), account, market, **kwargs)


def transfer(buyer: str, seller: str, price: int, size: int, liquidity: Any,
             market: str = "BTC-PERP") -> PositionTransfer:
    return PositionTransfer("test", next(_seq), market, buyer, seller, price, size, liquidity)


def of(events: list, kind: type) -> list:
    """The events of one type, in order."""
    return [event for event in events if type(event) is kind]


def one(events: list, kind: type) -> Any:
    found = of(events, kind)
    assert len(found) == 1, f"expected one {kind.__name__}, got {found}"
    return found[0]
