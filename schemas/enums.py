"""Small enums of the contract, each with explicit wire codes.

The codes are part of the wire format: never renumber a member, only append new ones.
"""

from __future__ import annotations

import enum


class Side(enum.IntEnum):
    """Order or position side; the value is the sign of a signed size."""

    BUY = 1
    SELL = -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(enum.IntEnum):
    LIMIT = 1
    MARKET = 2


class Condition(enum.IntEnum):
    """What makes a conditional order fire (docs/matching.md, "Conditional orders").

    STOP fires when the price reaches the trigger moving against the order's side's
    position (a BUY at or above it, a SELL at or below); TAKE_PROFIT the other way (a BUY
    at or below, a SELL at or above); TRAILING_STOP when the price has come back by the
    callback rate from its best since activation (a SELL from the highest, a BUY from the
    lowest)."""

    NONE = 0  # a plain order
    STOP = 1
    TAKE_PROFIT = 2
    TRAILING_STOP = 3


class TriggerSource(enum.IntEnum):
    """Which price a conditional order watches (Binance's ``workingType``)."""

    MARK = 1  # the oracle's mark price (MARK_PRICE)
    LAST = 2  # the market's last trade price (CONTRACT_PRICE)


class TimeInForce(enum.IntEnum):
    GTC = 1  # rests until filled or cancelled
    IOC = 2  # fills what it can now, the rest expires
    FOK = 3  # fills completely now or not at all
    POST_ONLY = 4  # rests only; rejected if it would take liquidity


class SelfTradePrevention(enum.IntEnum):
    """What happens when an order would match another order of the same account.

    The taker's setting decides. NONE lets the two orders trade with each other.
    """

    NONE = 0
    CANCEL_TAKER = 1
    CANCEL_MAKER = 2
    CANCEL_BOTH = 3


class MarginMode(enum.IntEnum):
    CROSS = 1
    ISOLATED = 2


class PositionSide(enum.IntEnum):
    """Which of an account's positions in a market (``exchange.accounts.PositionKey``).
    ``BOTH``: one-way mode, one signed position per market, the only mode today; hedge
    mode would add a long and a short side (Binance's ``positionSide``)."""

    BOTH = 0


class RejectReason(enum.IntEnum):
    """Why a command was refused. Every refusal names one of these."""

    # validation (matching and risk)
    UNKNOWN_MARKET = 1
    UNKNOWN_ORDER = 2
    NOT_ORDER_OWNER = 3
    OFF_TICK_PRICE = 4
    SIZE_NOT_LOT_MULTIPLE = 5
    BELOW_MIN_SIZE = 6
    INVALID_PRICE = 7
    INVALID_SIZE = 8
    DUPLICATE_ORDER_ID = 9
    INVALID_CLIENT_ORDER_ID = 10  # longer than the contract carries (schemas.events.MAX_CLIENT_ORDER_ID)
    # execution (matching)
    WOULD_CROSS = 20  # post-only order would take liquidity
    OUTSIDE_PRICE_BAND = 21
    REDUCE_ONLY_WOULD_INCREASE = 22
    FOK_NOT_FILLABLE = 23
    NO_LIQUIDITY = 24
    WOULD_TRIGGER_IMMEDIATELY = 25  # a conditional order whose trigger is already reached
    INVALID_TRIGGER = 26  # trigger, activation price or callback rate missing or out of range
    NOT_AMENDABLE = 27  # conditional orders are cancelled and placed again, not amended
    # risk
    UNKNOWN_ACCOUNT = 40
    INSUFFICIENT_MARGIN = 41
    WITHDRAW_ABOVE_WITHDRAWABLE = 42
    MODE_CHANGE_WITH_POSITION = 43
    MODE_CHANGE_WITH_OPEN_ORDERS = 44
    LEVERAGE_OUT_OF_RANGE = 45
    LEVERAGE_BELOW_POSITION_MARGIN = 46
    MARGIN_MODE_UNCHANGED = 47
    NOT_ISOLATED = 48
    REMOVE_MARGIN_ABOVE_ALLOWED = 49
    STRICT_ISOLATED = 50
    INVALID_AMOUNT = 51
    ACCOUNT_IN_LIQUIDATION = 52
    NO_POSITION = 53


class CloseReason(enum.IntEnum):
    """Why an order stopped being live."""

    FILLED = 1
    CANCELED = 2  # by its owner
    EXPIRED = 3  # IOC/FOK/market remainder that could not fill now
    SELF_TRADE = 4  # cancelled by self-trade prevention
    REDUCE_ONLY = 5  # a resting reduce-only order whose position is gone
    LIQUIDATION = 6  # cancelled because its bucket is being liquidated
    POSITION_CLOSED = 7  # a close-position conditional order whose position is gone


class Liquidity(enum.IntEnum):
    """How a fill came about."""

    BOOK = 1  # taker against a resting maker
    BACKSTOP = 2  # insurance fund took over the position at the mark price
    ADL = 3  # auto-deleveraged against a bankrupt position at its bankruptcy price


class LiquidationStage(enum.IntEnum):
    TRIGGERED = 1
    PARTIAL = 2
    FULL = 3
    BACKSTOP = 4
    ADL = 5
    RECOVERED = 6  # the bucket was healthy again before it was closed out


class IncomeKind(enum.IntEnum):
    """Why an account's wallet (cross balance plus isolated margins) moved; Binance's
    income types. The amounts of every kind add up to the wallet."""

    TRANSFER = 1  # deposit (+) or withdrawal (−)
    REALIZED_PNL = 2  # closing part of a position
    COMMISSION = 3  # trading fee (−), or maker rebate (+)
    FUNDING_FEE = 4  # funding paid (−) or received (+)
    INSURANCE_CLEAR = 5  # liquidation fee and collateral to the fund (−), bad debt the fund covered (+)
