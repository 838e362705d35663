"""The contract between perpsim's services: messages, topics and codecs."""

from schemas.codec import SCHEMA_VERSION, Codec, SchemaError, codec
from schemas.enums import (
    CloseReason,
    Condition,
    IncomeKind,
    LiquidationStage,
    Liquidity,
    MarginMode,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import *  # noqa: F401,F403  (the messages are the package's API)
from schemas.topics import (
    ACCOUNT_EVENTS,
    DEADLETTER,
    KEYS,
    LIQUIDATION_IN,
    MARKET_DATA,
    MATCH_IN,
    RISK_IN,
    STATE,
    TOPICS,
    topic_partitions,
)

__all__ = [
    "SCHEMA_VERSION",
    "Codec",
    "SchemaError",
    "codec",
    "CloseReason",
    "Condition",
    "IncomeKind",
    "LiquidationStage",
    "Liquidity",
    "MarginMode",
    "OrderType",
    "RejectReason",
    "SelfTradePrevention",
    "Side",
    "TimeInForce",
    "TriggerSource",
    "ACCOUNT_EVENTS",
    "DEADLETTER",
    "KEYS",
    "LIQUIDATION_IN",
    "MARKET_DATA",
    "MATCH_IN",
    "RISK_IN",
    "STATE",
    "TOPICS",
    "topic_partitions",
]
