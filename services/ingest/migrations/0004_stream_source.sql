-- 0004_stream_source.sql - each notification is written once: the
-- payment_event row is the ingest stream's message (docs/backbone.md,
-- "A table as the source").
--
-- Until this migration kasir-ingest wrote every notification twice in its
-- transaction (the payment_event row, and a stream_pending row carrying
-- the same body to kasir-order), and the sequencer copied the second one
-- into stream_out.  Now the committer inserts the payment_event row only;
-- the column txid records the id of the transaction that wrote it, and the
-- ingest producer's sequencer takes the rows whose writer committed since
-- its last pass (PgQ's snapshot rule: ingest.stream_source_ingest below),
-- renders their message bodies here in SQL and numbers them into
-- stream_out.
--
-- Rows stored before this migration have txid NULL: they were already
-- appended to the stream the old way (stream_pending), and the source
-- never gives them.  The columns are added without a default first, so no
-- existing row is rewritten (the table is append-only); the default then
-- applies to new rows only.
ALTER TABLE ingest.payment_event ADD COLUMN txid xid8;
ALTER TABLE ingest.payment_event ALTER COLUMN txid SET DEFAULT pg_current_xact_id();
-- two more parsed fields the message carries (they were read from the
-- body in memory only); NULL when the body has none
ALTER TABLE ingest.payment_event ADD COLUMN transaction_time text
	CHECK (length(transaction_time) <= 128);
ALTER TABLE ingest.payment_event ADD COLUMN settlement_time text
	CHECK (length(settlement_time) <= 128);
-- A row the source cannot render would stop the stream at that row, so
-- the insert is refused instead (kasir-ingest answers 503 and Midtrans
-- resends): its body must be UTF-8 (kasir-ingest checks that before
-- anything else; this is the database saying the same).  NOT VALID: the
-- rows before this migration are not the source's and are not rescanned.
ALTER TABLE ingest.payment_event ADD CONSTRAINT payment_event_raw_renders
	CHECK (txid IS NULL OR convert_from(raw, 'UTF8') IS NOT NULL) NOT VALID;

CREATE INDEX payment_event_txid ON ingest.payment_event (txid)
	WHERE txid IS NOT NULL;

-- The ingest stream's source (stream.h, stream_producer_conf.source):
-- the rows whose writing transaction is visible in cur (the sequencer
-- statement's own snapshot) and was not visible in last (the snapshot of
-- the last pass that took rows; NULL before the first one, read as
-- "1:1:", a snapshot that sees nothing).  A txid not visible in last is
-- either at or above last's xmax, or one of the transactions last saw in
-- progress (its xip list): two index scans of payment_event_txid, however
-- long ago last's xmin is.  They are two branches of a UNION ALL (never
-- an OR, which a generic plan can only answer with a scan of the whole
-- table: 40 ms a pass at 200,000 rows, measured) and disjoint (xip
-- entries are below last's xmax); the rows are rendered from what the
-- branches read (a join back to the table by id was planned as a merge
-- over its whole primary key: 33 ms).  Each row's message:
--   id   a UUID derived from the event id (md5 of 'kasir.ingest.<id>'),
--        so the same row always renders the same message
--   at   the notification's received_at
--   data event_id, the parsed fields (optional ones left out when NULL),
--        received_at, and raw: the body exactly as received
-- exactly the fields and formats kasir-ingest's C code wrote before
-- (proto/messages.def, payment.notification); the text after "seq" of
-- '{"v":1,"stream":"ingest","seq":N,...}' (the sequencer adds the
-- prefix and the seq).
CREATE FUNCTION ingest.stream_source_ingest(last pg_snapshot, cur pg_snapshot)
RETURNS TABLE (ord bigint, id uuid, type text, at timestamptz, tail text)
LANGUAGE sql STABLE AS $source$
	WITH new AS (
		SELECT e.* FROM ingest.payment_event e
		WHERE e.txid IS NOT NULL
		  AND e.txid >= pg_snapshot_xmax(coalesce(last, '1:1:'))
		  AND e.txid < pg_snapshot_xmax(cur)
		  AND pg_visible_in_snapshot(e.txid, cur)
		UNION ALL
		SELECT e.* FROM ingest.payment_event e
		WHERE e.txid IS NOT NULL
		  AND e.txid = ANY (ARRAY(SELECT pg_snapshot_xip(last)))
		  AND pg_visible_in_snapshot(e.txid, cur))
	SELECT e.id, m.id, 'payment.notification', e.received_at,
	       ',"id":"' || m.id || '","type":"payment.notification","at":"'
	       || m.at || '","data":{"event_id":' || e.id
	       || ',"order_id":' || to_json(e.order_id)
	       || ',"transaction_status":' || to_json(e.transaction_status)
	       || ',"status_code":' || to_json(e.status_code)
	       || ',"gross_amount":' || to_json(e.gross_amount)
	       || ',"received_at":"' || m.at || '"'
	       || coalesce(',"currency":' || to_json(e.currency), '')
	       || coalesce(',"payment_type":' || to_json(e.payment_type), '')
	       || coalesce(',"fraud_status":' || to_json(e.fraud_status), '')
	       || coalesce(',"transaction_id":' || to_json(e.transaction_id), '')
	       || coalesce(',"transaction_time":' || to_json(e.transaction_time), '')
	       || coalesce(',"settlement_time":' || to_json(e.settlement_time), '')
	       || ',"raw":' || convert_from(e.raw, 'UTF8') || '}}'
	FROM new e,
	     LATERAL (SELECT md5('kasir.ingest.' || e.id)::uuid AS id,
	                     to_char(e.received_at AT TIME ZONE 'UTC',
	                             'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at) m
$source$;

COMMENT ON FUNCTION ingest.stream_source_ingest(pg_snapshot, pg_snapshot) IS
	'the ingest stream''s new messages: payment_event rows committed since a snapshot';

GRANT EXECUTE ON FUNCTION ingest.stream_source_ingest(pg_snapshot, pg_snapshot)
	TO kasir_ingest;
