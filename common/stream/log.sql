-- Migration "0004_stream_log" of every service schema: the log a
-- producer's appends are written to when its stream has no source table
-- of its own (every stream but kasir-ingest's; docs/backbone.md, "The log:
-- every append written once").
--
-- Until this migration stream_append() inserted into stream_pending and
-- the sequencer moved each row into stream_out (a DELETE, a second copy,
-- their index entries and WAL): in kasir-order's drain, the move was a
-- quarter of PostgreSQL's statement time.  The log is a source table like
-- kasir-ingest's payment_event (tick.sql): rows carry their writer's
-- transaction id, a sequencer pass numbers those committed since the last
-- pass's snapshot and stores ranges of them (stream_tick), and readers
-- render the messages from here.  Each append is written once and never
-- moved.  Append-only.
--
-- The functions take the stream, unlike a service's own source functions
-- (one table holds every log stream of the schema; producer.c passes $1).
-- Rows pending from before this migration are still moved by the
-- sequencer, and numbered before the log's.
-- Added after 0003_stream_tick; never edit a migration that was shipped.
CREATE TABLE IF NOT EXISTS {{schema}}.stream_log (
  pos bigserial PRIMARY KEY, -- order of the appends; a tick's lo..hi
  stream text NOT NULL,
  txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  id uuid NOT NULL,
  type text NOT NULL,
  at timestamptz NOT NULL,
  tail text NOT NULL         -- the body after its seq (sequencer.c)
);
-- txid alone, not (stream, txid): with the stream in this index the
-- planner answered a reader's "pos BETWEEN lo AND hi AND stream = s" with a
-- BitmapAnd of both indexes, reading every entry of the stream for each
-- tick: rendering all 10,000 messages of the backbone test (many small
-- ticks) took 1.2 s; on a scratch cluster, 157 ticks of 64 took 56 ms with
-- that index and 10 ms with this one.
-- The stream is a filter: a schema's log holds one producer's stream or
-- a few.
CREATE INDEX IF NOT EXISTS stream_log_txid
  ON {{schema}}.stream_log (txid);
DROP TRIGGER IF EXISTS stream_log_append_only ON {{schema}}.stream_log;
CREATE TRIGGER stream_log_append_only BEFORE UPDATE OR DELETE
  ON {{schema}}.stream_log FOR EACH ROW
  EXECUTE FUNCTION {{schema}}.refuse_change();
DROP TRIGGER IF EXISTS stream_log_no_truncate ON {{schema}}.stream_log;
CREATE TRIGGER stream_log_no_truncate BEFORE TRUNCATE
  ON {{schema}}.stream_log FOR EACH STATEMENT
  EXECUTE FUNCTION {{schema}}.refuse_change();

-- The stream's rows whose writing transaction is visible in cur and was
-- not visible in last (NULL: a snapshot that sees nothing): at or above
-- last's xmax, or in last's in-progress list.  Two scans of the txid
-- index (the stream a filter on what they find), a UNION
-- ALL and never an OR (see kasir-ingest's 0005_stream_tick: a generic
-- plan answers an OR with a scan of the whole table).  One SELECT, so
-- PostgreSQL inlines it into the caller's statement.
CREATE OR REPLACE FUNCTION {{schema}}.stream_log_ids(s text, last pg_snapshot,
                                                     cur pg_snapshot)
RETURNS TABLE (ord bigint)
LANGUAGE sql STABLE AS $ids$
	SELECT l.pos FROM {{schema}}.stream_log l
	WHERE l.stream = s
	  AND l.txid >= pg_snapshot_xmax(coalesce(last, '1:1:'))
	  AND l.txid < pg_snapshot_xmax(cur)
	  AND pg_visible_in_snapshot(l.txid, cur)
	UNION ALL
	SELECT l.pos FROM {{schema}}.stream_log l
	WHERE l.stream = s
	  AND l.txid = ANY (ARRAY(SELECT pg_snapshot_xip(last)))
	  AND pg_visible_in_snapshot(l.txid, cur)
$ids$;

-- The same rows with lo <= pos <= hi (one stream_tick range, read through
-- the primary key), as stream_append() encoded them.
CREATE OR REPLACE FUNCTION {{schema}}.stream_log(s text, last pg_snapshot,
                                                 cur pg_snapshot, lo bigint,
                                                 hi bigint)
RETURNS TABLE (ord bigint, id uuid, type text, at timestamptz, tail text)
LANGUAGE sql STABLE AS $log$
	SELECT l.pos, l.id, l.type, l.at, l.tail FROM {{schema}}.stream_log l
	WHERE l.pos BETWEEN lo AND hi
	  AND l.stream = s
	  AND pg_visible_in_snapshot(l.txid, cur)
	  AND NOT pg_visible_in_snapshot(l.txid, coalesce(last, '1:1:'))
$log$;

-- Every message of the schema's log streams as consumers get them, for
-- people and tests: stream_out's (numbered before this migration) and
-- the ticks' rendered from the log.  It renders all of it: filter on
-- stream_tick first for anything large.  kasir-ingest's stream is not
-- here (its ticks are payment_event's: ingest.stream_messages).
CREATE OR REPLACE VIEW {{schema}}.stream_log_messages AS
	SELECT o.stream, o.seq, o.id, o.type, o.at, o.body FROM {{schema}}.stream_out o
	UNION ALL
	SELECT t.stream, r.seq, r.id, r.type, r.at,
	       '{"v":1,"stream":"' || t.stream || '","seq":' || r.seq || r.tail
	FROM {{schema}}.stream_tick t,
	     LATERAL (SELECT t.first_seq - 1 + row_number() OVER (ORDER BY f.ord) AS seq,
	                     f.id, f.type, f.at, f.tail
	              FROM {{schema}}.stream_log(t.stream, t.prev, t.snap, t.lo, t.hi) f) r;
