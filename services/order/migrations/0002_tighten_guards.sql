-- 0002: tighter database guards (statement-level append-only triggers, PAID
-- evidence must be a payment of the same order).
--
-- Append-only refusals at statement level.
--
-- 0001 refused UPDATE/DELETE with FOR EACH ROW triggers, which do not fire
-- when the statement matches no row: "DELETE FROM orders.audit" on an empty
-- table succeeded, so a probe (or an operator's script) could not tell an
-- append-only table from a writable one.  Statement-level triggers fire for
-- every UPDATE/DELETE statement, whatever it matches.  The runtime role
-- never had UPDATE/DELETE on these tables; this is the owner's guard rail.
DO $$
DECLARE t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['evidence','transitions','entitlement_events',
				 'unknown_notifications','audit'] LOOP
		EXECUTE format('DROP TRIGGER %I ON orders.%I', t || '_append_only', t);
		EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON orders.%I
			FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change()',
			t || '_append_only', t);
	END LOOP;
END $$;

-- Orders and entitlements are mutable (status, revoked_at) but never deleted.
DROP TRIGGER orders_no_delete ON orders.orders;
CREATE TRIGGER orders_no_delete BEFORE DELETE ON orders.orders
	FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change();
DROP TRIGGER entitlements_no_delete ON orders.entitlements;
CREATE TRIGGER entitlements_no_delete BEFORE DELETE ON orders.entitlements
	FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change();
CREATE TRIGGER entitlements_no_truncate BEFORE TRUNCATE ON orders.entitlements
	FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change();

-- PAID needs evidence that proves a payment OF THIS ORDER: 0001 accepted
-- any orders.evidence row as the PAID transition's evidence (another
-- order's, or a `pending` notification).  The evidence row is written
-- first in the same transaction (evidence.c), with its decision.
CREATE OR REPLACE FUNCTION orders.check_order_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		IF NEW.status <> 'PENDING' THEN
			RAISE EXCEPTION 'orders: a new order must be PENDING'
				USING ERRCODE = 'check_violation';
		END IF;
		RETURN NEW;
	END IF;
	IF NEW.status IS DISTINCT FROM OLD.status THEN
		IF NOT EXISTS (SELECT 1 FROM orders.transitions t
			WHERE t.order_id = NEW.order_id
			  AND t.from_status = OLD.status
			  AND t.to_status = NEW.status
			  AND t.txid = txid_current()
			  AND (NEW.status <> 'PAID' OR EXISTS (
				SELECT 1 FROM orders.evidence e
				WHERE e.id = t.evidence_id
				  AND e.order_id = NEW.order_id
				  AND e.source = t.evidence_source
				  AND e.ref = t.evidence_ref
				  AND e.source IN ('ingest','recon')
				  AND e.result = 'applied'
				  AND e.status_after = 'PAID'
				  AND e.transaction_status IN ('settlement','capture')))) THEN
			RAISE EXCEPTION 'orders: % -> % refused: no transition with evidence in this transaction',
				OLD.status, NEW.status
				USING ERRCODE = 'check_violation';
		END IF;
		NEW.updated_at := now();
	END IF;
	IF NEW.order_id <> OLD.order_id OR NEW.amount <> OLD.amount OR
	   NEW.currency <> OLD.currency OR NEW.course_id <> OLD.course_id OR
	   NEW.customer_email <> OLD.customer_email THEN
		RAISE EXCEPTION 'orders: identity, amount and customer are immutable'
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
