-- 0001_ops.sql - kasirctl's own schema "ops": its record of every command
-- it ran (ops.audit), incidents and incident notes.
-- Run as kasir_ctl_owner (by kasirctl on first use, or by the dev stack);
-- the runtime role kasir_ctl gets SELECT and INSERT through the default
-- privileges of deploy/sql/bootstrap.sql, and UPDATE only on the closing
-- columns of ops.incident.  Other services' tables are never written by
-- kasirctl: changes go through the owning daemon's admin socket, which
-- audits them in its own schema.

-- Append-only tables refuse UPDATE, DELETE and TRUNCATE for everybody.
CREATE OR REPLACE FUNCTION ops.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'ops.%: % refused, the table is append-only',
		TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

-- One incident of the SOP.  Opened with a severity and a title; closed
-- once, with the post-mortem template.  P0/P1 cannot be closed without
-- every template field (checked here as well as by kasirctl).
CREATE TABLE ops.incident (
	id		bigserial PRIMARY KEY,
	severity	text NOT NULL CHECK (severity IN ('P0','P1','P2','P3')),
	title		text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
	opened_at	timestamptz NOT NULL DEFAULT now(),
	opened_by	text NOT NULL,
	closed_at	timestamptz,
	closed_by	text,
	root_cause	text CHECK (length(root_cause) <= 4000),
	impact		text CHECK (length(impact) <= 4000),
	resolution	text CHECK (length(resolution) <= 4000),
	preventive	text CHECK (length(preventive) <= 4000),
	owner		text CHECK (length(owner) <= 200),
	CONSTRAINT closed_by_someone CHECK ((closed_at IS NULL) = (closed_by IS NULL)),
	CONSTRAINT severe_needs_postmortem CHECK (closed_at IS NULL
		OR severity IN ('P2','P3')
		OR (nullif(btrim(root_cause), '') IS NOT NULL
		    AND nullif(btrim(impact), '') IS NOT NULL
		    AND nullif(btrim(resolution), '') IS NOT NULL
		    AND nullif(btrim(preventive), '') IS NOT NULL
		    AND nullif(btrim(owner), '') IS NOT NULL))
);

-- An incident may change exactly once: open -> closed.  What it was
-- opened as never changes.
CREATE OR REPLACE FUNCTION ops.incident_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP <> 'UPDATE' THEN
		RAISE EXCEPTION 'ops.incident: % refused', TG_OP
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF OLD.closed_at IS NOT NULL THEN
		RAISE EXCEPTION 'ops.incident: INC-% is closed', OLD.id
			USING ERRCODE = 'check_violation';
	END IF;
	IF NEW.id <> OLD.id OR NEW.severity <> OLD.severity
	   OR NEW.title <> OLD.title OR NEW.opened_at <> OLD.opened_at
	   OR NEW.opened_by <> OLD.opened_by THEN
		RAISE EXCEPTION 'ops.incident: only closing is allowed'
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER incident_guard BEFORE UPDATE OR DELETE ON ops.incident
	FOR EACH ROW EXECUTE FUNCTION ops.incident_guard();
CREATE TRIGGER incident_no_truncate BEFORE TRUNCATE ON ops.incident
	FOR EACH STATEMENT EXECUTE FUNCTION ops.refuse_change();
GRANT UPDATE (closed_at, closed_by, root_cause, impact, resolution,
	      preventive, owner) ON ops.incident TO kasir_ctl;

CREATE TABLE ops.incident_note (
	id		bigserial PRIMARY KEY,
	incident_id	bigint NOT NULL REFERENCES ops.incident (id),
	at		timestamptz NOT NULL DEFAULT now(),
	actor		text NOT NULL,
	role		text NOT NULL,
	text		text NOT NULL CHECK (length(text) BETWEEN 1 AND 4000)
);
CREATE INDEX incident_note_incident ON ops.incident_note (incident_id, id);

-- Every command kasirctl ran, read-only ones included, with its outcome:
-- ok, refused (by kasirctl or by the daemon, which audits it too) or
-- failed (service not answering, database error).
CREATE TABLE ops.audit (
	id		bigserial PRIMARY KEY,
	at		timestamptz NOT NULL DEFAULT now(),
	actor		text NOT NULL,		-- unix user
	role		text NOT NULL,		-- engineer | support | none
	command		text NOT NULL,		-- "access grant"
	changing	boolean NOT NULL,
	service		text,			-- the daemon asked, if one
	target		text,			-- order id, incident, ...
	args		jsonb,
	reason		text,
	incident_id	bigint REFERENCES ops.incident (id),
	result		text NOT NULL CHECK (result IN ('ok','refused','failed')),
	error		text
);
CREATE INDEX audit_target ON ops.audit (target, id);
CREATE INDEX audit_incident ON ops.audit (incident_id, id);

DO $$
DECLARE t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['incident_note', 'audit'] LOOP
		EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON ops.%I
			FOR EACH ROW EXECUTE FUNCTION ops.refuse_change()',
			t || '_append_only', t);
		EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON ops.%I
			FOR EACH STATEMENT EXECUTE FUNCTION ops.refuse_change()',
			t || '_no_truncate', t);
	END LOOP;
END $$;
