-- 0004: a full refund (or chargeback) seen before its settlement ends the
-- order REFUNDED straight from PENDING (docs/state-machine.md, "Refund seen
-- before its settlement").
--
-- A refund implies the settlement it refunds; when that settlement's
-- notification is late or lost, the order is still PENDING when the refund
-- arrives.  The money went back, so the order must never become PAID: no
-- access, no order.paid (hence no receipt).  0001's forward_only allowed
-- REFUNDED only from PAID.  (Numbered 0004: 0003 is taken by the Status API
-- proof migration.)
ALTER TABLE orders.transitions DROP CONSTRAINT forward_only;
ALTER TABLE orders.transitions ADD CONSTRAINT forward_only CHECK (
	(from_status = 'PENDING' AND to_status IN
		('PAID','FAILED','EXPIRED','CANCELLED','REFUNDED')) OR
	(from_status = 'PAID' AND to_status = 'REFUNDED'));

-- PENDING -> REFUNDED needs evidence of this order that says the money went
-- back in full: an ingest/recon evidence row written earlier in the same
-- transaction (evidence.c writes it first), decided `applied` -> REFUNDED,
-- whose transaction_status is `refund` or `chargeback`.  Anything else (a
-- pending notification, another order's refund, an operator) is refused,
-- as 0002 refuses PAID without a payment of the order.
CREATE FUNCTION orders.check_refund_unpaid() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.from_status = 'PENDING' AND NEW.to_status = 'REFUNDED' AND
	   NOT EXISTS (SELECT 1 FROM orders.evidence e
		WHERE e.id = NEW.evidence_id
		  AND e.order_id = NEW.order_id
		  AND e.source = NEW.evidence_source
		  AND e.ref = NEW.evidence_ref
		  AND e.source IN ('ingest','recon')
		  AND e.result = 'applied'
		  AND e.status_after = 'REFUNDED'
		  AND e.transaction_status IN ('refund','chargeback')) THEN
		RAISE EXCEPTION 'orders.transitions: PENDING -> REFUNDED of order % refused: its evidence is not a full refund or chargeback of this order',
			NEW.order_id
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER transitions_refund_unpaid BEFORE INSERT
	ON orders.transitions
	FOR EACH ROW EXECUTE FUNCTION orders.check_refund_unpaid();
