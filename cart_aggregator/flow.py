"""The aggregator dataflow: parse → fold by customer in log order (adds: ↔ product join) → Kafka.

    cartstream aggregate                           # recovery, metrics, cluster flags (see README)
    python -m bytewax.run cart_aggregator.flow     # the bare flow, configured from the environment

Inputs: `cart-events` (key customerId) and `product-details-events` (key productId, compacted).
Every cart event read yields one cart-details record (applied, rejected or duplicate), keyed by
customerId; records that cannot be parsed go to the dead-letter topic.

Every event goes straight to its customer's fold, in log order: a partition is read by one
worker, in order, and a customer's events travel one exchange channel. An add also goes, as a
request, to the product-keyed join, whose answer (the product as of then) comes back keyed by
customer; the fold holds the customer's later events until the add has its answer. The logic is
in `cart_aggregator.fold` and `cart_aggregator.join`; this module wires them into bytewax.

A checkout of an open cart waits for stock the same way (`cart_aggregator.reserve`): the fold
writes its reservation request to `cart-reservations` (one partition; catalog records are
forwarded there too), which the flow also reads as an input; the reservation stage decides in
that topic's order and its answer comes back keyed by customer.
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

from cart_aggregator import metrics
from cart_aggregator.config import Config
from cart_aggregator.fold import (
    ADD,
    CHECKOUT,
    CUSTOMER,
    ITEM,
    OFFSET,
    SHAPE,
    TYPE,
    CustomerState,
    LineCache,
    SavedFold,
    Wire,
    apply,
    encode_state,
    from_snapshot,
    needs_reservation,
    reservation_request,
    to_snapshot,
)
from cart_aggregator.join import (
    Answer,
    CatalogEntry,
    ProductRecord,
    expire,
    join,
    next_deadline,
    product_tuple,
    restart_waits,
)
from cart_aggregator.reserve import (
    LEDGER_KEY,
    Ledger,
    apply_records,
    decode_record,
    encode_product_record,
    encode_request,
    encode_reserved,
)
from cart_aggregator.sink import DeliveredKafkaSink
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
# when a stage's snapshot changes; SHAPE follows the fold's snapshot layout on its own.
# 5: no sequence stage; the fold's snapshot holds its waiting events and early answers.
# 6: the reservation stage (stock at checkout) and its input.
STATE_FORMAT = f"cartstream-aggregator/6-{SHAPE}"
# Older formats this flow still resumes from (the marker is then rewritten, so an older flow
# no longer takes the directory). None: format 4 had a sequence stage and versioned events.
READABLE_FORMATS: tuple[str, ...] = ()
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
    in order, and the fold relies on that.
    """
    out: list[Any] = []
    good = 0
    decode, type_name = decode_cart_event_fields, _TYPE_NAMES
    for msg in msgs:
        if type(msg) is KafkaError:
            _consumer_error(msg)
            continue
        try:
            # The event's fields only: no CartEvent per event (see fold.Wire).
            eid, etype, cid, item, qty, at, _, expected = decode(msg.value or b"")
            if msg.key != cid.encode():
                raise ContractError("KEY_MISMATCH", f"key {msg.key!r} is not the customerId "
                                    f"{cid!r}", "key")
        except ContractError as exc:
            out.append(_dead_letter(msg, exc))
            continue
        out.append((cid, (eid, type_name[etype], cid, item, qty, at, msg.partition,
                          msg.offset, expected)))
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


# A parse step's output split in two: op.branch would call a predicate per item from Rust,
# a comprehension per batch costs a fraction of that.
def _records(batch: list[Any]) -> list[Any]:
    return [x for x in batch if type(x) is tuple]


def _letters(batch: list[Any]) -> list[Any]:
    return [x for x in batch if type(x) is not tuple]


def parse_reservations(msgs: list[Any]) -> list[Any]:
    """Decode the request topic: (LEDGER_KEY, (offset, record)) pairs, or DeadLetters."""
    out: list[Any] = []
    for msg in msgs:
        if type(msg) is KafkaError:
            _consumer_error(msg)
            continue
        try:
            out.append((LEDGER_KEY, (msg.offset, decode_record(msg.value))))
        except ContractError as exc:
            out.append(_dead_letter(msg, exc))
    return out


def _requests_by_product(batch: list[tuple[str, Wire]]) -> list[tuple[str, tuple[str, int]]]:
    """The adds of a batch as requests to the join: (productId, (customerId, offset))."""
    return [(w[ITEM], (w[CUSTOMER], w[OFFSET])) for _, w in batch if w[TYPE] == ADD]


def _answers_by_customer(batch: list[tuple[str, tuple[str, Answer]]]) -> list[tuple[str, Answer]]:
    return [v for _, v in batch]


# The fold emits records (bytes) and reservation requests (tuples); the ledger emits answers
# (customerId, Answer) and reserved counts (productId, reserved, version).
def _fold_records(batch: list[tuple[str, Any]]) -> list[tuple[str, bytes]]:
    return [x for x in batch if type(x[1]) is bytes]


def _fold_requests(batch: list[tuple[str, Any]]) -> list[tuple[bytes, bytes]]:
    return [encode_request(x[1]) for x in batch if type(x[1]) is not bytes]


def _forward_products(batch: list[tuple[str, ProductRecord]]) -> list[tuple[bytes, bytes]]:
    return [encode_product_record(*rec) for _, rec in batch]


def _ledger_answers(batch: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, Answer]]:
    return [v for _, v in batch if len(v) == _ANSWER_LEN]


def _ledger_counts(batch: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[bytes, bytes]]:
    return [encode_reserved(*v) for _, v in batch if len(v) != _ANSWER_LEN]


def _encode_letters(batch: list[DeadLetter]) -> list[tuple[bytes | None, bytes]]:
    return [(dl.key, encode_dead_letter(dl)) for dl in batch]


# ------------------------------------------------------------------- stateful stages
# Each logic keeps immutable state (or copies it in snapshot), so a snapshot is consistent
# with the epoch it was taken in even though bytewax pickles it later.

# Stands in for "now" when no request can start waiting (never read by `join` then).
_NO_WAITS = datetime.min.replace(tzinfo=UTC)


class JoinLogic(StatefulBatchLogic[Any, tuple[str, Answer], CatalogEntry]):
    """Per product: the catalog entry, and the requests waiting for it (woken at their deadline)."""

    def __init__(self, entry: CatalogEntry | None, wait: timedelta) -> None:
        self.wait = wait
        self.entry = CatalogEntry()
        if entry is not None:
            self._step(restart_waits(entry, datetime.now(UTC), wait), [])

    def _step(self, entry: CatalogEntry,
              out: list[tuple[str, Answer]]) -> tuple[list[tuple[str, Answer]], bool]:
        if entry.waiting or self.entry.waiting:
            metrics.tally()[metrics.WAITING] += len(entry.waiting) - len(self.entry.waiting)
        self.entry = entry
        return out, _RETAIN

    def on_batch(self, values: list[Any]) -> tuple[list[tuple[str, Answer]], bool]:
        # The clock only matters to a request that has to wait, i.e. before the product's first
        # record (and `known` never goes back): skip the call, about once per request.
        now = _NO_WAITS if self.entry.known else datetime.now(UTC)
        return self._step(*join(self.entry, values, now, self.wait))

    def on_notify(self) -> tuple[list[tuple[str, Answer]], bool]:
        return self._expire(datetime.now(UTC))

    def on_eof(self) -> tuple[list[tuple[str, Answer]], bool]:
        # Bounded input ended (tests, replays): nothing can arrive any more.
        return self._expire(None)

    def _expire(self, now: datetime | None) -> tuple[list[tuple[str, Answer]], bool]:
        entry, due = expire(self.entry, now)
        metrics.tally()[metrics.WAIT_EXPIRED] += len(due)
        return self._step(entry, due)

    def notify_at(self) -> datetime | None:
        return next_deadline(self.entry)

    def snapshot(self) -> CatalogEntry:
        return self.entry


class ReserveLogic(StatefulBatchLogic[Any, tuple[Any, ...], tuple[Any, ...]]):
    """The one reservation stage (key LEDGER_KEY): decides checkouts in request-topic order."""

    def __init__(self, resume: tuple[Any, ...] | None) -> None:
        self.ledger = Ledger.from_saved(resume)

    def on_batch(self, values: list[Any]) -> tuple[list[tuple[Any, ...]], bool]:
        # One partition and one key: values come in topic order.
        answers, counts = apply_records(self.ledger, values)
        metrics.tally()[metrics.RESERVATIONS] += len(answers)
        return [*answers, *counts], _RETAIN

    def snapshot(self) -> tuple[Any, ...]:
        return self.ledger.saved()


# Event types the fold can only apply with an answer from a keyed stage: an add needs its
# product from the join, a checkout of an open cart its reservation (`needs_reservation`).
# The fold holds a customer's later events until that answer is in.
AWAITS_ANSWER = frozenset({ADD, CHECKOUT})
# An Answer is (offset, answer); a Wire has 9 fields.
_ANSWER_LEN = 2
_MISSING = object()


class FoldLogic(StatefulBatchLogic[Any, bytes, tuple[Any, ...]]):
    """Per customer: the fold's state, the events waiting for an answer, and early answers.

    Events arrive in log order. An event of a type in AWAITS_ANSWER is applied once its answer
    (keyed by its offset) is in; until then it and every later event of the customer wait in
    `waiting`, in order. Answers travel another path, so one may come before its event: it
    waits in `answers`. Versions are counted by the fold itself. Emits the records' values:
    bytewax pairs each with the key, the customerId.
    """

    lines = LineCache()  # per process: carts share their lines and the lines' JSON

    def __init__(self, resume: tuple[Any, ...] | None) -> None:
        saved = SavedFold(*resume) if resume else SavedFold(None, (), ())
        self.state: CustomerState | None = (
            from_snapshot(saved.state, self.lines) if saved.state else None)
        self.waiting: list[Wire] | None = list(saved.waiting) or None
        self.answers: dict[int, Any] | None = dict(saved.answers) or None
        self._count_held(0, 0)

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        state, waiting, answers = self.state, self.waiting, self.answers
        # Gauges move only for a customer with something held (before or after the batch).
        held_before = (len(waiting) if waiting else 0, len(answers) if answers else 0)
        lines, t, out, awaits = self.lines, metrics.tally(), [], AWAITS_ANSWER
        for v in values:
            if len(v) == _ANSWER_LEN:
                if waiting is None or waiting[0][OFFSET] != v[0]:
                    if answers is None:
                        answers = {}
                    answers[v[0]] = v[1]
                    continue
                # The awaited answer: apply its event, then the events held behind it up to
                # the next one whose answer is not in yet.
                held, waiting = waiting, None
                state, outcome = apply(state, held[0], v[1], lines)
                t[outcome] += 1
                out.append(encode_state(state))
                for i in range(1, len(held)):
                    w = held[i]
                    answer = None
                    if w[TYPE] in awaits and (w[TYPE] == ADD or needs_reservation(state, w)):
                        answer = answers.pop(w[OFFSET], _MISSING) if answers else _MISSING
                        if answer is _MISSING:
                            waiting = held[i:]
                            if w[TYPE] == CHECKOUT:
                                out.append(reservation_request(state, w))
                            break
                    state, outcome = apply(state, w, answer, lines)
                    t[outcome] += 1
                    out.append(encode_state(state))
                continue
            if waiting is not None:
                waiting.append(v)
                continue
            answer = None
            if v[TYPE] in awaits and (v[TYPE] == ADD or needs_reservation(state, v)):
                answer = answers.pop(v[OFFSET], _MISSING) if answers else _MISSING
                if answer is _MISSING:
                    waiting = [v]
                    if v[TYPE] == CHECKOUT:
                        # Asked here, not by a stage of its own: the request holds the cart as
                        # the fold has it just before the checkout.
                        out.append(reservation_request(state, v))  # type: ignore[arg-type]
                    continue
            state, outcome = apply(state, v, answer, lines)
            t[outcome] += 1
            out.append(encode_state(state))
        self.state, self.waiting, self.answers = state, waiting, answers or None
        if waiting or answers or held_before != (0, 0):
            self._count_held(*held_before)
        return out, _RETAIN

    def _count_held(self, waiting_before: int, answers_before: int) -> None:
        t = metrics.tally()
        t[metrics.HELD] += (len(self.waiting) if self.waiting else 0) - waiting_before
        t[metrics.EARLY_ANSWERS] += (len(self.answers) if self.answers else 0) - answers_before

    def on_eof(self) -> tuple[list[bytes], bool]:
        if self.waiting:
            log.error("customer %s: %d events never got the answer they wait for (offsets %s)",
                      self.waiting[0][CUSTOMER], len(self.waiting),
                      [w[OFFSET] for w in self.waiting])
        return [], _RETAIN

    def snapshot(self) -> tuple[Any, ...]:
        # SavedFold's layout as a plain tuple (fold.SHAPE); the lists are copied.
        return (to_snapshot(self.state) if self.state else None,
                tuple(self.waiting) if self.waiting else (),
                tuple(self.answers.items()) if self.answers else ())


# ------------------------------------------------------------------------------ wiring


def build_flow(
    config: Config,
    *,
    cart_source: Source[Any] | None = None,
    product_source: Source[Any] | None = None,
    cart_sink: DynamicSink[Any] | None = None,
    dead_letter_sink: DynamicSink[Any] | None = None,
    reservation_source: Source[Any] | None = None,
    reservation_sink: DynamicSink[Any] | None = None,
    reserved_sink: DynamicSink[Any] | None = None,
) -> Dataflow:
    """Build the dataflow; tests replace the Kafka sources and sinks with testing ones.

    `reservation_sink` writes the request topic `reservation_source` reads: tests that replace
    one replace both with a loop (tests/support/loopback.py).
    """
    kafka = config.kafka_client()
    brokers = [kafka["bootstrap.servers"]]
    # The principal's SASL settings, when secure (bytewax's brokers + add_config split).
    security = {k: v for k, v in kafka.items() if k != "bootstrap.servers"}
    wait = timedelta(seconds=config.product_wait_s)
    flow = Dataflow(FLOW_ID)

    idle = timedelta(milliseconds=config.source_idle_ms)
    # Consumer errors travel as items (logged and skipped in parse): librdkafka retries itself.
    events_in = op.input("cart-events", flow, cart_source or OffsetSafeKafkaSource(
        brokers, [config.topic_cart_events], batch_size=config.source_batch_size,
        raise_on_errors=False, idle_wait=idle, add_config=security))
    products_in = op.input("product-details", flow, product_source or OffsetSafeKafkaSource(
        brokers, [config.topic_products], batch_size=config.source_batch_size,
        raise_on_errors=False, idle_wait=idle, add_config=security))
    reservations_in = op.input("cart-reservations", flow, reservation_source or
                               OffsetSafeKafkaSource(
        brokers, [config.topic_cart_reservations], batch_size=config.source_batch_size,
        raise_on_errors=False, idle_wait=idle, add_config=security))
    parsed_events = op.flat_map_batch("parse-events", events_in, parse_cart_events)
    parsed_products = op.flat_map_batch("parse-products", products_in, parse_products)
    events = op.flat_map_batch("events-ok", parsed_events, _records)
    products = op.flat_map_batch("products-ok", parsed_products, _records)

    # Adds ask the product-keyed join for their product; the answers come back by customer.
    requests = op.flat_map_batch("requests-by-product", events, _requests_by_product)
    joined = op.stateful_batch("join", op.merge("join-in", requests, products),
                               lambda resume: JoinLogic(resume, wait))
    answers = op.flat_map_batch("answers-by-customer", joined, _answers_by_customer)
    # Checkouts' reservations, decided in the request topic's order by one stage.
    parsed_reservations = op.flat_map_batch("parse-reservations", reservations_in,
                                            parse_reservations)
    ledger = op.stateful_batch("reserve", op.flat_map_batch(
        "reservations-ok", parsed_reservations, _records), ReserveLogic)
    reserved = op.flat_map_batch("reservation-answers", ledger, _ledger_answers)
    # Every event, in log order, and the answers, into the customer's fold.
    folded_all = op.stateful_batch("fold", op.merge("fold-in", events, answers, reserved),
                                   FoldLogic)
    folded = op.flat_map_batch("fold-records", folded_all, _fold_records)

    # Requests and forwarded catalog records through one sink: within a worker a product's
    # record is written before any request that could only have been made after reading it.
    op.output("reservation-requests", op.merge(
        "request-log", op.flat_map_batch("products-forward", products, _forward_products),
        op.flat_map_batch("fold-requests", folded_all, _fold_requests)),
        reservation_sink or DeliveredKafkaSink(kafka,
                                               config.topic_cart_reservations,
                                               config.delivery_timeout_s))
    op.output("reserved-counts", op.flat_map_batch("encode-counts", ledger, _ledger_counts),
              reserved_sink or DeliveredKafkaSink(kafka,
                                                  config.topic_product_reservations,
                                                  config.delivery_timeout_s))

    # (customerId, record) pairs, as bytewax pairs the fold's output with its key.
    op.output("cart-details", folded,
              cart_sink or DeliveredKafkaSink(kafka, config.topic_cart_details,
                                              config.delivery_timeout_s))
    letters = op.merge("bad-records", op.flat_map_batch("events-bad", parsed_events, _letters),
                       op.flat_map_batch("products-bad", parsed_products, _letters),
                       op.flat_map_batch("reservations-bad", parsed_reservations, _letters))
    op.output("dead-letters", op.flat_map_batch("encode-dead-letters", letters, _encode_letters),
              dead_letter_sink or DeliveredKafkaSink(kafka,
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
