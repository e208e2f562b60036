"""infra.topics.wait_for_broker: asks for metadata until the broker answers or time is up."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaException

from infra import topics


class FlakyAdmin:
    failures = 0

    def __init__(self, settings: dict[str, Any]) -> None:
        self.calls = 0

    def list_topics(self, timeout: float) -> object:
        self.calls += 1
        if self.calls <= FlakyAdmin.failures:
            raise KafkaException("Failed to get metadata: Local: Broker transport failure")
        # Once it answers, a cluster's brokers register one per call.
        return SimpleNamespace(brokers=dict.fromkeys(range(self.calls - FlakyAdmin.failures)))


def test_a_broker_that_answers_late_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "AdminClient", FlakyAdmin)
    FlakyAdmin.failures = 1  # costs one real wait of at most 0.5 s
    admin = topics.wait_for_broker("k:1", 60)
    assert admin.calls == 2  # type: ignore[attr-defined]


def test_it_waits_until_as_many_brokers_as_asked_have_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(topics, "AdminClient", FlakyAdmin)
    FlakyAdmin.failures = 0  # answers at once with 1 broker, then 2, then 3
    admin = topics.wait_for_broker("k:1", 60, brokers=3)
    assert admin.calls == 3  # type: ignore[attr-defined]


def test_too_few_brokers_is_a_timeout_saying_how_many(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "AdminClient", FlakyAdmin)
    FlakyAdmin.failures = 0
    with pytest.raises(TimeoutError, match=r"did not answer within 0s: [12] of 3 brokers up"):
        topics.wait_for_broker("k:1", 0.01, brokers=3)


def test_a_broker_that_never_answers_is_a_timeout_naming_the_last_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(topics, "AdminClient", FlakyAdmin)
    FlakyAdmin.failures = 10**9
    with pytest.raises(TimeoutError, match="k:1 did not answer within 0s: .*transport failure"):
        topics.wait_for_broker("k:1", 0.01)
