"""The risk service: consumes ``risk.in``, one ``RiskEngine`` per partition (``risk.p<N>``).

Outputs (``schemas.topics.ROUTES``): accepted orders, cancels and amends to ``match.in`` (keyed by market); bucket
states and the outcomes of liquidation orders to ``liquidation.in`` (keyed by account);
answers, margin snapshots and collateral transfers to ``account.events``. Margin
snapshots are coalesced: one per changed account per processed batch (``RiskEngine.flush``).
"""

from __future__ import annotations

from exchange.markets import Market
from exchange.risk import AdlRanking, RiskEngine
from schemas import RISK_IN
from schemas.topics import RISK, ROUTES
from services.runtime.bus import partition_for
from services.runtime.runner import ServiceSpec


def spec(markets: dict[str, Market], insurance_account: str = "insurance", liquidation_fee_ppm: int = 0,
         partitions: int = 1, adl_ranking: AdlRanking | None = None) -> ServiceSpec:
    """``partitions``: of ``risk.in``, to know which partition holds the insurance fund;
    ``adl_ranking``: the venue's (``exchange.venues``)."""
    fund_partition = partition_for(insurance_account, partitions)

    def make(partition: int) -> RiskEngine:
        return RiskEngine(markets, producer=f"risk.p{partition}", partition=partition,
                          insurance_account=insurance_account, liquidation_fee_ppm=liquidation_fee_ppm,
                          defer_snapshots=True, holds_fund=partition == fund_partition, adl_ranking=adl_ranking)

    return ServiceSpec("risk", RISK_IN, make, ROUTES[RISK], RISK)
