-- 0003: the notification is a hint, the Status API's answer is the proof.
--
-- Midtrans signs only order_id + status_code + gross_amount: every other
-- field of a notification (transaction_status, fraud_status, ...) can be
-- rewritten by anyone who has seen one genuine body.  So, by default, no
-- notification moves an order: kasir-order holds it ("awaiting
-- confirmation") and asks the reconciler for a Status API answer, which is
-- the evidence of the transition (docs/state-machine.md, "Confirmation").
--
-- The mode is visible to the database: kasir-order writes its
-- signature_only setting here at every start, and a trigger refuses a
-- transition whose evidence is not a Status API answer unless the mode is
-- signature_only.

CREATE TABLE orders.settings (
	id		integer PRIMARY KEY CHECK (id = 1),
	-- true: a consistent, signed notification is evidence on its own
	-- (the merchant accepted the risk; warned at every start)
	signature_only	boolean NOT NULL DEFAULT false,
	written_at	timestamptz NOT NULL DEFAULT now(),
	written_by	text NOT NULL DEFAULT 'migration'
);
INSERT INTO orders.settings (id) VALUES (1);
CREATE TRIGGER settings_no_delete BEFORE DELETE ON orders.settings
	FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change();
CREATE TRIGGER settings_no_truncate BEFORE TRUNCATE ON orders.settings
	FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change();
GRANT SELECT, UPDATE ON orders.settings TO kasir_order;

-- awaiting_*: a held notification waits for the Status API (what it
-- claimed, since when); contradicted_at: Midtrans answered something the
-- notification cannot have come from (possible forgery or key leak).
ALTER TABLE orders.orders
	ADD COLUMN awaiting_since timestamptz,
	ADD COLUMN awaiting_status text
		CHECK (length(awaiting_status) <= 64),
	ADD COLUMN contradicted_at timestamptz,
	ADD CONSTRAINT awaiting_both CHECK
		((awaiting_since IS NULL) = (awaiting_status IS NULL));
CREATE INDEX orders_awaiting ON orders.orders (awaiting_since)
	WHERE awaiting_since IS NOT NULL;
CREATE INDEX orders_contradicted ON orders.orders (contradicted_at)
	WHERE contradicted_at IS NOT NULL;

-- Every status change, in the default mode, names a Status API answer of
-- this order (recon evidence of kind status, not_found or expired),
-- written earlier in the same transaction.  A missing settings row counts
-- as the default mode.
CREATE FUNCTION orders.check_transition_evidence() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF coalesce((SELECT s.signature_only FROM orders.settings s
		     WHERE s.id = 1), false) THEN
		RETURN NEW;
	END IF;
	IF NEW.evidence_source = 'recon' AND EXISTS (
		SELECT 1 FROM orders.evidence e
		WHERE e.id = NEW.evidence_id
		  AND e.order_id = NEW.order_id
		  AND e.source = 'recon'
		  AND e.ref = NEW.evidence_ref
		  AND e.kind IN ('status', 'not_found', 'expired')) THEN
		RETURN NEW;
	END IF;
	RAISE EXCEPTION 'orders.transitions: % -> % of order % refused: its evidence is not a Status API answer (order.signature_only is off)',
		NEW.from_status, NEW.to_status, NEW.order_id
		USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER transitions_need_status_api BEFORE INSERT
	ON orders.transitions
	FOR EACH ROW EXECUTE FUNCTION orders.check_transition_evidence();

-- PAID's evidence (0002: a settlement or capture of this order): a Status
-- API answer in a LATER state of the same payment proves the payment too
-- (confirm.c, proven_claim: settlement claimed, the customer was refunded
-- before the reconciler asked, Midtrans answers refund).  A deny proves a
-- settlement only when it carries settlement_time (a reversal); without
-- it a deny is a failed attempt.
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
				  AND (e.transaction_status IN ('settlement','capture')
				   OR (e.source = 'recon' AND e.kind = 'status'
				       AND (e.transaction_status IN ('refund',
					    'partial_refund', 'chargeback',
					    'partial_chargeback')
					OR (e.transaction_status = 'deny'
					    AND coalesce(e.raw->>'settlement_time', '')
						<> ''))))))) THEN
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
