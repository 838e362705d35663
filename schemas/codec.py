"""Encoding and decoding of topic payloads.

A payload is one byte of schema version followed by a msgpack array of messages, so one
Kafka record can carry a batch. Decoding validates every message against its topic's
union; anything that is not a valid payload raises ``SchemaError`` naming the topic and
what was wrong, never a raw msgspec error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from schemas.topics import TOPICS

SCHEMA_VERSION = 1
_VERSION_BYTE = bytes([SCHEMA_VERSION])


class SchemaError(ValueError):
    """A payload could not be decoded into the messages its topic carries."""

    def __init__(self, topic: str, problem: str):
        super().__init__(f"{topic}: {problem}")
        self.topic = topic
        self.problem = problem


class Codec:
    """Encoder and decoder for one topic's union of messages."""

    __slots__ = ("topic", "_encoder", "_decoder", "_allowed")

    def __init__(self, topic: str, union: Any):
        self.topic = topic
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(list[union])
        members = getattr(union, "__args__", (union,))
        self._allowed = frozenset(members)

    def encode(self, message: msgspec.Struct) -> bytes:
        return self.encode_many((message,))

    def encode_many(self, messages: Sequence[msgspec.Struct] | Iterable[msgspec.Struct]) -> bytes:
        messages = list(messages)
        for message in messages:
            if type(message) not in self._allowed:
                raise SchemaError(
                    self.topic, f"{type(message).__name__} is not a message of this topic"
                )
        return _VERSION_BYTE + self._encoder.encode(messages)

    def encode_part(self, message: msgspec.Struct) -> bytes:
        """One message encoded on its own, to be joined into a payload by ``join``; so
        that a message that cannot be encoded (a number msgpack cannot carry) is known
        before it is queued. Raises ``SchemaError`` for a message of another topic and
        ``OverflowError`` / ``msgspec.EncodeError`` for what cannot be encoded."""
        self.check_type(message)
        return self._encoder.encode(message)

    def check_type(self, message: msgspec.Struct) -> None:
        """``SchemaError`` unless ``message`` is one of this topic's types."""
        if type(message) not in self._allowed:
            raise SchemaError(self.topic, f"{type(message).__name__} is not a message of this topic")

    @staticmethod
    def join(parts: Sequence[bytes]) -> bytes:
        """The payload of messages encoded by ``encode_part``, in order."""
        count = len(parts)
        if count < 16:
            header = bytes([0x90 | count])
        elif count < 1 << 16:
            header = b"\xdc" + count.to_bytes(2, "big")
        else:
            header = b"\xdd" + count.to_bytes(4, "big")
        return _VERSION_BYTE + header + b"".join(parts)

    def decode(self, payload: bytes) -> list[Any]:
        """All messages of a payload, in order; raises ``SchemaError`` on anything else."""
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise SchemaError(self.topic, f"expected bytes, got {type(payload).__name__}")
        if len(payload) < 2:
            raise SchemaError(self.topic, f"payload of {len(payload)} bytes is too short")
        version = payload[0]
        if version != SCHEMA_VERSION:
            raise SchemaError(
                self.topic,
                f"schema version {version} is not supported (this build reads {SCHEMA_VERSION})",
            )
        try:
            return self._decoder.decode(memoryview(payload)[1:])
        except msgspec.ValidationError as exc:
            raise SchemaError(self.topic, f"invalid message: {exc}{self._field(exc, payload)}") from None
        except msgspec.DecodeError as exc:
            raise SchemaError(self.topic, f"not msgpack: {exc}") from None


    def check(self, message: msgspec.Struct) -> None:
        """Raise ``SchemaError`` if a reader of this topic would refuse ``message`` (a
        number out of its field's range, or too large to encode): what a sender checks
        before sending, so a bad value is a named error at its source."""
        try:
            payload = self.encode(message)
        except (OverflowError, msgspec.EncodeError) as exc:
            raise SchemaError(self.topic, f"{type(message).__name__} cannot be encoded: {exc}") from None
        self.decode(payload)

    def _field(self, exc: msgspec.ValidationError, payload: bytes) -> str:
        """`` (Deposit.amount)`` for an error at ``$[i][j]``: the message's tag and field."""
        match = re.search(r"\$\[(\d+)\]\[(\d+)\]", str(exc))
        if not match:
            return ""
        try:
            raw = msgspec.msgpack.decode(memoryview(payload)[1:])
            tag = raw[int(match.group(1))][0]
        except (msgspec.DecodeError, IndexError, KeyError, TypeError):
            return ""
        kind = next((k for k in self._allowed if k.__name__ == tag), None)
        index = int(match.group(2)) - 1  # position 0 is the tag
        if kind is None or not 0 <= index < len(kind.__struct_fields__):
            return ""
        return f" ({tag}.{kind.__struct_fields__[index]})"


CODECS: dict[str, Codec] = {topic: Codec(topic, union) for topic, union in TOPICS.items()}


def codec(topic: str) -> Codec:
    """The codec of a topic; ``KeyError`` names the known topics."""
    try:
        return CODECS[topic]
    except KeyError:
        raise KeyError(f"unknown topic {topic!r}; known: {', '.join(sorted(CODECS))}") from None
