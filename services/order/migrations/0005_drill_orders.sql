-- 0005: orders placed by `kasirctl drill` (a course with `drill: true` in
-- the catalog) are marked, so finance exports (admin export.orders) leave
-- them out.  Set once at creation; never changed.
ALTER TABLE orders.orders ADD COLUMN drill boolean NOT NULL DEFAULT false;
