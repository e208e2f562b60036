"""The reservation model fed from a real request topic (one partition), for oracles."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from cart_aggregator.reserve import decode_record
from cart_contract.settings import client_config
from tests.support.fold_model import ReservationModel


def model_of_topic(kafka: str | Mapping[str, Any], topic: str) -> ReservationModel:
    """The reservation model after every record of `topic` so far, in offset order.

    `kafka`: bootstrap servers, or a client config (a secure system's `System.kafka()`).
    """
    model = ReservationModel()
    consumer = Consumer({**client_config(kafka), "enable.auto.commit": False,
                         "group.id": f"oracle-{uuid.uuid4().hex}"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        if high > low:
            consumer.assign([TopicPartition(topic, 0, low)])
            seen = low
            while seen < high:
                for msg in consumer.consume(1000, timeout=5):
                    if msg.error():
                        continue
                    model.feed(decode_record(msg.value()))
                    seen = msg.offset() + 1
    finally:
        consumer.close()
    return model
