-- Room on each customers page for a row's next version. An update of a customer's record
-- never changes customer_id, its only indexed column, so with room on the page it is a HOT
-- update: no new index entry, and the old version is pruned in place (bench/pg_sink.py: the
-- customers merge from ~9 to ~5 µs of server CPU a record). Only pages written from now on
-- are filled this way.
-- Not carts: most of its updates change total_price (indexed), so they cannot be HOT, and an
-- order's row never changes again, so room left on its page would only be wasted. Not
-- cart_lines: a winning cart's lines are deleted and inserted again, never updated.
ALTER TABLE customers SET (fillfactor = 50);
