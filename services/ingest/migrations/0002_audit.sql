-- ingest.audit: every operator command that reads bulk data out of
-- kasir-ingest (export of payment events for finance and audit), with who,
-- why and under which incident -- refusals included.  Append-only.
CREATE TABLE ingest.audit (
	id		bigserial PRIMARY KEY,
	at		timestamptz NOT NULL DEFAULT now(),
	actor		text NOT NULL,
	role		text NOT NULL,
	cmd		text NOT NULL,
	reason		text,
	incident	text,
	args		jsonb,
	result		text NOT NULL CHECK (result IN ('ok', 'refused')),
	error		text
);

CREATE TRIGGER audit_append_only
	BEFORE UPDATE OR DELETE ON ingest.audit
	FOR EACH ROW EXECUTE FUNCTION ingest.refuse_change();
CREATE TRIGGER audit_no_truncate
	BEFORE TRUNCATE ON ingest.audit
	FOR EACH STATEMENT EXECUTE FUNCTION ingest.refuse_change();

GRANT SELECT, INSERT ON ingest.audit TO kasir_ingest;
GRANT USAGE, SELECT ON SEQUENCE ingest.audit_id_seq TO kasir_ingest;
