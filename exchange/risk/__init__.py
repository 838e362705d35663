"""Risk: margin, positions and liquidation detection for one partition of accounts.

``RiskEngine`` (``engine``) is the entry point; it is a ``Partition`` (``partition``, the
state every part shares) composed with its parts along the seams of MARGIN.md:

- ``commands``: deposits, withdrawals, margin mode, leverage, isolated margin;
- ``orders``: admission of orders and conditional orders, reservations and their release;
- ``settlement``: fills, fees, funding, the insurance fund and bankrupt buckets;
- ``detection``: which buckets a mark or a change put under maintenance, and their states
  for the liquidation engine;
- ``adl``: the ADL candidates, ranked by the venue's policy (``AdlRanking``).

All of them are in the compiled group (``exchange.COMPILED_MODULES``); this file is not.
"""

from exchange.risk.adl import AdlRanking, BinanceRanking, HyperliquidRanking
from exchange.risk.engine import ANSWERED, RiskEngine
from exchange.risk.partition import MAX_BALANCE, MAX_NOTIONAL

__all__ = ["ANSWERED", "MAX_BALANCE", "MAX_NOTIONAL", "AdlRanking", "BinanceRanking", "HyperliquidRanking",
           "RiskEngine"]
