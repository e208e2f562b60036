-- Read models of cart details and the catalog.
CREATE TABLE IF NOT EXISTS carts (
    cart_id        text PRIMARY KEY,
    customer_id    text NOT NULL,
    generation     int NOT NULL,
    status         text NOT NULL,
    total_qty      int NOT NULL,
    total_price    numeric(14, 2) NOT NULL,
    version        bigint NOT NULL,
    last_partition int NOT NULL,
    last_offset    bigint NOT NULL,
    last_event_id  text NOT NULL,
    updated_at     timestamptz NOT NULL,
    doc            jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS carts_by_customer ON carts (customer_id, generation DESC);
CREATE INDEX IF NOT EXISTS carts_by_status ON carts (status, cart_id);
CREATE INDEX IF NOT EXISTS carts_by_total ON carts (total_price, cart_id);

CREATE TABLE IF NOT EXISTS cart_lines (
    cart_id     text NOT NULL,
    item_id     text NOT NULL,
    position    int NOT NULL,
    item_name   text NOT NULL,
    qty         int NOT NULL,
    unit_price  numeric(14, 2) NOT NULL,
    total_price numeric(14, 2) NOT NULL,
    PRIMARY KEY (cart_id, item_id)
);
CREATE INDEX IF NOT EXISTS cart_lines_by_item ON cart_lines (item_id);

CREATE TABLE IF NOT EXISTS products (
    product_id    text PRIMARY KEY,
    product_name  text NOT NULL,
    price         numeric(14, 2) NOT NULL,
    stock_qty     int NOT NULL,
    deleted       boolean NOT NULL DEFAULT false,
    source_offset bigint NOT NULL,
    updated_at    timestamptz NOT NULL
);
