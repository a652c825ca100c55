-- Migration "0001_stream_pending" of every service schema: the queue of
-- committed messages waiting for their seq (docs/backbone.md, "Parallel
-- writers").  Appenders insert here without touching stream_head, so any
-- number of transactions append to one stream at once; the sequencer
-- (common/stream/sequencer.c) moves committed rows in pos order into
-- stream_out with the next gap-free seqs, and deletes them from here, in
-- one transaction.  This table is a queue, not a log: rows are deleted
-- once sequenced (stream_out stays append-only).
-- Added after 0000_stream; never edit a migration that was shipped.
CREATE TABLE IF NOT EXISTS {{schema}}.stream_pending (
  stream text NOT NULL,
  pos bigserial,          -- order of the appends; not gap-free, not seq
  id uuid NOT NULL UNIQUE,
  type text NOT NULL,
  at timestamptz NOT NULL,
  tail text NOT NULL,     -- the body after its seq: see sequencer.c
  PRIMARY KEY (stream, pos)
);
