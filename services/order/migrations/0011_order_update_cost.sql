-- Migration 0011: what PostgreSQL does for each order-row UPDATE of the
-- evidence path (docs/performance.md, section (c)).  Before: 40-50% of
-- PostgreSQL's time in a backlog drain went to that UPDATE.  The guards
-- are the same; only their cost changes.  No table is rewritten.
--
-- 1. HOT updates.  An UPDATE can stay on the row's page without new index
--    entries (heap-only tuple) only if no indexed column changes, and the
--    columns of an index predicate count.  `status` was in the predicate of
--    orders_pending_expiry, so every payment wrote new entries into the
--    primary key, idempotency_key and orders_created indexes as well.
--    That index served only the operator's "pending past expiry" lists
--    (admin.c), which run rarely and next to a count over the whole table
--    (admin_status); they now read the table.  Expiry itself is the
--    reconciler's (recon.watch has its own index).
DROP INDEX orders.orders_pending_expiry;

--    And room on the page for the new version: pages written from now on
--    are filled to 80% (about four updates of a page's orders fit before
--    one has to move); existing pages are not rewritten.
ALTER TABLE orders.orders SET (fillfactor = 80);

-- 2. The status guard runs once per statement, not once per row.  The
--    row trigger ran a plpgsql function with its own queries for every
--    order of a batch; the statement trigger checks the whole statement's
--    rows with one query over its transition tables.  Same rules as
--    0003's check_order_status: a status change needs a transition row of
--    this transaction with the same from/to (PAID: its evidence an applied
--    settlement/capture of this order, or a Status API answer that proves
--    money was taken), identity, amount and customer never change.  An
--    order_id changed by the UPDATE has no old row to pair with and is
--    refused as an identity change.  updated_at on a status change is now
--    set by the one UPDATE that changes status (services/order/store.c).
CREATE FUNCTION orders.check_order_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	bad record;
BEGIN
	-- One query, no LIMIT: with LIMIT 1 the planner expects an early hit
	-- and pairs the transition tables (no statistics) in a nested loop,
	-- n x n rows per statement (measured: 0.55 s for 1,000 rows); without
	-- it they are hashed.  The transition is a scalar subquery, never
	-- turned into a join: one probe of transitions_order per changed
	-- order, whatever plan was cached while orders.transitions was small.
	SELECT n.order_id, o.status AS old_status, n.status AS new_status,
	       o.order_id IS NULL OR n.amount <> o.amount OR
	       n.currency <> o.currency OR n.course_id <> o.course_id OR
	       n.customer_email <> o.customer_email AS identity
	INTO bad
	FROM new_rows n LEFT JOIN old_rows o ON o.order_id = n.order_id
	WHERE o.order_id IS NULL OR n.amount <> o.amount OR
	      n.currency <> o.currency OR n.course_id <> o.course_id OR
	      n.customer_email <> o.customer_email OR
	      (n.status IS DISTINCT FROM o.status AND (
		SELECT true FROM orders.transitions t
		WHERE t.order_id = n.order_id
		  AND t.from_status = o.status
		  AND t.to_status = n.status
		  AND t.txid = txid_current()
		  AND (n.status <> 'PAID' OR EXISTS (
			SELECT 1 FROM orders.evidence e
			WHERE e.id = t.evidence_id
			  AND e.order_id = n.order_id
			  AND e.source = t.evidence_source
			  AND e.ref = t.evidence_ref
			  AND e.source IN ('ingest','recon')
			  AND e.result = 'applied'
			  AND e.status_after = 'PAID'
			  AND (e.transaction_status IN ('settlement','capture')
			   OR (e.source = 'recon' AND e.kind = 'status'
			       AND (e.transaction_status IN ('refund',
				    'partial_refund', 'chargeback',
				    'partial_chargeback')
				OR (e.transaction_status = 'deny'
				    AND coalesce(e.raw->>'settlement_time', '')
					<> ''))))))
		LIMIT 1) IS NULL);
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF bad.identity THEN
		RAISE EXCEPTION 'orders: identity, amount and customer are immutable (order %)',
			bad.order_id USING ERRCODE = 'check_violation';
	END IF;
	RAISE EXCEPTION 'orders: % -> % refused: no transition with evidence in this transaction (order %)',
		bad.old_status, bad.new_status, bad.order_id
		USING ERRCODE = 'check_violation';
END $$;

DROP TRIGGER orders_status ON orders.orders;
-- a new order must be PENDING: the INSERT branch of check_order_status
CREATE TRIGGER orders_status BEFORE INSERT ON orders.orders
	FOR EACH ROW EXECUTE FUNCTION orders.check_order_status();
CREATE TRIGGER orders_status_update AFTER UPDATE ON orders.orders
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION orders.check_order_update();

-- 3. The PENDING -> REFUNDED check of 0004 only concerns REFUNDED: the
--    trigger is not even called for the other transitions (a PAID one
--    used to pay a plpgsql call per row to learn that).
DROP TRIGGER transitions_refund_unpaid ON orders.transitions;
CREATE TRIGGER transitions_refund_unpaid BEFORE INSERT
	ON orders.transitions
	FOR EACH ROW WHEN (NEW.to_status = 'REFUNDED')
	EXECUTE FUNCTION orders.check_refund_unpaid();
