"""Dead-letter entries: a record that could not be processed, with the reason."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from cart_contract._json import integer, load_object, text
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


def _string(d: dict[str, Any], field: str) -> str:
    v = d.get(field, "")
    if not isinstance(v, str):
        raise ContractError("WRONG_TYPE", f"{field} must be a string", field)
    return v


def _unb64(d: dict[str, Any], field: str) -> bytes | None:
    v = d.get(field)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ContractError("WRONG_TYPE", f"{field} must be a base64 string", field)
    try:
        return base64.b64decode(v, validate=True)
    except binascii.Error:
        raise ContractError("WRONG_TYPE", f"{field} is not valid base64", field) from None


def decode_dead_letter(raw: bytes | str) -> DeadLetter:
    """Parse a dead-letter entry; raises ContractError."""
    d = load_object(raw)
    return DeadLetter(
        source_topic=_string(d, "sourceTopic"),
        # -1: Kafka's "no offset", for errors not tied to one record.
        partition=integer(d, "partition", -1),
        offset=integer(d, "offset", -1),
        key=_unb64(d, "keyB64"),
        value=_unb64(d, "valueB64"),
        reason=text(d, "reason"),
        message=_string(d, "message"),
        stage=text(d, "stage"),
        at=text(d, "at"),
    )


def dead_letter_reason(err: Exception) -> str:
    """The reason code a dead letter for `err` carries: the contract's, else the error's type."""
    return err.reason if isinstance(err, ContractError) else type(err).__name__


def dead_letter_from_error(
    err: ContractError | Exception,
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    stage: str,
) -> DeadLetter:
    """Build the entry for a record that raised `err`, stamped with the current time."""
    reason = dead_letter_reason(err)
    message = err.message if isinstance(err, ContractError) else str(err)
    return DeadLetter(source_topic, partition, offset, key, value, reason, message, stage,
                      utc_now_iso())
