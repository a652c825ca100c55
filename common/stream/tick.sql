-- Migration "0003_stream_tick" of every service schema: a source
-- stream's numbering, one row per range of messages instead of one row
-- per message (docs/backbone.md, "A table as the source").
--
-- A sequencer pass of a producer with a source table (kasir-ingest's
-- payment_event) numbers the rows that became visible between two
-- snapshots (prev, the last pass's; snap, its own).  That set never
-- changes once both snapshots are taken (the source is append-only), so
-- the pass stores what it decided, not copies of the rows: seqs
-- first_seq..last_seq are the set's rows with ord (the source's id)
-- between lo and hi, in ord order.  A pass cuts its set into ranges of at
-- most STREAM_TICK_ROWS (sequencer.c), so that a reader that wants a few
-- seqs renders at most one range's worth more.  This is PgQ's tick:
-- events between two snapshots, kept once, in the table that already
-- holds them.  Readers render the messages from the source
-- (producer.c, st_after_pub).  Append-only like stream_out.
-- Added after 0002_stream_source; never edit a migration that was shipped.
CREATE TABLE IF NOT EXISTS {{schema}}.stream_tick (
  stream text NOT NULL,
  first_seq bigint NOT NULL CHECK (first_seq > 0),
  last_seq bigint NOT NULL,
  lo bigint NOT NULL,
  hi bigint NOT NULL,
  prev pg_snapshot,
  snap pg_snapshot NOT NULL,
  PRIMARY KEY (stream, last_seq),
  CHECK (last_seq >= first_seq AND hi >= lo)
);
DROP TRIGGER IF EXISTS stream_tick_append_only ON {{schema}}.stream_tick;
CREATE TRIGGER stream_tick_append_only BEFORE UPDATE OR DELETE
  ON {{schema}}.stream_tick FOR EACH ROW
  EXECUTE FUNCTION {{schema}}.refuse_change();
DROP TRIGGER IF EXISTS stream_tick_no_truncate ON {{schema}}.stream_tick;
CREATE TRIGGER stream_tick_no_truncate BEFORE TRUNCATE
  ON {{schema}}.stream_tick FOR EACH STATEMENT
  EXECUTE FUNCTION {{schema}}.refuse_change();
