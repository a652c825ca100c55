-- kasir-order schema "orders": orders, the evidence behind every change,
-- transitions, course entitlements, unknown notifications, audit.
-- Run as kasir_order_owner; the runtime role kasir_order gets SELECT and
-- INSERT everywhere and UPDATE only on the two mutable tables (orders,
-- entitlements).  See docs/state-machine.md.

-- Append-only tables: refuse UPDATE, DELETE and TRUNCATE for everybody
-- (the owner included; a superuser can still disable the trigger, on
-- purpose and visibly).
CREATE OR REPLACE FUNCTION orders.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'orders.%: % refused, the table is append-only',
		TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

-- Current state of each order (mutable).
CREATE TABLE orders.orders (
	order_id	text PRIMARY KEY
		CHECK (order_id ~ '^[A-Za-z0-9._~-]{1,50}$'),
	course_id	text NOT NULL,
	course_title	text NOT NULL,
	amount		bigint NOT NULL CHECK (amount > 0),
	currency	text NOT NULL DEFAULT 'IDR' CHECK (currency = 'IDR'),
	customer_name	text NOT NULL CHECK (length(customer_name) <= 100),
	customer_email	text NOT NULL CHECK (length(customer_email) <= 254),
	customer_phone	text NOT NULL CHECK (customer_phone ~ '^\+?[0-9]{8,16}$'),
	access_days	integer CHECK (access_days IS NULL OR access_days > 0), -- NULL: lifetime
	status		text NOT NULL DEFAULT 'PENDING' CHECK (status IN
		('PENDING','PAID','FAILED','EXPIRED','CANCELLED','REFUNDED')),
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now(),
	expires_at	timestamptz NOT NULL,
	paid_at		timestamptz,
	idempotency_key	text UNIQUE CHECK (length(idempotency_key) <= 255),
	request_hash	text,
	snap_token	text,
	redirect_url	text,
	snap_error	text,		-- last permanent Snap failure (operators)
	snap_attempts	integer NOT NULL DEFAULT 0,
	needs_reconcile	boolean NOT NULL DEFAULT false, -- Snap said 406
	transaction_id	text,		-- Midtrans transaction id, once known
	payment_type	text,
	flagged		boolean NOT NULL DEFAULT false,
	flag_reason	text,
	partial_refund	boolean NOT NULL DEFAULT false,
	disputed	boolean NOT NULL DEFAULT false,
	reversed	boolean NOT NULL DEFAULT false
);
CREATE INDEX orders_pending_expiry ON orders.orders (expires_at)
	WHERE status = 'PENDING';
CREATE INDEX orders_created ON orders.orders (created_at);

-- Every piece of evidence seen for a known order, applied or not.
CREATE TABLE orders.evidence (
	id		bigserial PRIMARY KEY,
	order_id	text NOT NULL REFERENCES orders.orders (order_id),
	source		text NOT NULL CHECK (source IN ('ingest','recon')),
	ref		bigint NOT NULL,	-- ingest event_id / recon check_id
	stream_seq	bigint NOT NULL,
	kind		text NOT NULL,		-- notification|status|not_found|expired
	transaction_status text,
	fraud_status	text,
	gross_amount	text,
	currency	text,
	payment_type	text,
	transaction_id	text,
	received_at	timestamptz NOT NULL,
	recorded_at	timestamptz NOT NULL DEFAULT now(),
	status_before	text NOT NULL,
	status_after	text NOT NULL,
	result		text NOT NULL CHECK (result IN
		('applied','noop','ignored','flagged','invalid')),
	reason		text NOT NULL,
	raw		jsonb NOT NULL,
	UNIQUE (source, ref)
);
CREATE INDEX evidence_order ON orders.evidence (order_id, id);

-- Status changes, each naming its evidence.  The database refuses PAID
-- without Midtrans proof.
CREATE TABLE orders.transitions (
	id		bigserial PRIMARY KEY,
	order_id	text NOT NULL REFERENCES orders.orders (order_id),
	from_status	text NOT NULL,
	to_status	text NOT NULL,
	evidence_source	text NOT NULL CHECK (evidence_source IN
		('ingest','recon','operator')),
	evidence_ref	bigint,
	evidence_id	bigint REFERENCES orders.evidence (id),
	reason		text NOT NULL,
	at		timestamptz NOT NULL DEFAULT now(),
	txid		bigint NOT NULL DEFAULT txid_current(),
	CONSTRAINT paid_needs_evidence CHECK (to_status <> 'PAID' OR
		(evidence_source IN ('ingest','recon') AND
		 evidence_ref IS NOT NULL AND evidence_id IS NOT NULL)),
	CONSTRAINT forward_only CHECK (
		(from_status = 'PENDING' AND to_status IN
			('PAID','FAILED','EXPIRED','CANCELLED')) OR
		(from_status = 'PAID' AND to_status = 'REFUNDED'))
);
CREATE INDEX transitions_order ON orders.transitions (order_id, id);
-- At most one transition to PAID per order, ever.
CREATE UNIQUE INDEX transitions_one_paid ON orders.transitions (order_id)
	WHERE to_status = 'PAID';

-- New orders start PENDING; a status change needs a transition row with
-- the same from/to written earlier in the same transaction (txid), and
-- only the forward moves exist.
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
			  AND (NEW.status <> 'PAID' OR (t.evidence_id IS NOT NULL
			       AND t.evidence_source IN ('ingest','recon')))) THEN
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
CREATE TRIGGER orders_status BEFORE INSERT OR UPDATE ON orders.orders
	FOR EACH ROW EXECUTE FUNCTION orders.check_order_status();
CREATE TRIGGER orders_no_delete BEFORE DELETE ON orders.orders
	FOR EACH ROW EXECUTE FUNCTION orders.refuse_change();
CREATE TRIGGER orders_no_truncate BEFORE TRUNCATE ON orders.orders
	FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change();

-- Entitlements: history (append-only) and the current state.
CREATE TABLE orders.entitlement_events (
	id		bigserial PRIMARY KEY,
	order_id	text NOT NULL REFERENCES orders.orders (order_id),
	customer_email	text NOT NULL,
	course_id	text NOT NULL,
	action		text NOT NULL CHECK (action IN ('grant','revoke')),
	valid_until	timestamptz,	-- grant: NULL = lifetime
	source		text NOT NULL CHECK (source IN ('ingest','recon','operator')),
	evidence_id	bigint REFERENCES orders.evidence (id),
	audit_id	bigint,
	reason		text NOT NULL,
	at		timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entitlement_events_order ON orders.entitlement_events (order_id, id);

CREATE TABLE orders.entitlements (
	id		bigserial PRIMARY KEY,
	order_id	text NOT NULL REFERENCES orders.orders (order_id),
	customer_email	text NOT NULL,	-- lower-cased
	course_id	text NOT NULL,
	granted_at	timestamptz NOT NULL DEFAULT now(),
	valid_until	timestamptz,	-- NULL = lifetime
	revoked_at	timestamptz,
	grant_event_id	bigint NOT NULL REFERENCES orders.entitlement_events (id),
	revoke_event_id	bigint REFERENCES orders.entitlement_events (id)
);
CREATE UNIQUE INDEX entitlements_one_active ON orders.entitlements (order_id)
	WHERE revoked_at IS NULL;
CREATE INDEX entitlements_lookup ON orders.entitlements (customer_email, course_id)
	WHERE revoked_at IS NULL;
CREATE TRIGGER entitlements_no_delete BEFORE DELETE ON orders.entitlements
	FOR EACH ROW EXECUTE FUNCTION orders.refuse_change();

-- Notifications / status checks naming an order kasir does not know.
CREATE TABLE orders.unknown_notifications (
	id		bigserial PRIMARY KEY,
	source		text NOT NULL CHECK (source IN ('ingest','recon')),
	ref		bigint NOT NULL,
	stream_seq	bigint NOT NULL,
	order_id	text NOT NULL,
	transaction_status text,
	gross_amount	text,
	received_at	timestamptz NOT NULL,
	recorded_at	timestamptz NOT NULL DEFAULT now(),
	raw		jsonb NOT NULL,
	UNIQUE (source, ref)
);

-- Manual actions through the admin socket, refusals included.
CREATE TABLE orders.audit (
	id		bigserial PRIMARY KEY,
	at		timestamptz NOT NULL DEFAULT now(),
	actor		text NOT NULL,
	role		text NOT NULL,
	cmd		text NOT NULL,
	order_id	text,
	reason		text,
	incident	text,
	before		jsonb,
	after		jsonb,
	result		text NOT NULL CHECK (result IN ('ok','refused')),
	error		text
);
CREATE INDEX audit_order ON orders.audit (order_id, id);

DO $$
DECLARE t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['evidence','transitions','entitlement_events',
				 'unknown_notifications','audit'] LOOP
		EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON orders.%I
			FOR EACH ROW EXECUTE FUNCTION orders.refuse_change()',
			t || '_append_only', t);
		EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON orders.%I
			FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change()',
			t || '_no_truncate', t);
	END LOOP;
END $$;

-- Runtime role: read and append everywhere, UPDATE only where state is
-- mutable, never DELETE or TRUNCATE.
GRANT USAGE ON SCHEMA orders TO kasir_order;
GRANT SELECT, INSERT ON orders.orders, orders.evidence, orders.transitions,
	orders.entitlement_events, orders.entitlements,
	orders.unknown_notifications, orders.audit TO kasir_order;
GRANT UPDATE ON orders.orders, orders.entitlements TO kasir_order;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA orders TO kasir_order;
