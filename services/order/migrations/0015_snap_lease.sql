-- Migration 0015: one Snap call at a time per order.
--
-- A create call repeated with the same Idempotency-Key while the first
-- one was still waiting for Snap found no token on the row and called
-- Snap itself (found by an outside attack, 2026-12-07: four identical
-- calls at once, 8 orders of 10).  One of the two calls got a token and
-- handed it to the customer; the other got 406 (the order id was now
-- taken, by kasir's own call) and marked the order needs_reconcile, so
-- the customer's payment through kasir's own token was flagged as
-- someone else's and never made PAID (docs/state-machine.md).
--
-- snap_lease_until: until when one call holds the order's Snap call.  The
-- create call sets it with the row; a repeated call takes it only when it
-- is free or has run out (the holder died), the order is PENDING, a
-- minute or more before its expiry, has no token and no 406.
-- snap_lease_id: which call holds it (a new id each time it is taken).
-- Snap's answer is recorded only by the call whose id is still there: a
-- holder that overran its lease (a stalled database, a paused process)
-- and lost it to a retry records nothing and hands out nothing
-- (services/order/api.c).  Neither is indexed: updating them keeps the
-- row's updates HOT.
ALTER TABLE orders.orders
	ADD COLUMN snap_lease_until timestamptz,
	ADD COLUMN snap_lease_id uuid;

-- Rows the race already damaged: a token and the 406 mark.  Snap answers
-- 201 for an order id only while Midtrans does not know it, so an order
-- that got a token had its id registered by kasir's own call, and the
-- 406 came from kasir's own second call: payments under the id are this
-- order's.  (An order flagged meanwhile stays flagged for an operator.)
UPDATE orders.orders SET needs_reconcile = false
	WHERE needs_reconcile AND snap_token IS NOT NULL;
