"""The core's exceptions, in a module of their own: the compiled modules (mypyc) cannot
define subclasses of built-in exceptions, and every build raises the same classes."""

from schemas.enums import RejectReason


class UnknownCommand(TypeError):
    """The matching engine was given something that is not a ``match.in`` command."""


class ValueTooLarge(OverflowError):
    """A price or size at which the figures would no longer fit the contract's integers."""


class UnknownMarket(LookupError):
    """An event from another service names a market this engine does not list."""


class Refused(Exception):
    """A command cannot be applied; carries the reason and a human detail."""

    def __init__(self, reason: RejectReason, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class MarketError(ValueError):
    """A market specification is invalid; the message names the market and the field."""


class UnitError(ValueError):
    """A decimal price or size does not fit its market's tick or lot.

    ``reason`` is the reject reason a venue answers with (off tick, not a lot multiple).
    """

    def __init__(self, message: str, reason: RejectReason):
        super().__init__(message)
        self.reason = reason
