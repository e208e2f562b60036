"""Default topic names; deployments override them through the environment."""

CART_EVENTS = "cart-events"
PRODUCT_DETAILS = "product-details-events"
CART_DETAILS = "cart-details-event"
DEAD_LETTER = "cartstream-dead-letter"
# The stock decisions' request log: checkouts' reservation requests and catalog records, one
# partition, in the order the reservation stage decides them (docs/architecture.md).
CART_RESERVATIONS = "cart-reservations"
# Reserved units per product (compacted, key productId), published by the reservation stage.
PRODUCT_RESERVATIONS = "product-reservations"

# The aggregator's consumer groups. Its sources assign partitions and keep offsets in the
# recovery snapshots, so the group only names its consumers (librdkafka still looks up its
# coordinator); the lag monitor reads watermarks. Both need an ACL in the secure profile.
AGGREGATOR_SOURCE_GROUP = "BYTEWAX_IGNORED"
AGGREGATOR_LAG_GROUP = "cartstream-aggregator-lag"
