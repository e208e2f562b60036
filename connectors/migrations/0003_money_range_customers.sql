-- One money range (cart_contract/limits.py): the largest cart total, 2,000,000,000,000,000.00,
-- has 16 integer digits; numeric(20, 2) (limits.MONEY_SQL) holds it and every price exactly.
ALTER TABLE carts ALTER COLUMN total_price TYPE numeric(20, 2);
ALTER TABLE cart_lines ALTER COLUMN unit_price TYPE numeric(20, 2);
ALTER TABLE cart_lines ALTER COLUMN total_price TYPE numeric(20, 2);
ALTER TABLE products ALTER COLUMN price TYPE numeric(20, 2);

-- The customer's current record (the cart-details record as the aggregator wrote it, with its
-- "customer" part): what GET /api/v1/<customerId> answers when Redis cannot. A carts row is
-- the cart's own part only, so an order's row never changes after its checkout.
CREATE TABLE IF NOT EXISTS customers (
    customer_id    text PRIMARY KEY,
    version        bigint NOT NULL,
    last_partition int NOT NULL,
    last_offset    bigint NOT NULL,
    doc            jsonb NOT NULL
);
INSERT INTO customers (customer_id, version, last_partition, last_offset, doc)
SELECT DISTINCT ON (customer_id) customer_id, version, last_partition, last_offset, doc
FROM carts ORDER BY customer_id, generation DESC
ON CONFLICT (customer_id) DO NOTHING;

-- No phantom carts: generation 0 is a customer none of whose commands opened a cart.
DELETE FROM cart_lines WHERE cart_id IN (SELECT cart_id FROM carts WHERE generation = 0);
DELETE FROM carts WHERE generation = 0;
