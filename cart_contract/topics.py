"""Default topic names; deployments override them through the environment."""

CART_EVENTS = "cart-events"
PRODUCT_DETAILS = "product-details-events"
CART_DETAILS = "cart-details-event"
DEAD_LETTER = "cartstream-dead-letter"
