-- Migration "0002_stream_source" of every service schema: where a
-- producer whose stream has a source table (stream_producer_conf.source,
-- docs/backbone.md "A table as the source") keeps the last snapshot its
-- sequencer numbered up to.  NULL for every other stream, and for a
-- source stream before its first pass.
-- Added after 0001_stream_pending; never edit a migration that was shipped.
ALTER TABLE {{schema}}.stream_head ADD COLUMN IF NOT EXISTS snap pg_snapshot;
