"""Binance's request parameters and errors: strict decimal and integer parsing, and the
``{"code", "msg"}`` error every endpoint answers with."""

from __future__ import annotations

import re


class BinanceError(Exception):
    """An error a Binance client understands: HTTP status, code and message."""

    def __init__(self, code: int, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


BATCH_LIMIT = 5  # orders per batchOrders request, as Binance


DECIMAL = re.compile(r"^[0-9]{1,20}(\.[0-9]{1,20})?$")  # what Binance accepts for a decimal parameter
INTEGER = re.compile(r"^[0-9]{1,20}$")
RECV_WINDOW_MAX_MS = 60_000


def decimal(params, name: str) -> str | None:
    """A decimal parameter as sent (None if absent), or Binance's -1100 naming it: no
    sign, exponent, NaN or infinity, at most 20 digits either side of the point."""
    value = params.get(name)
    if value is None:
        return None
    if not DECIMAL.match(value):
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                  "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")
    return value


def number(params, name: str, default: int | None = None, low: int | None = None, high: int | None = None) -> int | None:
    """An integer parameter, or Binance's -1100 naming it."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if not INTEGER.match(value):
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    result = int(value)
    if low is not None:
        result = max(low, result)
    if high is not None:
        result = min(high, result)
    return result


CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")  # Binance's rule for newClientOrderId and clientAlgoId


def client_id_param(params, *names: str) -> str | None:
    """The first of ``names`` sent (None if none), or Binance's -1100 if it breaks Binance's
    rule: 1 to 36 of letters, digits and ``.:/_-``."""
    for name in names:
        value = params.get(name)
        if value:
            if not CLIENT_ID.match(value):
                raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                          "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
            return value
    return None
