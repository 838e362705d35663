"""Market specifications: tick, lot, leverage, maintenance tiers, fees, price band.

Fixed point: a price is an integer number of ticks, a size an integer number of lots, and
money integer micro units (1e-6) of the quote asset. ``tick_size · lot_size · 10^6`` must
be a whole number (``value_per_tick_lot``), so the notional of any fill, ``price · size ·
value_per_tick_lot``, is exact.

Maintenance tiers (MARGIN.md, Markets): each tier starts at a notional ``floor`` and has
its own ``max_leverage`` and maintenance rate, ``MM = notional · mmr − deduction``. A tier
is ``[floor, max_leverage]`` (Hyperliquid's rule: ``mmr = 1 / (2 · max_leverage)``, the
deduction derived so that MM is continuous in notional), ``[floor, max_leverage, mmr]``
(the deduction derived likewise) or ``[floor, max_leverage, mmr, deduction]`` as a venue
publishes it (Binance's "maintenance amount"), which must keep MM continuous at the floor.
"""

from __future__ import annotations

import math
import tomllib
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

from exchange.errors import MarketError, UnitError
from schemas.enums import RejectReason

MICRO = 1_000_000  # micro units of quote per unit
PPM = 1_000_000


def strayed(reference: int, index: int, band_ppm: int) -> bool:
    """Whether the mark ``reference`` is more than a band from the ``index`` (it sits at its
    clamp): then the index's band counts too (docs/matching.md, the price band)."""
    return index > 0 and abs(reference - index) * PPM > index * band_ppm


def protection_price(reference: int, index: int, band_ppm: int, buy: bool) -> int:
    """The worst price a market order may trade at: the mark moved by the band, and the index
    moved by it where the mark ``strayed`` further (matching trades to it, risk reserves at it)."""
    band = reference * band_ppm // PPM
    limit = reference + band if buy else max(1, reference - band)
    if strayed(reference, index, band_ppm):
        band = index * band_ppm // PPM
        limit = max(limit, index + band) if buy else min(limit, max(1, index - band))
    return limit


def _places(step: Decimal) -> int:
    """Decimal places of a (finite, checked) tick or lot size."""
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _decimal(symbol: str, field: str, value: Any) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise MarketError(f"{symbol}: {field} must be a decimal number, got {value!r}") from None
    if not number.is_finite() or number <= 0:
        raise MarketError(f"{symbol}: {field} must be positive, got {value!r}")
    return number


class Tier:
    """A maintenance tier: from ``floor`` (micro units of notional) up, at most ``max_leverage``."""

    __slots__ = ("floor", "max_leverage", "mmr", "deduction", "_scale", "_rate", "_minus")

    def __init__(self, floor: int, max_leverage: int, mmr: Fraction, deduction: Fraction):
        self.floor = floor
        self.max_leverage = max_leverage
        self.mmr = mmr
        self.deduction = deduction
        # MM = ceil(notional · mmr − deduction) as integers over one denominator (hot path)
        self._scale = math.lcm(mmr.denominator, deduction.denominator)
        self._rate = mmr.numerator * (self._scale // mmr.denominator)
        self._minus = deduction.numerator * (self._scale // deduction.denominator)

    def maintenance_margin(self, notional: int) -> int:
        return -((self._minus - notional * self._rate) // self._scale)

    def __repr__(self) -> str:
        return f"Tier(floor={self.floor}, max_leverage={self.max_leverage}, mmr={self.mmr})"


class Market:
    """One perpetual market, validated on construction. Immutable by convention."""

    __slots__ = (
        "symbol",
        "base",
        "quote",
        "tick_size",
        "lot_size",
        "min_size",
        "max_leverage",
        "tiers",
        "maker_fee_ppm",
        "taker_fee_ppm",
        "price_band_ppm",
        "limit_band_ppm",
        "strict_isolated",
        "value_per_tick_lot",
        "_price_places",
        "_size_places",
    )

    # The arguments are Any because they are checked here, with a MarketError naming the
    # field (a spec comes from TOML or a user), rather than refused by the compiled
    # constructor's own type check with a bare TypeError.
    def __init__(
        self,
        symbol: Any,
        tick_size: Any,
        lot_size: Any,
        max_leverage: Any,
        *,
        base: Any = None,
        quote: Any = "USD",
        min_size: Any = 1,
        tiers: Any = (),
        maker_fee_ppm: Any = 200,
        taker_fee_ppm: Any = 500,
        price_band_ppm: Any = 50_000,
        limit_band_ppm: Any = None,
        strict_isolated: Any = False,
    ):
        if not isinstance(symbol, str) or not symbol or not symbol.replace("-", "").isalnum():
            raise MarketError(f"market symbol must be letters, digits and '-', got {symbol!r}")
        self.symbol: str = symbol
        self.base: str = str(base or symbol.split("-")[0])
        self.quote: str = str(quote)
        tick = _decimal(symbol, "tick_size", tick_size)
        lot = _decimal(symbol, "lot_size", lot_size)
        value = tick * lot * MICRO
        if value != value.to_integral_value():
            raise MarketError(
                f"{symbol}: tick_size · lot_size · 10^6 must be a whole number of micro units "
                f"(got {tick} · {lot} · 10^6 = {value}); use a coarser tick or lot"
            )
        self.tick_size = tick
        self.lot_size = lot
        self.value_per_tick_lot = int(value)
        self._price_places = _places(tick)
        self._size_places = _places(lot)
        self.min_size = _int(symbol, "min_size", min_size, low=1)
        self.max_leverage = _int(symbol, "max_leverage", max_leverage, low=1, high=1000)
        self.maker_fee_ppm = _int(symbol, "maker_fee_ppm", maker_fee_ppm, low=-PPM // 100, high=PPM // 10)
        self.taker_fee_ppm = _int(symbol, "taker_fee_ppm", taker_fee_ppm, low=0, high=PPM // 10)
        if self.maker_fee_ppm + self.taker_fee_ppm < 0:
            raise MarketError(f"{symbol}: a maker rebate larger than the taker fee pays out money")
        # how far a market order may trade from the mark (its protection price), and how far
        # from the mark a limit price may be (the price band itself): the same on Binance
        # (PERCENT_PRICE), apart on Hyperliquid (80% for a limit price, docs/matching.md)
        self.price_band_ppm = _int(symbol, "price_band_ppm", price_band_ppm, low=1, high=PPM - 1)
        self.limit_band_ppm = self.price_band_ppm if limit_band_ppm is None else \
            _int(symbol, "limit_band_ppm", limit_band_ppm, low=1, high=PPM - 1)
        self.strict_isolated = bool(strict_isolated)
        self.tiers = _build_tiers(symbol, self.max_leverage, list(tiers))

    # ------------------------------------------------------------------ conversions

    def price_to_ticks(self, price: str | Decimal | int) -> int:
        """Ticks of a decimal price; ``UnitError`` if it is not a whole number of ticks."""
        return _to_units(self.symbol, "price", price, self.tick_size, RejectReason.OFF_TICK_PRICE)

    def size_to_lots(self, size: str | Decimal | int) -> int:
        """Lots of a decimal size; ``UnitError`` if it is not a whole number of lots."""
        return _to_units(self.symbol, "size", size, self.lot_size, RejectReason.SIZE_NOT_LOT_MULTIPLE)

    def format_price(self, ticks: int) -> str:
        return f"{ticks * self.tick_size:.{self._price_places}f}"

    def format_size(self, lots: int) -> str:
        return f"{lots * self.lot_size:.{self._size_places}f}"

    def notional(self, price: int, size: int) -> int:
        """Exact value of ``size`` lots at ``price`` ticks, in micro units (sign of size)."""
        return price * size * self.value_per_tick_lot

    # ---------------------------------------------------------------------- margins

    def tier(self, notional: int) -> Tier:
        """The maintenance tier a position of this notional (micro units) falls in."""
        notional = abs(notional)
        chosen = self.tiers[0]
        for tier in self.tiers:
            if notional >= tier.floor:
                chosen = tier
            else:
                break
        return chosen

    def maintenance_margin(self, notional: int) -> int:
        """``notional · mmr(tier) − deduction(tier)``, rounded up (the trader puts it up)."""
        notional = abs(notional)
        return self.tier(notional).maintenance_margin(notional)

    @property
    def mmr(self) -> Fraction:
        """Maintenance margin rate of the first tier: ``1 / (2 · max_leverage)``."""
        return self.tiers[0].mmr

    def __repr__(self) -> str:
        return (
            f"Market({self.symbol}, tick={self.tick_size}, lot={self.lot_size}, "
            f"max_leverage={self.max_leverage})"
        )


def trading_fee(value: int, fee_ppm: int) -> int:
    """The fee on a fill of ``value`` micro units: charged rounded up, a rebate (negative
    rate) paid rounded down."""
    if fee_ppm >= 0:
        return -(-value * fee_ppm // PPM)
    return -(value * -fee_ppm // PPM)


def _int(symbol: str, field: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MarketError(f"{symbol}: {field} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise MarketError(f"{symbol}: {field} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise MarketError(f"{symbol}: {field} must be at most {high}, got {value}")
    return value


def _to_units(
    symbol: str, what: str, value: str | Decimal | int, step: Decimal, reason: RejectReason
) -> int:
    invalid = RejectReason.INVALID_PRICE if what == "price" else RejectReason.INVALID_SIZE
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise UnitError(f"{symbol}: {what} {value!r} is not a decimal number", invalid) from None
    if not number.is_finite():
        raise UnitError(f"{symbol}: {what} {value!r} is not finite", invalid)
    units = number / step
    whole = units.to_integral_value(rounding=ROUND_DOWN)
    if units != whole:
        raise UnitError(f"{symbol}: {what} {value} is not a multiple of {step}", reason)
    return int(whole)


def _rate(symbol: str, field: str, value: Any) -> Fraction:
    try:
        rate = Fraction(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        raise MarketError(f"{symbol}: {field} must be a decimal rate such as \"0.004\", got {value!r}") from None
    if not 0 < rate < 1:
        raise MarketError(f"{symbol}: {field} must be between 0 and 1, got {value}")
    return rate


def _build_tiers(symbol: str, max_leverage: int, raw: list[tuple]) -> tuple[Tier, ...]:
    """Tiers from [floor in whole quote units, max leverage, (mmr, (deduction in whole
    quote units))]; the first starts at 0."""
    if not raw:
        raw = [(0, max_leverage)]
    tiers: list[Tier] = []
    previous_floor = -1
    previous_leverage = None
    deduction = Fraction(0)
    previous_mmr = Fraction(0)
    for index, entry in enumerate(raw):
        if not (isinstance(entry, (tuple, list)) and 2 <= len(entry) <= 4):
            raise MarketError(f"{symbol}: tier {index} must be [floor, max_leverage] or [floor, max_leverage, "
                              f"maintenance_rate] or [floor, max_leverage, maintenance_rate, maintenance_amount], "
                              f"got {entry!r}")
        floor_units = _int(symbol, f"tier {index} floor", entry[0], low=0)
        leverage = _int(symbol, f"tier {index} max_leverage", entry[1], low=1)
        if index == 0 and floor_units != 0:
            raise MarketError(f"{symbol}: the first tier must start at notional 0, got {floor_units}")
        if index == 0 and leverage != max_leverage:
            raise MarketError(
                f"{symbol}: the first tier's max_leverage ({leverage}) must equal the "
                f"market's max_leverage ({max_leverage})"
            )
        if floor_units <= previous_floor:
            raise MarketError(f"{symbol}: tier floors must increase, got {floor_units} after {previous_floor}")
        if previous_leverage is not None and leverage >= previous_leverage:
            raise MarketError(
                f"{symbol}: tier max_leverage must decrease, got {leverage} after {previous_leverage}"
            )
        floor = floor_units * MICRO
        mmr = _rate(symbol, f"tier {index} maintenance_rate", entry[2]) if len(entry) > 2 else Fraction(1, 2 * leverage)
        if mmr * leverage > 1:
            raise MarketError(f"{symbol}: tier {index}: a maintenance rate of {float(mmr):g} at {leverage}x is above "
                              f"the initial margin (1/{leverage}); positions would open liquidatable")
        continuous = deduction + floor * (mmr - previous_mmr) if index > 0 else Fraction(0)
        if len(entry) == 4:
            given = Fraction(_int(symbol, f"tier {index} maintenance_amount", entry[3], low=0) * MICRO)
            if given != continuous:
                raise MarketError(
                    f"{symbol}: tier {index}: maintenance amount {entry[3]} leaves the maintenance margin "
                    f"discontinuous at {floor_units} of notional; it must be {float(continuous / MICRO):g}")
        deduction = continuous
        tiers.append(Tier(floor, leverage, mmr, deduction))
        previous_floor, previous_leverage, previous_mmr = floor_units, leverage, mmr
    return tuple(tiers)


HYPERLIQUID_LIMIT_BAND_PPM = 800_000  # "Order price cannot be more than 80% away from the reference price"


def default_markets() -> dict[str, Market]:
    """BTC, ETH and SOL perpetuals with parameters close to the large venues' (Hyperliquid's,
    the default profile's: a limit price may be up to 80% from the mark)."""
    markets = [
        Market(
            "BTC-PERP", "0.1", "0.001", 40,
            tiers=[(0, 40), (20_000_000, 20), (100_000_000, 10)], limit_band_ppm=HYPERLIQUID_LIMIT_BAND_PPM,
        ),
        Market("ETH-PERP", "0.01", "0.01", 25, tiers=[(0, 25), (10_000_000, 10)],
               limit_band_ppm=HYPERLIQUID_LIMIT_BAND_PPM),
        Market("SOL-PERP", "0.01", "0.01", 20, tiers=[(0, 20), (5_000_000, 10)],
               limit_band_ppm=HYPERLIQUID_LIMIT_BAND_PPM),
    ]
    return {market.symbol: market for market in markets}


_FIELDS = {
    "tick_size", "lot_size", "max_leverage", "base", "quote", "min_size", "tiers",
    "maker_fee_ppm", "taker_fee_ppm", "price_band_ppm", "limit_band_ppm", "strict_isolated",
}


def markets_from_config(config: dict[str, Any]) -> dict[str, Market]:
    """Markets from a mapping ``{symbol: {field: value}}`` (e.g. a parsed TOML table)."""
    if not isinstance(config, dict) or not config:
        raise MarketError("the market configuration must be a non-empty table of markets")
    markets = {}
    for symbol, fields in config.items():
        if not isinstance(fields, dict):
            raise MarketError(f"{symbol}: expected a table of fields, got {type(fields).__name__}")
        unknown = set(fields) - _FIELDS
        if unknown:
            raise MarketError(f"{symbol}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_FIELDS))}")
        missing = {"tick_size", "lot_size", "max_leverage"} - set(fields)
        if missing:
            raise MarketError(f"{symbol}: missing field(s) {', '.join(sorted(missing))}")
        kwargs = dict(fields)
        if "tiers" in kwargs:
            kwargs["tiers"] = [tuple(tier) if isinstance(tier, list) else tier for tier in kwargs["tiers"]]
        markets[symbol] = Market(symbol, str(kwargs.pop("tick_size")), str(kwargs.pop("lot_size")),
                                 kwargs.pop("max_leverage"), **kwargs)
    return markets


def load_markets(path: str | Path) -> dict[str, Market]:
    """Markets from a TOML file whose tables are named by symbol."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            config = tomllib.load(handle)
    except FileNotFoundError:
        raise MarketError(f"market file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise MarketError(f"market file {path} is not valid TOML: {exc}") from None
    return markets_from_config(config)
