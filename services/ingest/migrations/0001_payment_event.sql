-- 0001_payment_event.sql - kasir-ingest's evidence tables.
--
-- Runs as kasir_ingest_owner (db_migrate), in one transaction, after the
-- backbone's 0000_stream (stream_head, stream_out, ...).
--
-- ingest.payment_event: every signature-verified Midtrans notification,
-- duplicates included (each delivery is evidence), with the raw body byte
-- for byte.  ingest.quarantine: bodies refused for a bad signature, kept
-- for forensics (bounded by the daemon: per-minute budget and a row cap;
-- nothing is ever pruned).  Both are append-only: triggers refuse UPDATE,
-- DELETE and TRUNCATE, even by the owner, and the runtime role kasir_ingest
-- only has SELECT and INSERT.

-- The trigger function every append-only table of the schema uses
-- (docs/hacking.md).  The backbone's 0000_stream normally created it
-- already; create it only when it is missing, never replace it.
DO $ingest$ BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n
	               ON n.oid = p.pronamespace
	               WHERE n.nspname = 'ingest' AND p.proname = 'refuse_change')
	THEN
		CREATE FUNCTION ingest.refuse_change() RETURNS trigger
		LANGUAGE plpgsql AS $f$
		BEGIN
			RAISE EXCEPTION 'append-only table %', TG_TABLE_NAME;
		END $f$;
	END IF;
END $ingest$;

CREATE TABLE ingest.payment_event (
	id                 bigserial PRIMARY KEY,
	received_at        timestamptz NOT NULL,
	source_addr        inet NOT NULL,
	-- parsed from the body, exactly as received (gross_amount is text:
	-- the signature covers the received string, never a re-formatted one)
	order_id           text NOT NULL
	                   CHECK (order_id ~ '^[A-Za-z0-9._~-]{1,50}$'),
	transaction_status text NOT NULL CHECK (length(transaction_status) BETWEEN 1 AND 128),
	status_code        text NOT NULL CHECK (length(status_code) BETWEEN 1 AND 128),
	gross_amount       text NOT NULL CHECK (length(gross_amount) BETWEEN 1 AND 128),
	fraud_status       text CHECK (length(fraud_status) <= 128),
	payment_type       text CHECK (length(payment_type) <= 128),
	transaction_id     text CHECK (length(transaction_id) <= 128),
	currency           text CHECK (length(currency) <= 128),
	-- which configured server key verified it (its id, never the key)
	signature_key_id   text NOT NULL CHECK (length(signature_key_id) BETWEEN 1 AND 32),
	raw                bytea NOT NULL CHECK (length(raw) <= 1048576)
);

COMMENT ON TABLE ingest.payment_event IS
	'every verified Midtrans notification as received; append-only evidence';

CREATE INDEX payment_event_order_id ON ingest.payment_event (order_id, id);
CREATE INDEX payment_event_transaction_id ON ingest.payment_event (transaction_id)
	WHERE transaction_id IS NOT NULL;

CREATE TABLE ingest.quarantine (
	id          bigserial PRIMARY KEY,
	received_at timestamptz NOT NULL,
	source_addr inet NOT NULL,
	reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 32),
	-- the order_id the body claims (it passed the charset check)
	order_id    text CHECK (order_id ~ '^[A-Za-z0-9._~-]{1,50}$'),
	raw         bytea NOT NULL CHECK (length(raw) <= 1048576)
);

COMMENT ON TABLE ingest.quarantine IS
	'notification bodies refused for a bad signature; append-only evidence';

CREATE INDEX quarantine_order_id ON ingest.quarantine (order_id, id)
	WHERE order_id IS NOT NULL;

CREATE TRIGGER payment_event_append_only
	BEFORE UPDATE OR DELETE ON ingest.payment_event
	FOR EACH ROW EXECUTE FUNCTION ingest.refuse_change();
CREATE TRIGGER payment_event_no_truncate
	BEFORE TRUNCATE ON ingest.payment_event
	FOR EACH STATEMENT EXECUTE FUNCTION ingest.refuse_change();
CREATE TRIGGER quarantine_append_only
	BEFORE UPDATE OR DELETE ON ingest.quarantine
	FOR EACH ROW EXECUTE FUNCTION ingest.refuse_change();
CREATE TRIGGER quarantine_no_truncate
	BEFORE TRUNCATE ON ingest.quarantine
	FOR EACH STATEMENT EXECUTE FUNCTION ingest.refuse_change();

-- Rights of the runtime role: read and append, nothing else (the default
-- privileges of deploy/sql/bootstrap.sql give the same; stated here so the
-- migration is right on its own).
REVOKE ALL ON ingest.payment_event, ingest.quarantine FROM kasir_ingest;
GRANT SELECT, INSERT ON ingest.payment_event, ingest.quarantine TO kasir_ingest;
GRANT USAGE, SELECT ON SEQUENCE ingest.payment_event_id_seq,
	ingest.quarantine_id_seq TO kasir_ingest;
