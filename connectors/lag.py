"""Consumer lag per group from the brokers (Admin API), and the aggregator's from its metrics.

What `cartstream lag` (and so `make status`) prints. A group's lag on a topic is the sum over
the topic's partitions of the high watermark minus the committed offset (a partition without a
commit counts from its low watermark, where the group would start). The aggregator commits no
group offsets (its positions are in its recovery snapshots): its lag is what its own metrics
port reports.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from connectors.metrics import partition_lag


@dataclass(frozen=True)
class GroupLag:
    """One consumer group on one topic."""

    group: str
    topic: str
    partitions: int
    members: int | None
    state: str
    lag: int


def group_lags(bootstrap: str, prefix: str, timeout_s: float = 5.0) -> list[GroupLag]:
    """The lag of every group named `prefix`… that has committed offsets; raises KafkaException
    when the brokers do not answer."""
    from confluent_kafka import (
        ConsumerGroupTopicPartitions,
        KafkaException,
        TopicPartition,
    )
    from confluent_kafka.admin import AdminClient

    quiet = {"bootstrap.servers": bootstrap, "log_level": 0}  # an outage is our one error line
    admin = AdminClient(quiet)
    admin.list_topics(timeout=timeout_s)  # brokers that do not answer: KafkaException
    listed = admin.list_consumer_groups(request_timeout=timeout_s).result()
    if listed.errors:
        raise KafkaException(listed.errors[0])
    names = sorted(g.group_id for g in listed.valid if g.group_id.startswith(prefix))
    if not names:
        return []
    described = {n: f.result() for n, f in
                 admin.describe_consumer_groups(names, request_timeout=timeout_s).items()}
    from confluent_kafka import Consumer

    # Reads watermarks only: never subscribes, so it joins no group.
    probe = Consumer({**quiet, "group.id": f"{prefix}-lag-probe", "enable.auto.commit": False})
    try:
        rows = []
        for name in names:
            request = [ConsumerGroupTopicPartitions(name)]
            result = admin.list_consumer_group_offsets(
                request, request_timeout=timeout_s)[name].result()
            committed: dict[str, dict[int, int]] = {}
            for tp in result.topic_partitions or []:
                if tp.error is not None:
                    raise KafkaException(tp.error)
                committed.setdefault(tp.topic, {})[tp.partition] = tp.offset
            group = described[name]
            for topic, offsets in sorted(committed.items()):
                meta = probe.list_topics(topic, timeout=timeout_s).topics[topic]
                lag = 0
                for p in meta.partitions:
                    low, high = probe.get_watermark_offsets(TopicPartition(topic, p),
                                                            timeout=timeout_s)
                    lag += partition_lag(offsets.get(p, -1), low, high)
                rows.append(GroupLag(name, topic, len(meta.partitions), len(group.members),
                                     group.state.name, lag))
        return rows
    finally:
        probe.close()


def aggregator_lags(metrics_url: str, timeout_s: float = 2.0) -> list[GroupLag]:
    """The aggregator's lag per topic, summed from its metrics port; raises OSError when it
    does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=timeout_s) as response:
        text = response.read().decode()
    lags: dict[str, int] = {}
    partitions: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "cartstream_aggregator_consumer_lag":
            continue
        for sample in family.samples:
            topic = sample.labels["topic"]
            lags[topic] = lags.get(topic, 0) + int(sample.value)
            partitions[topic] = partitions.get(topic, 0) + 1
    return [GroupLag("aggregator", t, partitions[t], None, "-", lags[t]) for t in sorted(lags)]


def table(rows: list[GroupLag]) -> str:
    """The rows as aligned columns."""
    head = ("GROUP", "TOPIC", "PARTITIONS", "MEMBERS", "STATE", "LAG")
    cells = [head] + [(r.group, r.topic, str(r.partitions),
                       "-" if r.members is None else str(r.members), r.state, str(r.lag))
                      for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)
