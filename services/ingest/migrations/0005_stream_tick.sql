-- 0005_stream_tick.sql - the ingest stream numbered in ranges: the
-- sequencer stores which payment_event rows got which seqs
-- (ingest.stream_tick, the backbone's migration 0003_stream_tick) instead
-- of a copy of each message in stream_out, and readers render the
-- messages from payment_event (docs/backbone.md, "A table as the source").
--
-- Until this migration the sequencer rendered every new row with
-- stream_source_ingest(last, cur) (0004) and inserted the message into
-- stream_out: a second row, two index entries and its WAL for every
-- notification.  That function is replaced by two:
--   stream_source_ingest_ids(last, cur)   the new rows' ids (the sequencer)
--   stream_source_ingest(last, cur, lo, hi)   those with lo <= id <= hi,
--                                         rendered (publisher, replay)
-- Messages numbered before this migration stay in stream_out; readers
-- take both (producer.c).

DROP FUNCTION ingest.stream_source_ingest(pg_snapshot, pg_snapshot);

-- The rows whose writing transaction is visible in cur and was not
-- visible in last (NULL: "1:1:", a snapshot that sees nothing).  A txid
-- not visible in last is at or above last's xmax, or one of the
-- transactions last saw in progress (its xip list): two index scans of
-- payment_event_txid, however long ago last's xmin is.  Two branches of a
-- UNION ALL, never an OR (a generic plan answers an OR with a scan of the
-- whole table: 40 ms a pass at 200,000 rows, measured), disjoint (xip
-- entries are below last's xmax).
CREATE FUNCTION ingest.stream_source_ingest_ids(last pg_snapshot, cur pg_snapshot)
RETURNS TABLE (ord bigint)
LANGUAGE sql STABLE AS $ids$
	SELECT e.id FROM ingest.payment_event e
	WHERE e.txid IS NOT NULL
	  AND e.txid >= pg_snapshot_xmax(coalesce(last, '1:1:'))
	  AND e.txid < pg_snapshot_xmax(cur)
	  AND pg_visible_in_snapshot(e.txid, cur)
	UNION ALL
	SELECT e.id FROM ingest.payment_event e
	WHERE e.txid IS NOT NULL
	  AND e.txid = ANY (ARRAY(SELECT pg_snapshot_xip(last)))
	  AND pg_visible_in_snapshot(e.txid, cur)
$ids$;

-- The same rows with lo <= id <= hi (a stream_tick range: read through
-- the primary key), rendered.  Each row's message:
--   id   a UUID derived from the event id (md5 of 'kasir.ingest.<id>'),
--        so the same row always renders the same message
--   at   the notification's received_at
--   data event_id, the parsed fields (optional ones left out when NULL),
--        received_at, and raw: the body exactly as received
-- exactly the fields and formats kasir-ingest's C code wrote before
-- (proto/messages.def, payment.notification); the text after "seq" of
-- '{"v":1,"stream":"ingest","seq":N,...}' (the reader adds the prefix
-- and the seq).  One SELECT, so PostgreSQL inlines it into the reader's
-- query.
CREATE FUNCTION ingest.stream_source_ingest(last pg_snapshot, cur pg_snapshot,
                                            lo bigint, hi bigint)
RETURNS TABLE (ord bigint, id uuid, type text, at timestamptz, tail text)
LANGUAGE sql STABLE AS $source$
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
	FROM ingest.payment_event e,
	     LATERAL (SELECT md5('kasir.ingest.' || e.id)::uuid AS id,
	                     to_char(e.received_at AT TIME ZONE 'UTC',
	                             'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at) m
	WHERE e.id BETWEEN lo AND hi
	  AND e.txid IS NOT NULL
	  AND pg_visible_in_snapshot(e.txid, cur)
	  AND NOT pg_visible_in_snapshot(e.txid, coalesce(last, '1:1:'))
$source$;

COMMENT ON FUNCTION ingest.stream_source_ingest_ids(pg_snapshot, pg_snapshot) IS
	'the ingest stream''s new messages: payment_event ids committed since a snapshot';
COMMENT ON FUNCTION ingest.stream_source_ingest(pg_snapshot, pg_snapshot, bigint, bigint) IS
	'the ingest stream''s messages of one stream_tick range, rendered';

GRANT EXECUTE ON FUNCTION ingest.stream_source_ingest_ids(pg_snapshot, pg_snapshot)
	TO kasir_ingest;
GRANT EXECUTE ON FUNCTION ingest.stream_source_ingest(pg_snapshot, pg_snapshot, bigint, bigint)
	TO kasir_ingest;

-- Every message of the ingest stream as consumers get it, for people and
-- tests (one row per seq: stream_out's, then the ticks' rendered).  It
-- renders the whole stream: filter on stream_tick first for anything
-- large.  kasir-ingest itself reads through its own query (producer.c).
CREATE VIEW ingest.stream_messages AS
	SELECT o.stream, o.seq, o.id, o.type, o.at, o.body FROM ingest.stream_out o
	UNION ALL
	SELECT t.stream, r.seq, r.id, r.type, r.at,
	       '{"v":1,"stream":"' || t.stream || '","seq":' || r.seq || r.tail
	FROM ingest.stream_tick t,
	     LATERAL (SELECT t.first_seq - 1 + row_number() OVER (ORDER BY f.ord) AS seq,
	                     f.id, f.type, f.at, f.tail
	              FROM ingest.stream_source_ingest(t.prev, t.snap, t.lo, t.hi) f) r;

COMMENT ON VIEW ingest.stream_messages IS
	'the ingest stream, every seq: stream_out and the rendered stream_tick ranges';
