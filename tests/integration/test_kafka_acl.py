"""infra/kafka_acl.py against a private broker in the secure profile's configuration.

`configure` is idempotent and converges: run twice it changes nothing, and an ACL of one of its
principals that GRANTS does not name is removed. Each principal can do what it is granted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from infra import kafka_acl
from infra.topics import ensure_topics, topic_specs
from tests.integration.kafka_private import PrivateKafka
from tests.support.kafka_secure import SecureKafka, principals

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[SecureKafka]:
    kafka = PrivateKafka(tmp_path_factory.mktemp("kafka-acl"), secure=True)
    kafka.start(timeout_s=300)  # a loaded machine takes minutes to start a JVM
    with kafka:
        yield SecureKafka(kafka.bootstrap, kafka.admin_config())


def _acls(admin: AdminClient, user: str) -> set[tuple]:
    found = admin.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user}", None,
        AclOperation.ANY, AclPermissionType.ANY)).result()
    return {(b.restype, b.name, b.operation) for b in found}


def test_configure_is_idempotent_and_removes_what_grants_do_not_name(broker, tmp_path: Path
                                                                      ) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}-"
    env = {"CONSUMER_GROUP_PREFIX": prefix + "g"}
    admin = AdminClient(broker.admin)
    made = principals(broker, prefix, tmp_path, env)
    first = {p: _acls(admin, made.user(p)) for p in kafka_acl.GRANTS}
    assert first["catalog"] == {(ResourceType.TOPIC, "product-details-events",
                                 AclOperation.WRITE)}
    # An extra right given by hand to the catalog principal, then configure again.
    extra = AclBinding(ResourceType.TOPIC, "cart-events", ResourcePatternType.LITERAL,
                       f"User:{made.user('catalog')}", "*", AclOperation.WRITE,
                       AclPermissionType.ALLOW)
    admin.create_acls([extra])[extra].result()
    assert len(_acls(admin, made.user("catalog"))) == 2
    done = kafka_acl.configure(admin, kafka_acl.passwords(tmp_path), env, user_prefix=prefix)
    assert "1 stale removed" in done[-1]
    assert {p: _acls(admin, made.user(p)) for p in kafka_acl.GRANTS} == first
    done = kafka_acl.configure(admin, kafka_acl.passwords(tmp_path), env, user_prefix=prefix)
    assert "stale" not in done[-1]


def test_each_principal_does_what_it_is_granted_and_nothing_else(broker, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}-"
    tag = uuid.uuid4().hex[:6]
    env = {"TOPIC_CART_EVENTS": f"acl-{tag}-events", "TOPIC_PRODUCTS": f"acl-{tag}-products",
           "TOPIC_CART_DETAILS": f"acl-{tag}-details", "TOPIC_DEAD_LETTER": f"acl-{tag}-dead",
           "TOPIC_CART_RESERVATIONS": f"acl-{tag}-creq",
           "TOPIC_PRODUCT_RESERVATIONS": f"acl-{tag}-pres", "CONSUMER_GROUP_PREFIX": prefix}
    ensure_topics(AdminClient(broker.admin), topic_specs(env))
    made = principals(broker, prefix, tmp_path, env)

    def produce(principal: str, topic: str) -> KafkaError | None:
        producer = Producer(broker.client(made.user(principal), made.password(principal),
                                          **{"enable.idempotence": True, "log_level": 0,
                                             "message.timeout.ms": 20000}))
        got: list = []
        producer.produce(topic, b"v", key=b"k", on_delivery=lambda err, _m: got.append(err))
        producer.flush(30)
        return got[0] if got else KafkaError(KafkaError._MSG_TIMED_OUT)

    assert produce("write-api", env["TOPIC_CART_EVENTS"]) is None
    assert produce("write-api", env["TOPIC_PRODUCTS"]).code() == (
        KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert produce("sink-redis", env["TOPIC_DEAD_LETTER"]) is None
    assert produce("sink-redis", env["TOPIC_CART_DETAILS"]).code() == (
        KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert produce("aggregator", env["TOPIC_CART_DETAILS"]) is None

    def first_read(principal: str, topic: str, group: str) -> object:
        consumer = Consumer(broker.client(made.user(principal), made.password(principal),
                                          **{"group.id": group, "log_level": 0,
                                             "auto.offset.reset": "earliest"}))
        try:
            consumer.subscribe([topic])
            for _ in range(30):
                msg = consumer.poll(1)
                if msg is not None:
                    return msg.error().code() if msg.error() else msg.value()
            return None
        finally:
            consumer.close()

    assert first_read("sink-redis", env["TOPIC_CART_DETAILS"], f"{prefix}-redis") == b"v"
    # Its topic, but another sink's group.
    assert first_read("sink-redis", env["TOPIC_CART_DETAILS"], f"{prefix}-postgres") == (
        KafkaError.GROUP_AUTHORIZATION_FAILED)
