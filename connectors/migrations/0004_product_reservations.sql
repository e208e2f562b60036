-- Units reserved per product by the aggregator's reservation stage (stock at checkout), as
-- published on product-reservations; `version` is the request-topic offset of the decision that
-- set it, the guard against a repeated or older record. A row of its own: the catalog sink's
-- rows (and their offset guard) stay as they are.
CREATE TABLE IF NOT EXISTS product_reservations (
    product_id text PRIMARY KEY,
    reserved   bigint NOT NULL,
    version    bigint NOT NULL
);
