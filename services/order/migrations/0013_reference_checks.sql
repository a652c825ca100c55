-- Migration 0013: the references between the evidence path's tables are
-- checked once per statement instead of once per row (docs/performance.md,
-- section (c)).  Same rules, same SQLSTATE (23503, foreign_key_violation),
-- a fraction of the cost.
--
-- Before: eight FOREIGN KEY constraints of 0001.  PostgreSQL checks each
-- one with a trigger per inserted row that runs its own query and takes a
-- FOR KEY SHARE lock on the referenced row (a write to that row and a WAL
-- record).  A payment inserts one evidence row, one transition, one
-- entitlement event and one entitlement: nine checks.  Measured on this
-- project's PostgreSQL (200 inserts of 256 rows referencing a 200,000-row
-- table): 15 us per row and reference with the constraint, 3.5 us with
-- the statement check below; in a backlog drain the constraints' triggers
-- were about a third of the time of the statements they guarded
-- (auto_explain).  With one row per statement (a quiet shop) the two cost
-- about the same per payment: a statement check costs a plpgsql call.
--
-- What a FOREIGN KEY did besides the check on insert, and what does it now:
-- - the referenced row cannot be deleted or its key changed: orders are
--   never deleted (orders_no_delete, orders_no_truncate) and their
--   order_id never changes (orders_status_update refuses it as an identity
--   change, 0011); evidence and entitlement events are append-only
--   (UPDATE, DELETE and TRUNCATE refused, 0002).  So a row that was there
--   when the statement checked it stays there, and no lock is needed.
-- - entitlements are updated (a revoke sets revoke_event_id): the UPDATE is
--   checked like the INSERT.
--
-- Each check is a scalar subquery per new row, never turned into a join:
-- one index probe per reference, whatever plan the statement gets (the
-- transition tables have no statistics; a hash join would read all of
-- orders.orders).
CREATE FUNCTION orders.refuse_reference(tbl text, col text, val text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'orders.%: % % is not there', tbl, col, val
		USING ERRCODE = 'foreign_key_violation';
END $$;

CREATE FUNCTION orders.check_evidence_refs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	bad text;
BEGIN
	SELECT n.order_id INTO bad FROM new_rows n
	WHERE (SELECT true FROM orders.orders o
	       WHERE o.order_id = n.order_id) IS NULL
	LIMIT 1;
	IF FOUND THEN
		PERFORM orders.refuse_reference('evidence', 'order_id', bad);
	END IF;
	RETURN NULL;
END $$;

-- transitions and entitlement_events: an order and, when given, the
-- evidence row (TG_TABLE_NAME says which table in the refusal).
CREATE FUNCTION orders.check_order_evidence_refs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	bad record;
BEGIN
	SELECT n.order_id, n.evidence_id,
	       (SELECT true FROM orders.orders o
	        WHERE o.order_id = n.order_id) IS NULL AS no_order
	INTO bad FROM new_rows n
	WHERE (SELECT true FROM orders.orders o
	       WHERE o.order_id = n.order_id) IS NULL
	   OR (n.evidence_id IS NOT NULL AND
	       (SELECT true FROM orders.evidence e
	        WHERE e.id = n.evidence_id) IS NULL)
	LIMIT 1;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF bad.no_order THEN
		PERFORM orders.refuse_reference(TG_TABLE_NAME, 'order_id',
						bad.order_id);
	END IF;
	PERFORM orders.refuse_reference(TG_TABLE_NAME, 'evidence_id',
					bad.evidence_id::text);
	RETURN NULL;
END $$;

CREATE FUNCTION orders.check_entitlement_refs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	bad record;
BEGIN
	SELECT n.order_id, n.grant_event_id, n.revoke_event_id,
	       (SELECT true FROM orders.orders o
	        WHERE o.order_id = n.order_id) IS NULL AS no_order,
	       (SELECT true FROM orders.entitlement_events v
	        WHERE v.id = n.grant_event_id) IS NULL AS no_grant
	INTO bad FROM new_rows n
	WHERE (SELECT true FROM orders.orders o
	       WHERE o.order_id = n.order_id) IS NULL
	   OR (SELECT true FROM orders.entitlement_events v
	       WHERE v.id = n.grant_event_id) IS NULL
	   OR (n.revoke_event_id IS NOT NULL AND
	       (SELECT true FROM orders.entitlement_events v
	        WHERE v.id = n.revoke_event_id) IS NULL)
	LIMIT 1;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF bad.no_order THEN
		PERFORM orders.refuse_reference('entitlements', 'order_id',
						bad.order_id);
	END IF;
	IF bad.no_grant THEN
		PERFORM orders.refuse_reference('entitlements', 'grant_event_id',
						bad.grant_event_id::text);
	END IF;
	PERFORM orders.refuse_reference('entitlements', 'revoke_event_id',
					bad.revoke_event_id::text);
	RETURN NULL;
END $$;

-- A trigger with transition tables names one event: INSERT and UPDATE of
-- entitlements are two triggers of the same function.
CREATE TRIGGER evidence_refs AFTER INSERT ON orders.evidence
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION orders.check_evidence_refs();
CREATE TRIGGER transitions_refs AFTER INSERT ON orders.transitions
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION orders.check_order_evidence_refs();
CREATE TRIGGER entitlement_events_refs AFTER INSERT
	ON orders.entitlement_events
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT
	EXECUTE FUNCTION orders.check_order_evidence_refs();
CREATE TRIGGER entitlements_refs_insert AFTER INSERT ON orders.entitlements
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION orders.check_entitlement_refs();
CREATE TRIGGER entitlements_refs_update AFTER UPDATE ON orders.entitlements
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION orders.check_entitlement_refs();

ALTER TABLE orders.evidence DROP CONSTRAINT evidence_order_id_fkey;
ALTER TABLE orders.transitions
	DROP CONSTRAINT transitions_order_id_fkey,
	DROP CONSTRAINT transitions_evidence_id_fkey;
ALTER TABLE orders.entitlement_events
	DROP CONSTRAINT entitlement_events_order_id_fkey,
	DROP CONSTRAINT entitlement_events_evidence_id_fkey;
ALTER TABLE orders.entitlements
	DROP CONSTRAINT entitlements_order_id_fkey,
	DROP CONSTRAINT entitlements_grant_event_id_fkey,
	DROP CONSTRAINT entitlements_revoke_event_id_fkey;
