-- kasir-notifier: the notifier's record of each order, notification jobs,
-- their attempts (append-only), operator settings and the audit log
-- (append-only).  Owned by kasir_notifier_owner; the runtime role
-- kasir_notifier gets SELECT/INSERT everywhere and UPDATE only on the
-- mutable tables (orders, job, settings).

CREATE OR REPLACE FUNCTION notify.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'notify.%: append-only table, % refused',
		TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Latest known state of each order, from the orders stream.  The receipt
-- guard reads it in the transaction that claims a receipt job.
CREATE TABLE notify.orders (
	order_id     text PRIMARY KEY CHECK (length(order_id) BETWEEN 1 AND 50),
	status       text NOT NULL,
	snapshot     jsonb NOT NULL,
	revoked      boolean NOT NULL DEFAULT false,
	access_valid_until text,          -- from access.granted; NULL: lifetime/unknown
	access_granted boolean NOT NULL DEFAULT false,
	paid_at      text,
	last_seq     bigint NOT NULL,     -- orders stream seq that last changed it
	last_type    text NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now(),
	updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notify.job (
	id           bigserial PRIMARY KEY,
	order_id     text NOT NULL,
	kind         text NOT NULL CHECK (kind IN
	                 ('instructions', 'reminder', 'receipt', 'expiry', 'refund')),
	channel      text NOT NULL CHECK (channel IN ('email', 'whatsapp')),
	-- reminders: the offset's index; receipts: 0 for the original, N for
	-- the N-th operator resend; 0 otherwise.
	variant      integer NOT NULL DEFAULT 0 CHECK (variant >= 0),
	recipient    text NOT NULL CHECK (length(recipient) BETWEEN 1 AND 254),
	state        text NOT NULL DEFAULT 'queued' CHECK (state IN
	                 ('queued', 'sending', 'sent', 'retry', 'uncertain',
	                  'dead', 'cancelled')),
	due_at       timestamptz NOT NULL DEFAULT now(),
	attempts     integer NOT NULL DEFAULT 0,
	max_attempts integer NOT NULL CHECK (max_attempts >= 1),
	lease_until  timestamptz,
	last_error   text,
	provider_id  text,
	uncertain    integer NOT NULL DEFAULT 0,  -- attempts recorded uncertain
	payload      jsonb NOT NULL,              -- event data the texts use
	origin       text NOT NULL,               -- "orders:<seq>" or "resend:<actor>"
	requeues     integer NOT NULL DEFAULT 0,
	created_at   timestamptz NOT NULL DEFAULT now(),
	updated_at   timestamptz NOT NULL DEFAULT now(),
	sent_at      timestamptz,
	UNIQUE (order_id, kind, channel, variant)
);
CREATE INDEX job_due ON notify.job (due_at, id)
	WHERE state IN ('queued', 'retry', 'uncertain');
CREATE INDEX job_sending ON notify.job (lease_until) WHERE state = 'sending';
CREATE INDEX job_order ON notify.job (order_id);

-- Every attempt (and every guard decision) on a job; never changed.
-- result: sent | transient | permanent | uncertain | blocked | cancelled
CREATE TABLE notify.attempt (
	id           bigserial PRIMARY KEY,
	job_id       bigint NOT NULL REFERENCES notify.job (id),
	attempt_no   integer NOT NULL,
	result       text NOT NULL CHECK (result IN ('sent', 'transient',
	                 'permanent', 'uncertain', 'blocked', 'cancelled')),
	order_status text,          -- the notifier's record when claimed
	provider_id  text,
	error        text,
	latency_ms   integer,
	at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempt_job ON notify.attempt (job_id);
CREATE TRIGGER attempt_append_only BEFORE UPDATE OR DELETE ON notify.attempt
	FOR EACH ROW EXECUTE FUNCTION notify.refuse_change();
CREATE TRIGGER attempt_no_truncate BEFORE TRUNCATE ON notify.attempt
	FOR EACH STATEMENT EXECUTE FUNCTION notify.refuse_change();

-- Operator switches that survive restarts (one row).
CREATE TABLE notify.settings (
	id               integer PRIMARY KEY CHECK (id = 1),
	reminders_paused boolean NOT NULL DEFAULT false,
	updated_at       timestamptz NOT NULL DEFAULT now(),
	updated_by       text
);
INSERT INTO notify.settings (id) VALUES (1);

-- Every operator action and refusal, in the transaction of the action.
CREATE TABLE notify.audit (
	id        bigserial PRIMARY KEY,
	at        timestamptz NOT NULL DEFAULT now(),
	actor     text NOT NULL,
	role      text NOT NULL,
	command   text NOT NULL,
	args      jsonb NOT NULL,
	reason    text,
	incident  text,
	before    jsonb,
	after     jsonb,
	result    text NOT NULL CHECK (result IN ('ok', 'refused', 'error')),
	error     text
);
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON notify.audit
	FOR EACH ROW EXECUTE FUNCTION notify.refuse_change();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON notify.audit
	FOR EACH STATEMENT EXECUTE FUNCTION notify.refuse_change();

GRANT USAGE ON SCHEMA notify TO kasir_notifier;
GRANT SELECT, INSERT, UPDATE ON notify.orders, notify.job, notify.settings
	TO kasir_notifier;
GRANT SELECT, INSERT ON notify.attempt, notify.audit TO kasir_notifier;
GRANT USAGE ON SEQUENCE notify.job_id_seq, notify.attempt_id_seq,
	notify.audit_id_seq TO kasir_notifier;
