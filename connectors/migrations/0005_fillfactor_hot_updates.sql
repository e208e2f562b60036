-- Room on each page for a row's next version, so an update that changes no indexed column is
-- a HOT update (no index entries; the old version is pruned in place):
-- - customers: only customer_id is indexed and never changes, so every update can be HOT;
-- - cart_lines: the sink rewrites a line in place (same cart_id, item_id), only qty, prices,
--   name and position change;
-- - carts: most updates change total_price (indexed), so they are not HOT, but the new
--   version still goes on the same page (no search for a page with room).
-- Only pages written from now on are filled this way; existing pages keep what they hold.
ALTER TABLE customers SET (fillfactor = 50);
ALTER TABLE cart_lines SET (fillfactor = 70);
ALTER TABLE carts SET (fillfactor = 70);
