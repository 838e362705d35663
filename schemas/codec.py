"""Encoding and decoding of topic payloads.

A payload is one byte of schema version followed by a msgpack array of messages, so one
Kafka record can carry a batch. Decoding validates every message against its topic's
union; anything that is not a valid payload raises ``SchemaError`` naming the topic and
what was wrong, never a raw msgspec error.
"""

from __future__ import annotations

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
            raise SchemaError(self.topic, f"invalid message: {exc}") from None
        except msgspec.DecodeError as exc:
            raise SchemaError(self.topic, f"not msgpack: {exc}") from None


CODECS: dict[str, Codec] = {topic: Codec(topic, union) for topic, union in TOPICS.items()}


def codec(topic: str) -> Codec:
    """The codec of a topic; ``KeyError`` names the known topics."""
    try:
        return CODECS[topic]
    except KeyError:
        raise KeyError(f"unknown topic {topic!r}; known: {', '.join(sorted(CODECS))}") from None
