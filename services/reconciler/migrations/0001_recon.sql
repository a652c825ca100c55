-- kasir-reconciler schema "recon": the watch list of pending orders, every
-- Status API answer (append-only evidence), the mode and the audit log
-- (append-only).  Run as kasir_reconciler_owner; the runtime role
-- kasir_reconciler gets SELECT/INSERT everywhere and UPDATE only on the
-- mutable tables (watch, settings).  No role may UPDATE, DELETE or
-- TRUNCATE status_check or audit: rights and triggers both refuse.

CREATE OR REPLACE FUNCTION recon.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'recon.%: % refused, the table is append-only',
		TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

-- One row per order seen on the orders stream (mutable).  A row leaves
-- the schedule when the order becomes final.
CREATE TABLE recon.watch (
	order_id	text PRIMARY KEY
		CHECK (order_id ~ '^[A-Za-z0-9._~-]{1,50}$'),
	created_at	timestamptz NOT NULL,
	expires_at	timestamptz NOT NULL,
	status		text NOT NULL DEFAULT 'PENDING',  -- from the orders stream
	final		boolean NOT NULL DEFAULT false,
	final_at	timestamptz,
	transaction_id	text CHECK (length(transaction_id) <= 64),
	payment_type	text CHECK (length(payment_type) <= 64),
	-- received_at of the last webhook notification kasir-order applied
	-- or recorded for this order (order.evidence with source ingest)
	last_notification_at timestamptz,
	-- what the last answer or evidence said ("status:settlement",
	-- "not_found", "not_found:past", "expired:past"): the "says
	-- something new" filter
	last_key	text,
	next_check_at	timestamptz NOT NULL,
	attempts	integer NOT NULL DEFAULT 0,  -- answered checks
	failures	integer NOT NULL DEFAULT 0,  -- consecutive failed checks
	expiry_checked	boolean NOT NULL DEFAULT false,
	last_check_at	timestamptz,
	last_verdict	text,
	lease_until	timestamptz,  -- claimed by a scheduler until then
	forced		boolean NOT NULL DEFAULT false,  -- operator: check now
	orders_seq	bigint NOT NULL,  -- orders stream seq that last changed it
	updated_at	timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX watch_due ON recon.watch (next_check_at) WHERE NOT final;
CREATE INDEX watch_forced ON recon.watch (order_id) WHERE forced;
CREATE INDEX watch_created ON recon.watch (created_at);

-- Every Status API answer, errors included, as received (append-only).
-- verdict: status | not_found | expired | auth | http_5xx | timeout |
-- unexpected.  published: appended to the recon stream as status.check
-- (it said something new).
CREATE TABLE recon.status_check (
	id		bigserial PRIMARY KEY,
	order_id	text NOT NULL,
	asked		text NOT NULL,   -- the id in the URL
	by_transaction_id boolean NOT NULL,
	attempt		integer NOT NULL CHECK (attempt >= 1),
	http_status	integer NOT NULL,  -- 0: no HTTP answer
	verdict		text NOT NULL CHECK (verdict IN ('status', 'not_found',
			  'expired', 'auth', 'http_5xx', 'timeout', 'unexpected')),
	transaction_status text,
	status_code	text,
	status_message	text,
	fraud_status	text,
	gross_amount	text,
	currency	text,
	payment_type	text,
	transaction_id	text,
	body		text CHECK (length(body) <= 65536),
	body_truncated	boolean NOT NULL DEFAULT false,
	error		text,
	latency_ms	integer,
	past_expiry	boolean NOT NULL,
	published	boolean NOT NULL,
	reason		text NOT NULL,  -- why it was (not) published
	mode		text NOT NULL,
	requested_at	timestamptz NOT NULL,
	checked_at	timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX status_check_order ON recon.status_check (order_id, id);
CREATE INDEX status_check_at ON recon.status_check (checked_at);
CREATE TRIGGER status_check_append_only BEFORE UPDATE OR DELETE
	ON recon.status_check FOR EACH ROW EXECUTE FUNCTION recon.refuse_change();
CREATE TRIGGER status_check_no_truncate BEFORE TRUNCATE ON recon.status_check
	FOR EACH STATEMENT EXECUTE FUNCTION recon.refuse_change();

-- The mode and the activity the automatic mode looks at (one row).
CREATE TABLE recon.settings (
	id		integer PRIMARY KEY CHECK (id = 1),
	mode		text NOT NULL DEFAULT 'normal'
		CHECK (mode IN ('normal', 'reconcile')),
	mode_since	timestamptz NOT NULL DEFAULT now(),
	mode_auto	boolean NOT NULL DEFAULT true,  -- entered automatically
	mode_by		text NOT NULL DEFAULT 'initial',
	-- received_at of the newest webhook notification (any order)
	last_ingest_at	timestamptz,
	-- silence is counted from here at the earliest (an operator's
	-- "normal" restarts the count)
	silence_ref	timestamptz,
	updated_at	timestamptz NOT NULL DEFAULT now()
);
INSERT INTO recon.settings (id) VALUES (1);

-- Every operator action, refusal and mode change (append-only).
CREATE TABLE recon.audit (
	id		bigserial PRIMARY KEY,
	at		timestamptz NOT NULL DEFAULT now(),
	actor		text NOT NULL,
	role		text NOT NULL,  -- engineer | support | none | auto
	command		text NOT NULL,
	args		jsonb NOT NULL,
	reason		text,
	incident	text,
	before		jsonb,
	after		jsonb,
	result		text NOT NULL CHECK (result IN ('ok', 'refused', 'error')),
	error		text
);
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON recon.audit
	FOR EACH ROW EXECUTE FUNCTION recon.refuse_change();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON recon.audit
	FOR EACH STATEMENT EXECUTE FUNCTION recon.refuse_change();

GRANT USAGE ON SCHEMA recon TO kasir_reconciler;
GRANT SELECT, INSERT, UPDATE ON recon.watch, recon.settings TO kasir_reconciler;
GRANT SELECT, INSERT ON recon.status_check, recon.audit TO kasir_reconciler;
REVOKE UPDATE, DELETE, TRUNCATE ON recon.status_check, recon.audit
	FROM kasir_reconciler;
GRANT USAGE, SELECT ON SEQUENCE recon.status_check_id_seq, recon.audit_id_seq
	TO kasir_reconciler;
