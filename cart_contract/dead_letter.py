"""Dead-letter entries: a record that could not be processed, with the reason."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from cart_contract._json import load_object
from cart_contract.errors import ContractError
from cart_contract.events import utc_now_iso

_TEXT_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The original bytes and coordinates of a bad record, and why it was refused."""

    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    message: str
    stage: str
    at: str


def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode()


def dead_letter_to_dict(dl: DeadLetter) -> dict[str, Any]:
    """The entry's wire form: bytes as base64 plus a readable excerpt."""
    return {
        "sourceTopic": dl.source_topic,
        "partition": dl.partition,
        "offset": dl.offset,
        "keyB64": _b64(dl.key),
        "valueB64": _b64(dl.value),
        "valueText": None
        if dl.value is None
        else dl.value.decode("utf-8", errors="replace")[:_TEXT_LIMIT],
        "reason": dl.reason,
        "message": dl.message,
        "stage": dl.stage,
        "at": dl.at,
    }


def encode_dead_letter(dl: DeadLetter) -> bytes:
    """Serialise a dead-letter entry to JSON bytes."""
    return orjson.dumps(dead_letter_to_dict(dl))


def decode_dead_letter(raw: bytes | str) -> DeadLetter:
    """Parse a dead-letter entry."""
    d = load_object(raw)
    return DeadLetter(
        source_topic=d["sourceTopic"],
        partition=d["partition"],
        offset=d["offset"],
        key=None if d.get("keyB64") is None else base64.b64decode(d["keyB64"]),
        value=None if d.get("valueB64") is None else base64.b64decode(d["valueB64"]),
        reason=d["reason"],
        message=d["message"],
        stage=d["stage"],
        at=d["at"],
    )


def dead_letter_from_error(
    err: BaseException,
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    stage: str,
) -> DeadLetter:
    """Build the entry for a record that raised `err`."""
    reason = err.reason if isinstance(err, ContractError) else type(err).__name__
    message = err.message if isinstance(err, ContractError) else str(err)
    return DeadLetter(source_topic, partition, offset, key, value, reason, message, stage,
                      utc_now_iso())
