-- 0002_refund.sql - refunds started from kasir (kasirctl refund).
--
-- recon.refund: one row per refund request, written and COMMITTED before
-- Midtrans's Refund API is called, so that its refund_key exists before
-- the money moves: a retry (the daemon's, or the operator running the same
-- command again after an unclear answer) sends the same key and Midtrans
-- refunds once.  recon.refund_attempt: every answer of the Refund API
-- (or its absence), raw body included.  A request is open while none of
-- its attempts is 'accepted' or 'refused'.  Both append-only.
--
-- The order's status is never changed here: Midtrans's refund
-- notification and a Status API answer decide REFUNDED (kasir-order).

CREATE TABLE recon.refund (
	id		bigserial PRIMARY KEY,
	order_id	text NOT NULL CHECK (order_id ~ '^[A-Za-z0-9._~-]{1,50}$'),
	refund_key	text NOT NULL UNIQUE
		CHECK (refund_key ~ '^[A-Za-z0-9_-]{1,64}$'),
	amount		bigint NOT NULL CHECK (amount > 0),
	gross_amount	bigint NOT NULL CHECK (gross_amount > 0),
	reason		text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
	actor		text NOT NULL,
	incident	text,
	created_at	timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refund_order ON recon.refund (order_id, id);

CREATE TABLE recon.refund_attempt (
	id		bigserial PRIMARY KEY,
	refund_id	bigint NOT NULL REFERENCES recon.refund (id),
	at		timestamptz NOT NULL DEFAULT now(),
	outcome		text NOT NULL
		CHECK (outcome IN ('accepted', 'refused', 'uncertain')),
	http_status	integer NOT NULL,  -- 0: no HTTP answer
	status_code	text CHECK (length(status_code) <= 16),
	status_message	text CHECK (length(status_message) <= 512),
	body		text CHECK (length(body) <= 65536),
	error		text CHECK (length(error) <= 256),
	latency_ms	integer
);
CREATE INDEX refund_attempt_refund ON recon.refund_attempt (refund_id, id);

CREATE TRIGGER refund_append_only BEFORE UPDATE OR DELETE ON recon.refund
	FOR EACH ROW EXECUTE FUNCTION recon.refuse_change();
CREATE TRIGGER refund_no_truncate BEFORE TRUNCATE ON recon.refund
	FOR EACH STATEMENT EXECUTE FUNCTION recon.refuse_change();
CREATE TRIGGER refund_attempt_append_only
	BEFORE UPDATE OR DELETE ON recon.refund_attempt
	FOR EACH ROW EXECUTE FUNCTION recon.refuse_change();
CREATE TRIGGER refund_attempt_no_truncate BEFORE TRUNCATE ON recon.refund_attempt
	FOR EACH STATEMENT EXECUTE FUNCTION recon.refuse_change();

GRANT SELECT, INSERT ON recon.refund, recon.refund_attempt TO kasir_reconciler;
REVOKE UPDATE, DELETE, TRUNCATE ON recon.refund, recon.refund_attempt
	FROM kasir_reconciler;
GRANT USAGE, SELECT ON SEQUENCE recon.refund_id_seq,
	recon.refund_attempt_id_seq TO kasir_reconciler;
