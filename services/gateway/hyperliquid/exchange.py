"""Hyperliquid's ``POST /exchange``: signed actions, as Hyperliquid verifies them.

An L1 action is signed as EIP-712 ``Agent{source, connectionId}`` on the ``Exchange``
domain (chain id 1337), ``connectionId`` being keccak(msgpack(action) ‖ nonce (8 bytes,
big-endian) ‖ vault flag (‖ vault address) (‖ 0 ‖ expiresAfter)). ``source`` is "a" on
mainnet and "b" on testnet; a local venue cannot know which a client believes it is
talking to (ccxt signs as mainnet, the SDK as testnet against any other URL), so both are
recovered and the signer is whichever is a known account. The acting account is that
address (lower case), which must have been funded (``perpsim accounts create``, or a
deposit to the address).

Nonces (milliseconds, as Hyperliquid's): each signer's must be new and within a day of
the server's clock; a replayed or stale one is refused.

Actions: ``order`` (limit Gtc / Ioc / Alo, reduce-only, client order id; trigger tp/sl
orders on the mark, market or limit), ``cancel``,
``cancelByCloid``, ``modify``, ``batchModify``, ``updateLeverage`` (``isCross`` chooses
the margin mode), ``updateIsolatedMargin`` (``ntli``), and ``approveAgent`` (user-signed by
the master on the ``HyperliquidSignTransaction`` domain; the agent, kept on the ``keys``
topic, then signs L1 actions for its master). Answers are Hyperliquid's: ``{"status": "ok", "response": {"type":
..., "data": {"statuses": [...]}}}`` with per-order ``resting`` / ``filled`` / ``error``,
or ``{"status": "err", "response": "..."}``. ``scheduleCancel`` (a dead man's switch).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import msgpack
from aiohttp import web
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys.datatypes import Signature as KeySignature
from eth_utils import keccak

from schemas.enums import (
    CloseReason,
    Condition,
    MarginMode,
    RejectReason,
    Side,
    TimeInForce,
    TriggerSource,
)
from services.client import Rejected
from services.gateway.host import GatewayHost
from services.gateway.hyperliquid.info import UNREADABLE, _number
from services.gateway.keys import AGENT_PREFIX, publish_agent
from services.gateway.ledger import money

NONCE_WINDOW_MS = 86_400_000  # Hyperliquid: within a day (later: two days back, one ahead)
NONCES_KEPT = 100
log = logging.getLogger(__name__)

OVERLOADED = "Too many requests: the exchange is overloaded, retry shortly."
NEW_WORK = ("order", "modify", "batchModify")  # what an overloaded venue refuses (cancels still go through)
CLOID = re.compile(r"^0x[0-9a-fA-F]{32}$")  # a client order id: 16 bytes, as hex
TIFS = {"Gtc": TimeInForce.GTC, "Ioc": TimeInForce.IOC, "Alo": TimeInForce.POST_ONLY}


def connection_id(action: Any, vault: str | None, nonce: int, expires_after: int | None) -> bytes:
    data = msgpack.packb(action) + nonce.to_bytes(8, "big")
    if vault is None:
        data += b"\x00"
    else:
        data += b"\x01" + bytes.fromhex(vault[2:] if vault.startswith("0x") else vault)
    if expires_after is not None:
        data += b"\x00" + expires_after.to_bytes(8, "big")
    return keccak(data)


# The EIP-712 digest of an Agent message, computed directly (eth-account's generic
# encode_typed_data costs about 1.2 ms; this, microseconds): keccak(0x1901 ‖ the domain's
# separator ‖ keccak(typeHash(Agent) ‖ keccak(source) ‖ connectionId)).
_DOMAIN_SEPARATOR = keccak(
    keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    + keccak(b"Exchange") + keccak(b"1") + (1337).to_bytes(32, "big") + bytes(32))
_AGENT_TYPE = keccak(b"Agent(string source,bytes32 connectionId)")


def agent_digest(source: str, connection: bytes) -> bytes:
    return keccak(b"\x19\x01" + _DOMAIN_SEPARATOR + keccak(_AGENT_TYPE + keccak(source.encode()) + connection))


def signers(action: Any, signature: dict, vault: str | None, nonce: int, expires_after: int | None):
    """The addresses that could have signed, lower case: for ``source`` "a" (mainnet), then
    "b" (testnet); lazily, so a caller that finds its signer first recovers only once."""
    connection = connection_id(action, vault, nonce, expires_after)
    v, r, s = int(signature["v"]), int(signature["r"], 16), int(signature["s"], 16)
    signed = KeySignature(vrs=(v - 27 if v >= 27 else v, r, s))
    for source in ("a", "b"):
        yield signed.recover_public_key_from_msg_hash(agent_digest(source, connection)).to_address().lower()


# an order with no answer in time (the venue is overloaded, or a service is down): it may
# still go live, and a bot must look it up rather than send it again (docs/gateway.md)
ORDER_TIMEOUT = ("Timeout waiting for the exchange; the order may still go live: look it up with orderStatus "
                 "(by its cloid, or in openOrders and userFills) before placing it again.")


class Refusal(Exception):
    """An action Hyperliquid answers with ``{"status": "err", "response": message}``."""


class HyperliquidExchange:
    """``POST /exchange`` of a ``Gateway`` (its client, ledger and markets)."""

    def __init__(self, host: GatewayHost):
        self.host = host
        self.assets = list(host.markets.values())  # asset index -> market, as /info's meta lists them
        self.nonces: dict[str, deque[int]] = {}
        self.scheduled: dict[str, asyncio.Task] = {}  # account -> its dead man's switch
        self.builder_fees: dict[str, dict[str, int]] = {}  # account -> builder -> most it allowed (tenths of a bp)
        # the signed actions served, by Hyperliquid's name for them (approveAgent is signed by
        # the master itself, see ``answer``): nothing else is reachable from the wire
        self.handlers: dict[str, Callable[[str, dict], Awaitable[Any]]] = {
            "order": self._order,
            "updateLeverage": self._updateLeverage,
            "updateIsolatedMargin": self._updateIsolatedMargin,
            "modify": self._modify,
            "batchModify": self._batchModify,
            "scheduleCancel": self._scheduleCancel,
            "cancel": self._cancel,
            "cancelByCloid": self._cancelByCloid,
            "setReferrer": self._setReferrer,
        }

    def routes(self) -> list:
        return [web.post("/exchange", self.exchange)]

    async def exchange(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text() or "null")
        except ValueError:
            body = None
        answer = await self.answer(body)
        # too busy: Hyperliquid's answer to more than it takes is HTTP 429, which clients back off from
        return web.json_response(answer, status=429 if answer.get("response") == OVERLOADED else 200)

    async def answer(self, body: Any) -> dict:
        """The answer to a signed request ``body`` (the JSON of ``POST /exchange``, or the
        payload of a WebSocket ``post`` action): never an exception."""
        try:
            if not isinstance(body, dict) or not isinstance(body.get("action"), dict):
                raise Refusal(UNREADABLE)
            action, nonce, signature = body["action"], body.get("nonce"), body.get("signature")
            if not isinstance(nonce, int) or not isinstance(signature, dict):
                raise Refusal(UNREADABLE)
            if action.get("type") == "approveAgent":  # user-signed, by the master itself
                return {"status": "ok", "response": await self._approve_agent(action, signature, nonce)}
            if action.get("type") == "approveBuilderFee":  # user-signed too (ccxt sends it before its first order)
                return {"status": "ok", "response": self._approve_builder_fee(action, signature, nonce)}
            vault = body.get("vaultAddress")
            account = self._signer(action, signature, vault, nonce, body.get("expiresAfter"))
            if vault is not None:
                # perpsim has no vaults or subaccounts: an action for one is refused as
                # Hyperliquid refuses one for a vault it does not know (before, the order was
                # placed on the signer's own account)
                raise Refusal(f"Vault not registered: {str(vault).lower()}")
            self._use_nonce(account, nonce)
            handler = self.handlers.get(action.get("type"))
            if handler is None:
                raise Refusal(f"Unknown action type {action.get('type')!r}")
            if action.get("type") in NEW_WORK and (busy := self.host.overloaded()):
                log.warning("gateway overloaded, a Hyperliquid %s refused: %s", action.get("type"), busy)
                raise Refusal(OVERLOADED)
            return {"status": "ok", "response": await handler(account, action)}
        except Refusal as refusal:
            return {"status": "err", "response": str(refusal)}
        except (ValueError, KeyError, TypeError, AttributeError):
            return {"status": "err", "response": UNREADABLE}

    def _signer(self, action: dict, signature: dict, vault: Any, nonce: int, expires_after: Any) -> str:
        known = self.host.ledger.accounts
        candidates: list[str] = []
        recovered = signers(action, signature, vault, nonce, expires_after)
        while True:
            try:
                address = next(recovered)
            except StopIteration:
                break
            except Exception:  # noqa: BLE001 - any malformed signature is the client's error
                raise Refusal("Invalid signature") from None
            candidates.append(address)
            if address in known and known[address].snapshot is not None:  # funded: risk has reported it
                return address
            master = self.host.keys.master(address) if self.host.keys is not None else None
            if master is not None:  # an approved agent wallet acts for its master
                return master
        raise Refusal(f"User or API Wallet {candidates[0]} does not exist.")

    def _user_signed(self, action: dict, signature: dict, nonce: int, kind: str, fields: list[tuple[str, str]]) -> str:
        """The funded account that signed a user-signed action (EIP-712 on the
        ``HyperliquidSignTransaction`` domain, as the SDK and ccxt sign ``approveAgent`` and
        ``approveBuilderFee``): ``fields`` are its message's (name, type); its nonce is used."""
        try:
            message = {name: action.get(name, "") if kind_ == "string" else action[name] for name, kind_ in fields}
            chain = int(action["signatureChainId"], 16)
            typed = {"domain": {"name": "HyperliquidSignTransaction", "version": "1", "chainId": chain,
                                "verifyingContract": "0x" + "0" * 40},
                     "types": {f"HyperliquidTransaction:{kind}": [{"name": n, "type": t} for n, t in fields],
                               "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                                {"name": "chainId", "type": "uint256"},
                                                {"name": "verifyingContract", "type": "address"}]},
                     "primaryType": f"HyperliquidTransaction:{kind}", "message": message}
            vrs = [int(signature["v"]), int(signature["r"], 16), int(signature["s"], 16)]
            user = Account.recover_message(encode_typed_data(full_message=typed), vrs=vrs).lower()
        except Exception:  # noqa: BLE001 - whatever does not verify is an invalid signature
            raise Refusal("Invalid signature") from None
        known = self.host.ledger.accounts
        if user not in known or known[user].snapshot is None:
            raise Refusal(f"User or API Wallet {user} does not exist.")
        self._use_nonce(user, nonce)
        return user

    def _approve_builder_fee(self, action: dict, signature: dict, nonce: int) -> dict:
        """``approveBuilderFee``: the account allows ``builder`` to charge it up to
        ``maxFeeRate`` ("0.01%") on the orders that name it. Before, it was recovered as an L1
        action and refused, and ccxt asked again before every order."""
        user = self._user_signed(action, signature, nonce, "ApproveBuilderFee", [
            ("hyperliquidChain", "string"), ("maxFeeRate", "string"), ("builder", "address"), ("nonce", "uint64")])
        rate = str(action["maxFeeRate"])
        if not rate.endswith("%"):
            raise Refusal(UNREADABLE)
        tenths_of_bp = Decimal(rate[:-1]) * 1000  # a builder fee is in tenths of a basis point
        if tenths_of_bp < 0 or tenths_of_bp != tenths_of_bp.to_integral_value():
            raise Refusal(UNREADABLE)
        self.builder_fees.setdefault(user, {})[str(action["builder"]).lower()] = int(tenths_of_bp)
        return {"type": "default"}

    async def _approve_agent(self, action: dict, signature: dict, nonce: int) -> dict:
        """``approveAgent``, signed by the master (as the SDK's ``approve_agent`` does): the
        agent may then sign for it."""
        master = self._user_signed(action, signature, nonce, "ApproveAgent", [
            ("hyperliquidChain", "string"), ("agentAddress", "address"), ("agentName", "string"), ("nonce", "uint64")])
        agent = str(action["agentAddress"]).lower()
        await publish_agent(self.host.bus, agent, master)
        await self.host.keys.known(AGENT_PREFIX + agent)
        return {"type": "default"}

    def _use_nonce(self, account: str, nonce: int) -> None:
        now = int(time.time() * 1000)
        if not now - NONCE_WINDOW_MS < nonce < now + NONCE_WINDOW_MS:
            raise Refusal(f"Invalid nonce: {nonce} is too far from the current time {now}")
        used = self.nonces.setdefault(account, deque(maxlen=NONCES_KEPT))
        if nonce in used or (len(used) == NONCES_KEPT and nonce <= min(used)):
            raise Refusal("Invalid nonce: duplicate nonce")
        used.append(nonce)

    def _asset(self, index: Any):
        if not isinstance(index, int) or not 0 <= index < len(self.assets):
            raise Refusal(f"Invalid asset: {index}")
        return self.assets[index]

    # ------------------------------------------------------------------ actions

    async def _order(self, account: str, action: dict) -> dict:
        for wire in action.get("orders", []):
            if wire.get("c") is not None and not CLOID.match(str(wire["c"])):
                raise Refusal(UNREADABLE)  # a cloid is 16 bytes in hex: Hyperliquid cannot read anything else
        statuses = await asyncio.gather(*(self._one_order(account, wire) for wire in action.get("orders", [])))
        return {"type": "order", "data": {"statuses": list(statuses)}}

    async def _one_order(self, account: str, wire: dict) -> dict:
        try:
            market = self._asset(wire["a"])
            kind = wire.get("t", {})
            if "trigger" in kind:
                return await self._trigger_order(account, market, wire, kind["trigger"])
            if "limit" not in kind:
                return {"error": "Order has invalid type."}
            tif = TIFS.get(kind["limit"].get("tif"))
            if tif is None:
                return {"error": "Invalid TIF."}
            price, size = Decimal(wire["p"]), Decimal(wire["s"])
            if size <= 0:
                return {"error": "Order has zero size."}
            problem = valid_order(market, price, size)
            if problem:
                return {"error": problem}
            price = on_tick(market, price, Side.BUY if wire["b"] else Side.SELL)
            if price <= 0:
                return {"error": "Order has invalid price."}
            result = await asyncio.wait_for(self._place(account, market, wire, size, price, tif),
                                            self.host.order_timeout_s)
        except Refusal as refusal:
            return {"error": str(refusal)}
        except Rejected as refused:
            return {"error": _error_text(refused)}
        except (InvalidOperation, KeyError, TypeError):
            return {"error": "Order could not be read."}
        except TimeoutError:
            return {"error": ORDER_TIMEOUT}
        oid = result.order_id
        filled = result.filled
        if filled and (result.closed is not None or filled == result.accepted.size):
            value = sum(fill.price * fill.size for fill in result.fills)
            average = Decimal(value) / filled * market.tick_size
            return {"filled": {"totalSz": _number(market.format_size(filled)), "avgPx": _number(str(average)), "oid": oid}}
        if result.closed is not None and result.closed.reason is not CloseReason.FILLED:
            return {"error": "Order could not immediately match against any resting orders. asset="
                             f"{self.assets.index(market)}"}
        return {"resting": {"oid": oid, **({"cloid": wire["c"]} if wire.get("c") else {})}}

    async def _updateLeverage(self, account: str, action: dict) -> dict:
        """``isCross`` chooses the position's margin mode, ``leverage`` its leverage."""
        market = self._asset(action.get("asset"))
        leverage, cross = action.get("leverage"), action.get("isCross")
        if not isinstance(leverage, int) or not isinstance(cross, bool):
            raise Refusal(UNREADABLE)
        mode = MarginMode.CROSS if cross else MarginMode.ISOLATED
        current = next((p.mode for p in self.host.ledger.snapshot(account).positions if p.market == market.symbol),
                       None)
        if current is not None and current is not mode:
            raise Refusal("Cannot switch leverage type with open position.")
        timeout = self.host.order_timeout_s
        try:
            await asyncio.wait_for(self.host.client.set_margin_mode(account, market.symbol, mode), timeout)
        except Rejected as refused:
            if refused.reason is not RejectReason.MARGIN_MODE_UNCHANGED:
                raise Refusal(_error_text(refused)) from None
        await _settle_command(self.host.client.set_leverage(account, market.symbol, leverage), timeout)
        return {"type": "default"}

    async def _updateIsolatedMargin(self, account: str, action: dict) -> dict:
        """``ntli``: the margin to add (> 0) or remove (< 0), in micro USDC."""
        market = self._asset(action.get("asset"))
        amount = action.get("ntli")
        if not isinstance(amount, int):
            raise Refusal(UNREADABLE)
        await _settle_command(self.host.client.adjust_margin(account, market.symbol, money(amount)),
                              self.host.order_timeout_s)
        return {"type": "default"}

    async def _modify(self, account: str, action: dict) -> dict:
        status = await self._modify_one(account, action.get("oid"), action.get("order") or {})
        if "error" in status:
            raise Refusal(status["error"])
        return {"type": "default"}

    async def _batchModify(self, account: str, action: dict) -> dict:
        statuses = [await self._modify_one(account, m.get("oid"), m.get("order") or {})
                    for m in action.get("modifies", [])]
        return {"type": "order", "data": {"statuses": statuses}}

    async def _modify_one(self, account: str, oid: Any, wire: dict) -> dict:
        """A resting order's new price and size (its side stays); it loses its place in the
        queue, as a Hyperliquid modify does."""
        try:
            market = self._asset(wire.get("a"))
            orders = self.host.ledger.open_orders(account, market)
            order = next((o for o in orders if o.order_id == oid or (isinstance(oid, str) and o.client_order_id == oid)),
                         None)
            if order is None:
                return {"error": "Cannot modify canceled or filled order"}
            if bool(wire.get("b")) != (order.side is Side.BUY):
                return {"error": "Cannot modify the side of an order"}
            size = market.lot_size * market.size_to_lots(Decimal(wire["s"])) + \
                market.lot_size * order.executed
            await asyncio.wait_for(self.host.client.amend(account, market.symbol, order.order_id,
                                                             str(Decimal(wire["p"])), str(size), requeue=True),
                                   self.host.order_timeout_s)
        except Refusal as refusal:
            return {"error": str(refusal)}
        except Rejected as refused:
            return {"error": _error_text(refused)}
        except (InvalidOperation, KeyError, TypeError, ValueError):
            return {"error": "Order could not be read."}
        except TimeoutError:
            return {"error": ORDER_TIMEOUT}
        return {"resting": {"oid": order.order_id}}

    async def _place(self, account: str, market, wire: dict, size: Decimal, price: Decimal, tif: TimeInForce):
        """A market order in this dialect is an Ioc limit with slippage (the SDK's and
        ccxt's: 5% from the mid), which can pass perpsim's price band (5% of risk's mark):
        refused so, it is placed again as a market order, which trades up to the band's edge
        and so only at prices within its limit (the limit was beyond that edge). Before, the
        gateway clamped the price with its own mark, which can trail risk's as it moves."""
        side = Side.BUY if wire["b"] else Side.SELL
        reduce_only, client_order_id = bool(wire.get("r")), wire.get("c") or None
        ioc = tif is TimeInForce.IOC
        try:
            return await self.host.client.place(account, market.symbol, side, str(size), str(price), tif=tif,
                                                reduce_only=reduce_only, client_order_id=client_order_id,
                                                wait_closed=ioc)
        except Rejected as refused:
            if not ioc or refused.reason is not RejectReason.OUTSIDE_PRICE_BAND:
                raise
        return await self.host.client.place(account, market.symbol, side, str(size), None, tif=tif,
                                            reduce_only=reduce_only, client_order_id=client_order_id, wait_closed=True)

    async def _trigger_order(self, account: str, market, wire: dict, trigger: dict) -> dict:
        """A tp/sl trigger order: a conditional order of the core on the mark (Hyperliquid's
        triggers watch the mark), a market order when it fires if ``isMarket``, else a limit
        order at ``p``. The ``grouping`` (normalTpsl, positionTpsl) is accepted; each order
        stands on its own."""
        kinds = {"sl": Condition.STOP, "tp": Condition.TAKE_PROFIT}
        condition = kinds.get(trigger.get("tpsl"))
        if condition is None or not isinstance(trigger.get("isMarket"), bool):
            return {"error": "Order has invalid trigger."}
        size = Decimal(wire["s"])
        side = Side.BUY if wire["b"] else Side.SELL
        result = await asyncio.wait_for(self.host.client.place_conditional(
            account, market.symbol, side, str(size), condition,
            trigger=str(on_tick(market, Decimal(trigger["triggerPx"]))),
            price=None if trigger["isMarket"] else str(on_tick(market, Decimal(wire["p"]), side)),
            source=TriggerSource.MARK, reduce_only=bool(wire.get("r")), client_order_id=wire.get("c") or None),
            self.host.order_timeout_s)
        return {"resting": {"oid": result.order_id, **({"cloid": wire["c"]} if wire.get("c") else {})}}

    async def _setReferrer(self, account: str, action: dict) -> dict:
        """perpsim has no referral program: a code is accepted and changes nothing (ccxt sets
        its own once per session; before, the action was unknown)."""
        if not isinstance(action.get("code"), str):
            raise Refusal(UNREADABLE)
        return {"type": "default"}

    async def _scheduleCancel(self, account: str, action: dict) -> dict:
        """A dead man's switch: at ``time`` (ms), cancel the account's open orders; no
        ``time`` removes it. Hyperliquid wants it at least 5 seconds ahead."""
        when = action.get("time")
        pending = self.scheduled.pop(account, None)
        if pending is not None:
            pending.cancel()
        if when is None:
            return {"type": "default"}
        if not isinstance(when, int) or when < int(time.time() * 1000) + 5_000:
            raise Refusal("Scheduled cancel time too early, must be at least 5 seconds from now.")
        self.scheduled[account] = asyncio.get_running_loop().create_task(self._cancel_all_at(account, when))
        return {"type": "default"}

    async def _cancel_all_at(self, account: str, when: int) -> None:
        await asyncio.sleep(max(0.0, (when - time.time() * 1000) / 1000))
        self.scheduled.pop(account, None)
        orders = self.host.ledger.open_orders(account) + self.host.ledger.open_conditionals(account)
        for order in orders:
            try:
                await asyncio.wait_for(self.host.client.cancel(account, order.market.symbol, order.order_id),
                                       self.host.order_timeout_s)
            except (Rejected, TimeoutError):
                pass  # it ended meanwhile, or the exchange is slow: the next order is tried

    async def _cancel(self, account: str, action: dict) -> dict:
        statuses = await asyncio.gather(*(self._cancel_one(account, self._asset(c.get("a")), c.get("o"))
                                          for c in action.get("cancels", [])))
        return {"type": "cancel", "data": {"statuses": list(statuses)}}

    async def _cancelByCloid(self, account: str, action: dict) -> dict:
        statuses = []
        for request in action.get("cancels", []):
            market = self._asset(request.get("asset"))
            order = next((o for o in self.host.ledger.open_orders(account, market)
                          if o.client_order_id == request.get("cloid")), None)
            if order is None:
                order = next((o for o in self.host.ledger.open_conditionals(account, market)
                              if o.client_order_id == request.get("cloid")), None)
            statuses.append(await self._cancel_one(account, market, order.order_id if order else None))
        return {"type": "cancel", "data": {"statuses": statuses}}

    async def _cancel_one(self, account: str, market, order_id: Any) -> Any:
        never = {"error": f"Order was never placed, already canceled, or filled. asset={self.assets.index(market)}"}
        if not isinstance(order_id, int):
            return never
        try:
            await asyncio.wait_for(self.host.client.cancel(account, market.symbol, order_id),
                                   self.host.order_timeout_s)
        except Rejected:
            return never
        return "success"


async def _settle_command(call, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(call, timeout_s)
    except Rejected as refused:
        raise Refusal(_error_text(refused)) from None
    except TimeoutError:
        raise Refusal("Timeout waiting for the exchange; what was asked may still be done: read the state "
                      "again before asking twice.") from None


def valid_order(market, price: Decimal, size: Decimal) -> str:
    """Hyperliquid's validity rules (docs, "Tick and lot size"): a price has at most 5
    significant figures (an integer price any number) and at most 6 − szDecimals decimals;
    a size at most szDecimals decimals. The error it answers, or ""."""
    size_decimals = max(0, -market.lot_size.normalize().as_tuple().exponent)
    price_decimals = max(0, -price.normalize().as_tuple().exponent)
    digits = len(price.normalize().as_tuple().digits)
    if price_decimals > 6 - size_decimals or (price != price.to_integral_value() and digits > 5):
        return "Order has invalid price."
    if max(0, -size.normalize().as_tuple().exponent) > size_decimals:
        return "Order has invalid size."
    return ""


def on_tick(market, price: Decimal, side: Side | None = None) -> Decimal:
    """A price valid by Hyperliquid's rule may be finer than the market's tick (SOL at
    99.123: five figures, three decimals; SOL's tick is 0.01): it is placed at the tick on
    the trader's safe side, a buy's down and a sell's up, so it never trades worse than
    asked; a trigger price (``side`` None) at the nearest tick. Before, it was refused
    "Price must be divisible by tick size", and Freqtrade's emergency exit after a crash
    failed so."""
    tick = market.tick_size
    ticks = price / tick
    if ticks == ticks.to_integral_value():
        return price
    rounding = ROUND_HALF_EVEN if side is None else ROUND_FLOOR if side is Side.BUY else ROUND_CEILING
    return ticks.to_integral_value(rounding=rounding) * tick  # 0 for a buy below one tick: refused


def _error_text(refused: Rejected) -> str:
    """Hyperliquid's wording for what perpsim refused (ccxt maps these texts to its
    exception classes); where it has none, perpsim's own sentence, never an enum's name."""
    text = HYPERLIQUID_ERRORS.get(refused.reason)
    return text if text is not None else refused.detail[:1].upper() + refused.detail[1:]


HYPERLIQUID_ERRORS = {
    RejectReason.INSUFFICIENT_MARGIN: "Insufficient margin to place order.",
    RejectReason.REDUCE_ONLY_WOULD_INCREASE: "Reduce only order would increase position.",
    RejectReason.WOULD_CROSS: "Post only order would have immediately matched, bbo was unknown.",
    RejectReason.OFF_TICK_PRICE: "Price must be divisible by tick size.",
    RejectReason.SIZE_NOT_LOT_MULTIPLE: "Order has invalid size.",
    RejectReason.INVALID_SIZE: "Order has invalid size.",
    RejectReason.INVALID_PRICE: "Order has invalid price.",
    RejectReason.BELOW_MIN_SIZE: "Order has invalid size.",
    RejectReason.NO_LIQUIDITY: "Order could not immediately match against any resting orders.",
    RejectReason.UNKNOWN_ORDER: "Order was never placed, already canceled, or filled.",
    RejectReason.LEVERAGE_OUT_OF_RANGE: "Invalid leverage value.",
    RejectReason.UNKNOWN_MARKET: "Invalid asset.",
}
