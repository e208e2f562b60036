"""The aggregator dataflow: parse → sequence → product join → resequence and fold → Kafka.

    cartstream aggregate                           # recovery, metrics, cluster flags (see README)
    python -m bytewax.run cart_aggregator.flow     # the bare flow, configured from the environment

Inputs: `cart-events` (key customerId) and `product-details-events` (key productId, compacted).
Every cart event read yields one cart-details record (applied, rejected or duplicate), keyed by
customerId; records that cannot be parsed go to the dead-letter topic. The stages' logic is in
`cart_aggregator.sequencing` and `cart_aggregator.fold`; this module wires them into bytewax.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink

from cart_aggregator import fastfold, metrics
from cart_aggregator.config import Config
from cart_aggregator.fastfold import (
    LineCache,
    State,
    apply_wire,
    encode_state,
    from_snapshot,
    to_snapshot,
)
from cart_aggregator.sequencing import (
    ADD,
    CUSTOMER,
    ITEM,
    TYPE,
    VERSION,
    CatalogEntry,
    ProductRecord,
    Wire,
    expire,
    join,
    next_deadline,
    product_tuple,
    release_in_order,
    restart_waits,
    stamp,
)
from cart_aggregator.sink import DeliveredKafkaSink
from cart_aggregator.snapshots import SHAPE
from cart_aggregator.sources import OffsetSafeKafkaSource, SourceMessage
from cart_contract import (
    ContractError,
    DeadLetter,
    EventType,
    dead_letter_from_error,
    decode_cart_event_fields,
    decode_product,
    encode_dead_letter,
    parse_id,
)

log = logging.getLogger(__name__)
_RETAIN = StatefulBatchLogic.RETAIN

# Written next to the recovery partitions; a different value means their snapshots hold state
# of another shape, and the flow must start over from the log (see service.py). Bump the number
# when a stage's snapshot changes; SHAPE follows the fold's CustomerState on its own.
STATE_FORMAT = f"cartstream-aggregator/4-{SHAPE}"
# Older formats this flow still resumes from (the marker is then rewritten, so an older flow
# no longer takes the directory): 3 kept rejections as tuples (snapshots.rejections_from_snapshot).
READABLE_FORMATS = (f"cartstream-aggregator/3-{SHAPE}",)
FLOW_ID = "cartstream-aggregator"
# EventType -> its plain str value, which is what a Wire carries (`.value` costs more).
_TYPE_NAMES = {t: t.value for t in EventType}


# ----------------------------------------------------------------------------- parsing


def _consumer_error(item: KafkaError[Any, Any]) -> None:
    """Transient consumer errors are skipped (librdkafka retries); fatal ones stop the flow."""
    if item.err.fatal():
        raise RuntimeError(f"fatal Kafka consumer error: {item.err}")
    metrics.CONSUMER_ERRORS.inc()
    log.warning("Kafka consumer error (skipped): %s", item.err)


def _dead_letter(msg: SourceMessage | KafkaSourceMessage[Any, Any], err: Exception) -> DeadLetter:
    letter = dead_letter_from_error(
        err, source_topic=msg.topic or "", partition=msg.partition or 0,
        offset=msg.offset if msg.offset is not None else -1, key=msg.key, value=msg.value,
        stage="aggregator",
    )
    metrics.DEAD_LETTERS.labels(letter.source_topic, letter.reason).inc()
    return letter


def parse_cart_events(msgs: list[Any]) -> list[Any]:
    """Decode a batch: (customerId, Wire) pairs, or DeadLetters for bad records.

    Messages are `SourceMessage`s from Kafka, or bytewax `KafkaSourceMessage`s (tests): both
    have key, value, topic, partition and offset.

    The key must be the customerId: it is what puts a customer's events in one partition,
    in order, and the sequencing relies on that.
    """
    out: list[Any] = []
    good = 0
    decode, type_name = decode_cart_event_fields, _TYPE_NAMES
    for msg in msgs:
        if type(msg) is KafkaError:
            _consumer_error(msg)
            continue
        try:
            # The event's fields only: no CartEvent per event (see sequencing.to_wire).
            eid, etype, cid, item, qty, at, version = decode(msg.value or b"")
            if msg.key != cid.encode():
                raise ContractError("KEY_MISMATCH", f"key {msg.key!r} is not the customerId "
                                    f"{cid!r}", "key")
        except ContractError as exc:
            out.append(_dead_letter(msg, exc))
            continue
        out.append((cid, (0, eid, type_name[etype], cid, item, qty, at, version, msg.partition,
                          msg.offset, None)))
        good += 1
    metrics.EVENTS_READ.inc(good)
    # How far each partition is read, for the lag, is noted by the sources (once a batch).
    return out


def parse_products(msgs: list[Any]) -> list[Any]:
    """Decode a batch: (productId, ProductRecord) pairs (None product = deleted), or DeadLetters."""
    out: list[Any] = []
    for msg in msgs:
        if type(msg) is KafkaError:
            _consumer_error(msg)
            continue
        try:
            try:
                key = None if msg.key is None else msg.key.decode()
            except UnicodeDecodeError:
                raise ContractError("INVALID_ID", "the key is not UTF-8", "key") from None
            product = decode_product(key, msg.value)
            pid = product.product_id if product else parse_id(key, "key")
        except ContractError as exc:
            out.append(_dead_letter(msg, exc))
            continue
        out.append((pid, ProductRecord(
            (pid, None if product is None else product_tuple(product), msg.offset))))
    metrics.PRODUCTS_READ.inc(sum(1 for x in out if type(x) is tuple))
    return out


def _is_record(item: Any) -> bool:
    return type(item) is tuple


def _is_add(kv: tuple[str, Wire]) -> bool:
    return kv[1][TYPE] == ADD


def _by_product(batch: list[tuple[str, Wire]]) -> list[tuple[str, Wire]]:
    return [(w[ITEM], w) for _, w in batch]


def _by_customer(batch: list[tuple[str, Wire]]) -> list[tuple[str, Wire]]:
    return [(w[CUSTOMER], w) for _, w in batch]


def _encode_letters(batch: list[DeadLetter]) -> list[tuple[bytes | None, bytes]]:
    return [(dl.key, encode_dead_letter(dl)) for dl in batch]


# ------------------------------------------------------------------- stateful stages
# Each logic keeps immutable state (or copies it in snapshot), so a snapshot is consistent
# with the epoch it was taken in even though bytewax pickles it later.


class SequenceLogic(StatefulBatchLogic[Any, Wire, int]):
    """Per customer: the version of the last event stamped."""

    def __init__(self, last: int | None) -> None:
        self.last = last or 0

    def on_batch(self, values: list[Any]) -> tuple[list[Wire], bool]:
        if len(values) == 1:  # the common case, without stamp()'s loop
            last = self.last = self.last + 1
            return [(last, *values[0][1:])], _RETAIN
        self.last, out = stamp(self.last, values)
        return out, _RETAIN

    def snapshot(self) -> int:
        return self.last


# Stands in for "now" when no add can start waiting (never read by `join` then).
_NO_WAITS = datetime.min.replace(tzinfo=UTC)


class JoinLogic(StatefulBatchLogic[Any, Wire, CatalogEntry]):
    """Per product: the catalog entry, and the adds waiting for it (woken at their deadline)."""

    def __init__(self, entry: CatalogEntry | None, wait: timedelta) -> None:
        self.wait = wait
        self.entry = CatalogEntry()
        if entry is not None:
            self._step(restart_waits(entry, datetime.now(UTC), wait), [])

    def _step(self, entry: CatalogEntry, out: list[Wire]) -> tuple[list[Wire], bool]:
        if entry.waiting or self.entry.waiting:
            metrics.tally()[metrics.WAITING] += len(entry.waiting) - len(self.entry.waiting)
        self.entry = entry
        return out, _RETAIN

    def on_batch(self, values: list[Any]) -> tuple[list[Wire], bool]:
        # The clock only matters to an add that has to wait, i.e. before the product's first
        # record (and `known` never goes back): skip the call, about once per add.
        now = _NO_WAITS if self.entry.known else datetime.now(UTC)
        return self._step(*join(self.entry, values, now, self.wait))

    def on_notify(self) -> tuple[list[Wire], bool]:
        return self._expire(datetime.now(UTC))

    def on_eof(self) -> tuple[list[Wire], bool]:
        # Bounded input ended (tests, replays): nothing can arrive any more.
        return self._expire(None)

    def _expire(self, now: datetime | None) -> tuple[list[Wire], bool]:
        entry, due = expire(self.entry, now)
        metrics.tally()[metrics.WAIT_EXPIRED] += len(due)
        return self._step(entry, due)

    def notify_at(self) -> datetime | None:
        return next_deadline(self.entry)

    def snapshot(self) -> CatalogEntry:
        return self.entry


# (customer_to_tuple(state) or None, early arrivals)
FoldSnapshot = tuple[tuple[Any, ...] | None, tuple[Wire, ...]]


class FoldLogic(StatefulBatchLogic[Wire, bytes, FoldSnapshot]):
    """Per customer: the fold's state, plus events that arrived before their predecessor.

    The state is `fastfold`'s tuple (immutable: a snapshot can hand it out as it is, bar the
    lines' conversion) and the fold is `fastfold.apply_wire`, equal to `fold.apply`. It emits
    the records' values: bytewax pairs each with the key, the customerId.
    """

    lines = LineCache()  # per process: carts share their lines and the lines' JSON

    def __init__(self, resume: FoldSnapshot | None) -> None:
        customer, early = resume or (None, ())
        self.customer: State | None = from_snapshot(customer, self.lines) if customer else None
        self.early: dict[int, Wire] | None = {w[VERSION]: w for w in early} or None
        if early:
            metrics.tally()[metrics.EARLY_BUFFERED] += len(early)

    def on_batch(self, values: list[Wire]) -> tuple[list[bytes], bool]:
        if self.early is None:
            # The common case: the next events, in order (nearly always just one).
            version = self.customer[fastfold.VERSION] if self.customer is not None else 0
            for w in values:
                version += 1
                if w[VERSION] != version:
                    break
            else:
                return self._fold(values), _RETAIN
        return self._resequence(values), _RETAIN

    def _fold(self, ready: list[Wire]) -> list[bytes]:
        customer, lines, t, out = self.customer, self.lines, metrics.tally(), []
        for w in ready:
            customer, outcome = apply_wire(customer, w, lines)
            t[outcome] += 1
            out.append(encode_state(customer))
        self.customer = customer
        return out

    def _resequence(self, values: list[Wire]) -> list[bytes]:
        early = self.early if self.early is not None else {}
        held = len(early)
        version = self.customer[fastfold.VERSION] if self.customer is not None else 0
        ready, parked = release_in_order(version + 1, early, values)
        out = self._fold(ready)
        self.early = early or None
        t = metrics.tally()
        if parked or held:
            t[metrics.EARLY] += parked
            t[metrics.EARLY_BUFFERED] += len(early) - held
        if len(values) + held != len(ready) + len(early):
            t[metrics.REPEATS] += len(values) + held - len(ready) - len(early)
        return out

    def on_eof(self) -> tuple[list[bytes], bool]:
        if self.early:
            log.error("customer %s: %d events never got their predecessor (versions %s)",
                      next(iter(self.early.values()))[CUSTOMER], len(self.early),
                      sorted(self.early))
        return [], _RETAIN

    def snapshot(self) -> FoldSnapshot:
        return (to_snapshot(self.customer) if self.customer else None,
                tuple(self.early.values()) if self.early else ())


# ------------------------------------------------------------------------------ wiring


def build_flow(
    config: Config,
    *,
    cart_source: Source[Any] | None = None,
    product_source: Source[Any] | None = None,
    cart_sink: DynamicSink[Any] | None = None,
    dead_letter_sink: DynamicSink[Any] | None = None,
) -> Dataflow:
    """Build the dataflow; tests replace the Kafka sources and sinks with testing ones."""
    brokers = [config.kafka_bootstrap]
    wait = timedelta(seconds=config.product_wait_s)
    flow = Dataflow(FLOW_ID)

    idle = timedelta(milliseconds=config.source_idle_ms)
    # Consumer errors travel as items (logged and skipped in parse): librdkafka retries itself.
    events_in = op.input("cart-events", flow, cart_source or OffsetSafeKafkaSource(
        brokers, [config.topic_cart_events], batch_size=config.source_batch_size,
        raise_on_errors=False, idle_wait=idle))
    products_in = op.input("product-details", flow, product_source or OffsetSafeKafkaSource(
        brokers, [config.topic_products], batch_size=config.source_batch_size,
        raise_on_errors=False, idle_wait=idle))
    events = op.branch("events-ok", op.flat_map_batch("parse-events", events_in,
                                                      parse_cart_events), _is_record)
    products = op.branch("products-ok", op.flat_map_batch("parse-products", products_in,
                                                          parse_products), _is_record)

    # 1. Stamp each customer's events with their version, in log order.
    stamped = op.stateful_batch("sequence", events.trues, SequenceLogic)
    # 2. Adds meet their product (keyed by productId); the other events bypass the join.
    adds = op.branch("adds", stamped, _is_add)
    join_in = op.merge("join-in", op.flat_map_batch("adds-by-product", adds.trues, _by_product),
                       products.trues)
    joined = op.stateful_batch("join", join_in, lambda resume: JoinLogic(resume, wait))
    # 3. Back to each customer, in version order, through the fold.
    fold_in = op.merge("fold-in", op.flat_map_batch("by-customer", joined, _by_customer),
                       adds.falses)
    folded = op.stateful_batch("resequence-fold", fold_in, FoldLogic)

    # (customerId, record) pairs, as bytewax pairs the fold's output with its key.
    op.output("cart-details", folded,
              cart_sink or DeliveredKafkaSink(config.kafka_bootstrap, config.topic_cart_details,
                                              config.delivery_timeout_s))
    letters = op.merge("bad-records", events.falses, products.falses)
    op.output("dead-letters", op.flat_map_batch("encode-dead-letters", letters, _encode_letters),
              dead_letter_sink or DeliveredKafkaSink(config.kafka_bootstrap,
                                                     config.topic_dead_letter,
                                                     config.delivery_timeout_s))
    return flow


def flow_from_env() -> Dataflow:
    """The production flow configured from the environment (`bytewax.run` factory)."""
    return build_flow(Config.from_env())


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run cart_aggregator.flow` looks up `flow`; build it on demand so that
    # importing this module reads no environment.
    if name == "flow":
        return flow_from_env()
    raise AttributeError(name)
