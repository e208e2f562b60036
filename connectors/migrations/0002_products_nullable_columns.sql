-- The store layout leaves a product's name, price and stock nullable: a tombstone for a product
-- never seen before leaves a row (deleted, the offset guard) with nothing else to say.
ALTER TABLE products ALTER COLUMN product_name DROP NOT NULL;
ALTER TABLE products ALTER COLUMN price DROP NOT NULL;
ALTER TABLE products ALTER COLUMN stock_qty DROP NOT NULL;
