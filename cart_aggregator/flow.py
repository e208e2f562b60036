"""The aggregator dataflow: sequence → product join → resequence and fold.

    python -m bytewax.run 'cart_aggregator.flow:flow_from_env()'   (configured from the environment)

Inputs are `cart-events` (key customerId) and `product-details-events` (key productId). Every
cart event read produces one cart-details record; bad records go to the dead-letter topic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulLogic
from bytewax.outputs import DynamicSink
from prometheus_client import Counter

from cart_aggregator.config import Config
from cart_aggregator.sink import DeliveredKafkaSink
from cart_aggregator.stages import (
    JoinState,
    ProductJoin,
    ProductUpdate,
    ResequenceState,
    Sequenced,
    resequence_and_fold,
    sequence,
)
from cart_contract import (
    CartEvent,
    ContractError,
    DeadLetter,
    EventPosition,
    EventType,
    dead_letter_from_error,
    decode_cart_event,
    decode_product,
    encode_cart_details,
    encode_dead_letter,
)

log = logging.getLogger(__name__)

EVENTS_READ = Counter("cartstream_aggregator_events_read", "Cart events read")
RECORDS_OUT = Counter("cartstream_aggregator_cart_details_emitted", "Cart details emitted")
DEAD_LETTERS = Counter("cartstream_aggregator_dead_letters", "Records sent to the dead letters",
                       ["topic"])
PRODUCTS_READ = Counter("cartstream_aggregator_products_read", "Catalog records read")


@dataclass(frozen=True, slots=True)
class Bad:
    """A record that failed to parse, carried to the dead-letter output."""

    letter: DeadLetter


def _dead(msg: KafkaSourceMessage, err: Exception, stage: str) -> Bad:
    DEAD_LETTERS.labels(msg.topic or "?").inc()
    return Bad(dead_letter_from_error(
        err, source_topic=msg.topic or "", partition=msg.partition or 0,
        offset=msg.offset or 0, key=msg.key, value=msg.value, stage=stage,
    ))


def parse_cart_event(msg: KafkaSourceMessage) -> tuple[CartEvent, EventPosition] | Bad:
    """Decode a cart event; its key must be its customerId (that is what orders it)."""
    try:
        event = decode_cart_event(msg.value or b"")
        key = (msg.key or b"").decode("utf-8", errors="replace")
        if key != event.customer_id:
            raise ContractError("KEY_MISMATCH", f"key {key!r} is not customerId", "key")
    except ContractError as exc:
        return _dead(msg, exc, "aggregator-parse")
    EVENTS_READ.inc()
    return event, EventPosition(event.event_id, msg.partition or 0, msg.offset or 0)


def parse_product(msg: KafkaSourceMessage) -> ProductUpdate | Bad:
    """Decode a catalog record (None product for a tombstone)."""
    try:
        key = (msg.key or b"").decode()
        product = decode_product(key, msg.value)
        pid = product.product_id if product else key
        if not pid:
            raise ContractError("MISSING_FIELD", "a tombstone needs its productId key", "key")
    except (ContractError, UnicodeDecodeError) as exc:
        return _dead(msg, exc, "aggregator-parse")
    PRODUCTS_READ.inc()
    return ProductUpdate(pid, msg.partition or 0, msg.offset or 0, product)


class _JoinLogic(StatefulLogic[Any, Sequenced, JoinState]):
    """Bytewax shell around ProductJoin: items are ProductUpdate or Sequenced adds."""

    def __init__(self, wait: timedelta, resume: JoinState | None) -> None:
        self.join = ProductJoin(wait, resume)

    def on_item(self, value: Any) -> tuple[list[Sequenced], bool]:
        if isinstance(value, ProductUpdate):
            return self.join.on_product(value), StatefulLogic.RETAIN
        return self.join.on_add(value, datetime.now(UTC)), StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[Sequenced], bool]:
        return self.join.expire(datetime.now(UTC)), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[Sequenced], bool]:
        # Bounded input ended (tests, replays): nothing more can arrive, so reject the waiters.
        return self.join.expire(datetime.max.replace(tzinfo=UTC)), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.join.next_deadline()

    def snapshot(self) -> JoinState:
        # Products and waiting events are immutable: a shallow copy is a consistent snapshot.
        st = self.join.state
        return JoinState(st.product, st.seen, st.offset, list(st.pending))


class _ResequenceLogic(StatefulLogic[Sequenced, Any, ResequenceState]):
    """Bytewax shell around resequence_and_fold, with a cheap snapshot.

    The stock stateful_flat_map deep-copies its state at every snapshot; that copy was the
    single largest cost of the flow. Everything inside ResequenceState but the `early` dict is
    immutable, so copying that dict is enough.
    """

    def __init__(self, resume: ResequenceState | None) -> None:
        self.state = resume or ResequenceState()

    def on_item(self, value: Sequenced) -> tuple[list[Any], bool]:
        self.state, out = resequence_and_fold(self.state, value)
        return out, StatefulLogic.RETAIN

    def snapshot(self) -> ResequenceState:
        st = self.state
        return ResequenceState(st.next_seq, dict(st.early), st.customer)


def _records_only(step: str, stream: Stream[Any]) -> Stream[KafkaSourceMessage]:
    """Drop consumer errors (logged): they are not records, and librdkafka retries on its own."""

    def keep(item: Any) -> bool:
        if isinstance(item, KafkaError):
            log.warning("Kafka consumer error: %s", item.err)
            return False
        return True

    return op.filter(step, stream, keep)


def _split(stream: Stream[Any], step: str) -> tuple[Stream[Any], Stream[Bad]]:
    b = op.branch(step, stream, lambda x: not isinstance(x, Bad))
    return b.trues, b.falses


def build_flow(
    config: Config,
    *,
    cart_source: Source | None = None,
    product_source: Source | None = None,
    cart_sink: DynamicSink | None = None,
    dead_letter_sink: DynamicSink | None = None,
) -> Dataflow:
    """Build the dataflow; tests swap the Kafka sources and sinks for testing ones."""
    flow = Dataflow("cartstream-aggregator")
    brokers = [config.kafka_bootstrap]
    carts_in = op.input("cart-events", flow, cart_source or KafkaSource(
        brokers, [config.topic_cart_events],
        batch_size=config.source_batch_size, raise_on_errors=False))
    products_in = op.input("products", flow, product_source or KafkaSource(
        brokers, [config.topic_products],
        batch_size=config.source_batch_size, raise_on_errors=False))

    carts_in = _records_only("cart-records", carts_in)
    products_in = _records_only("product-records", products_in)
    events, bad_events = _split(op.map("parse-events", carts_in, parse_cart_event), "events-ok")
    products, bad_products = _split(op.map("parse-products", products_in, parse_product),
                                    "products-ok")

    # 1. Number each customer's events in log order (one customer = one partition = in order).
    seq = op.stateful_map("sequence", op.key_on("by-customer", events,
                                                 lambda x: x[0].customer_id), sequence)
    adds = op.branch("adds", op.key_rm("unkey", seq),
                     lambda s: s.event.type is EventType.ITEM_ADDED)

    # 2. Join adds with the catalog, keyed by product; other events bypass the join.
    wait = timedelta(seconds=config.product_wait_s)
    to_join = op.merge(
        "join-in",
        op.key_on("adds-by-product", adds.trues, lambda s: s.event.item_id),
        op.key_on("products-by-id", products, lambda p: p.product_id),
    )
    joined = op.key_rm("joined", op.stateful("product-join", to_join,
                                             lambda resume: _JoinLogic(wait, resume)))

    # 3. Back into each customer's order, then fold.
    both = op.merge("fold-in", joined, adds.falses)
    carts = op.stateful(
        "resequence-and-fold", op.key_on("again-by-customer", both,
                                         lambda s: s.event.customer_id),
        _ResequenceLogic,
    )

    def to_record(kv: tuple[str, Any]) -> tuple[bytes, bytes]:
        RECORDS_OUT.inc()
        return kv[0].encode(), encode_cart_details(kv[1])

    op.output("cart-details", op.map("encode", carts, to_record),
              cart_sink or DeliveredKafkaSink(config.kafka_bootstrap, config.topic_cart_details))
    letters = op.merge("bad", bad_events, bad_products)
    op.output("dead-letters",
              op.map("encode-dead", letters,
                     lambda b: (b.letter.key, encode_dead_letter(b.letter))),
              dead_letter_sink or DeliveredKafkaSink(config.kafka_bootstrap,
                                                     config.topic_dead_letter))
    return flow


def flow_from_env() -> Dataflow:
    """The production flow, configured from the environment (`bytewax.run` factory)."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return build_flow(Config.from_env())
