"""Stock reserved at checkout: the decisions that cross customers, as plain functions.

The fold asks for a checkout's reservation by writing a request to the `cart-reservations`
topic (one partition); the flow forwards every catalog record read into the same topic. The
reservation stage reads that topic as an input and decides each request in the topic's order,
from its own state: the catalog as forwarded so far and the units reserved per product. After a
resume it re-reads the same records in the same order from the same restored state, so it makes
the same decisions; the log decides who gets the last units, never the timing of a run.

- All lines or none: a request whose lines do not all fit (reserved + qty <= stockQty) reserves
  nothing and is answered OUT_OF_STOCK naming those products; a line whose product is unknown or
  deleted makes it PRODUCT_UNAVAILABLE (naming those), whatever the stock of the others.
- Otherwise every line's qty is reserved and the answer is RESERVED with the order's lines
  priced at the catalog's price in force (the latest catalog record before the request).
- Repeats: the fold re-emits requests after its own resume, so a request whose checkout (its
  eventId at its offset) this customer's recent decisions already hold is ignored (its answer
  went out the first time, and the fold gets it again from the stage's own re-read of the topic
  or got it already). The offset tells a client retry that the fold's dedupe window no longer
  covers (a new checkout with an old eventId, which the fold waits for) from a repeat.
- Catalog records are forwarded at least once too. The latest forwarded record of a product is
  in force, as in the join: offsets cannot order them (producers with different partitioners put
  one product's records in different partitions), and a resume re-forwards only records read
  after its snapshot, in their partition's order, so the last of them is the newest again.

Units are never released here (no fulfilment or cancellation flow yet): `reserved` only grows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from cart_aggregator.fold import (
    OUT_OF_STOCK,
    PRODUCT_UNAVAILABLE,
    RESERVED,
    ProductTuple,
    ReservationRequest,
)
from cart_contract import ContractError, ReservedCount, encode_reserved_count

# How many decided checkout eventIds are kept per customer to recognise a repeated request.
# Repeats come from the fold's re-emission after a resume: one snapshot interval of checkouts.
DECIDED_KEPT = 32
# Every record of the request topic goes to one stage instance (all lines of a checkout are
# decided in one place): one key.
LEDGER_KEY = "stock"

REQUEST = "checkout"
PRODUCT = "product"


def encode_request(req: ReservationRequest) -> tuple[bytes, bytes]:
    """A fold's reservation request as a record of the request topic (key customerId)."""
    cid, eid, offset, lines = req
    return cid.encode(), orjson.dumps({"kind": REQUEST, "customerId": cid, "eventId": eid,
                                       "offset": offset, "lines": lines})


def encode_product_record(pid: str, product: ProductTuple | None,
                          offset: int) -> tuple[bytes, bytes]:
    """A catalog record forwarded into the request topic (product None: deleted)."""
    return pid.encode(), orjson.dumps({"kind": PRODUCT, "productId": pid, "product": product,
                                       "offset": offset})


def decode_record(raw: bytes | None) -> tuple[Any, ...]:
    """A request-topic record back: (REQUEST, ReservationRequest) or (PRODUCT, pid, product,
    offset). Raises ContractError (the flow dead-letters the record)."""
    try:
        d = orjson.loads(raw or b"")
        if d["kind"] == REQUEST:
            lines = tuple((str(i), int(q), str(p)) for i, q, p in d["lines"])
            return REQUEST, (str(d["customerId"]), str(d["eventId"]), int(d["offset"]), lines)
        if d["kind"] == PRODUCT:
            p = d["product"]
            product = None if p is None else (str(p[0]), str(p[1]), str(p[2]), int(p[3]),
                                              int(p[4]))
            return PRODUCT, str(d["productId"]), product, int(d["offset"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ContractError("INVALID_RESERVATION_RECORD", f"not a reservation record: {exc}",
                            None) from None
    raise ContractError("INVALID_RESERVATION_RECORD", f"unknown kind {d.get('kind')!r}", "kind")


@dataclass(slots=True)
class Ledger:
    """The reservation stage's state: the catalog as forwarded, units reserved, recent decisions.

    Mutable, for speed; the stage snapshots a copy (`saved`).
    """

    # productId -> (product or None when deleted, offset of its record in the catalog topic)
    # (the offset is kept for diagnosis only)
    catalog: dict[str, tuple[ProductTuple | None, int]] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)
    # customerId -> its last DECIDED_KEPT decided checkouts, as (eventId, offset)
    decided: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)

    def saved(self) -> tuple[Any, ...]:
        """A snapshot: plain dict copies (pickled later by bytewax)."""
        return dict(self.catalog), dict(self.reserved), dict(self.decided)

    @classmethod
    def from_saved(cls, t: tuple[Any, ...] | None) -> Ledger:
        """The ledger back from `saved` (None: a new one)."""
        if t is None:
            return cls()
        catalog, reserved, decided = t
        return cls(dict(catalog), dict(reserved), dict(decided))


# What the stage emits: answers to the fold (customerId, (offset, answer)), and the reserved
# count of each product a decision changed (productId, reserved, request-topic offset).
Answer = tuple[str, tuple[int, tuple[str, Any]]]
Count = tuple[str, int, int]


def decide(ledger: Ledger, request: ReservationRequest) -> tuple[str, Any] | None:
    """Decide one request against the ledger, reserving its units if it passes.

    Returns the answer, or None for a repeated request (nothing changes).
    """
    cid, eid, at, lines = request
    recent = ledger.decided.get(cid, ())
    if (eid, at) in recent:
        return None
    ledger.decided[cid] = (*recent, (eid, at))[-DECIDED_KEPT:]
    catalog, reserved = ledger.catalog, ledger.reserved
    # A cart holds each product on one line, but be strict: sum per product.
    wanted: dict[str, int] = {}
    for item, qty, _ in lines:
        wanted[item] = wanted.get(item, 0) + qty
    gone = [i for i in wanted if catalog.get(i, (None, -1))[0] is None]
    if gone:
        return PRODUCT_UNAVAILABLE, tuple(gone)
    short = [i for i, q in wanted.items()
             if reserved.get(i, 0) + q > catalog[i][0][3]]  # type: ignore[index]
    if short:
        return OUT_OF_STOCK, tuple(short)
    for i, q in wanted.items():
        reserved[i] = reserved.get(i, 0) + q
    priced = []
    for item, qty, _ in lines:
        p = catalog[item][0]
        assert p is not None
        priced.append((item, p[1], qty, p[2]))
    return RESERVED, tuple(priced)


def apply_records(ledger: Ledger, records: list[tuple[int, tuple[Any, ...]]]
                  ) -> tuple[list[Answer], list[Count]]:
    """Apply request-topic records (offset, decoded record) in topic order."""
    answers: list[Answer] = []
    changed: dict[str, tuple[int, int]] = {}
    for offset, rec in records:
        if rec[0] == PRODUCT:
            _, pid, product, product_offset = rec
            ledger.catalog[pid] = (product, product_offset)
            continue
        request = rec[1]
        answer = decide(ledger, request)
        if answer is None:
            continue
        answers.append((request[0], (request[2], answer)))
        if answer[0] == RESERVED:
            for item, _, _, _ in answer[1]:
                changed[item] = (ledger.reserved[item], offset)
    return answers, [(pid, n, off) for pid, (n, off) in changed.items()]


def encode_reserved(pid: str, reserved: int, version: int) -> tuple[bytes, bytes]:
    """A product's reserved count as published (compacted topic, key productId); `version` is
    the request-topic offset of the decision, so consumers keep the highest."""
    return pid.encode(), encode_reserved_count(ReservedCount(pid, reserved, version))
