-- The backbone's tables (common/stream, docs/backbone.md), migration
-- "0000_stream" of every service schema.  Built into the binary and run by
-- db_migrate(), which puts the validated schema name in place of the
-- schema placeholder (two braces around the word schema).
-- Changing this file changes what a fresh install creates, never an
-- existing database (the version is recorded once applied).
DO $kasir$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n
      ON n.oid = p.pronamespace
      WHERE n.nspname = '{{schema}}' AND p.proname = 'refuse_change')
  THEN
    CREATE FUNCTION {{schema}}.refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $f$
    BEGIN
      RAISE EXCEPTION 'append-only table %', TG_TABLE_NAME;
    END $f$;
  END IF;
END $kasir$;

-- producer: gap-free counter and the append-only log
CREATE TABLE IF NOT EXISTS {{schema}}.stream_head (
  stream text PRIMARY KEY,
  seq bigint NOT NULL CHECK (seq >= 0)
);
CREATE TABLE IF NOT EXISTS {{schema}}.stream_out (
  stream text NOT NULL,
  seq bigint NOT NULL CHECK (seq > 0),
  id uuid NOT NULL UNIQUE,
  type text NOT NULL,
  at timestamptz NOT NULL,
  body text NOT NULL,
  PRIMARY KEY (stream, seq)
);
DROP TRIGGER IF EXISTS stream_out_append_only ON {{schema}}.stream_out;
CREATE TRIGGER stream_out_append_only BEFORE UPDATE OR DELETE
  ON {{schema}}.stream_out FOR EACH ROW
  EXECUTE FUNCTION {{schema}}.refuse_change();
DROP TRIGGER IF EXISTS stream_out_no_truncate ON {{schema}}.stream_out;
CREATE TRIGGER stream_out_no_truncate BEFORE TRUNCATE
  ON {{schema}}.stream_out FOR EACH STATEMENT
  EXECUTE FUNCTION {{schema}}.refuse_change();

-- consumer: last applied seq per producer stream, and what was
-- refused for good
CREATE TABLE IF NOT EXISTS {{schema}}.stream_cursor (
  stream text PRIMARY KEY,
  seq bigint NOT NULL CHECK (seq >= 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {{schema}}.stream_poison (
  stream text NOT NULL,
  seq bigint NOT NULL,
  type text NOT NULL,
  error text NOT NULL,
  body text NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (stream, seq)
);
DROP TRIGGER IF EXISTS stream_poison_append_only
  ON {{schema}}.stream_poison;
CREATE TRIGGER stream_poison_append_only BEFORE UPDATE OR DELETE
  ON {{schema}}.stream_poison FOR EACH ROW
  EXECUTE FUNCTION {{schema}}.refuse_change();
DROP TRIGGER IF EXISTS stream_poison_no_truncate
  ON {{schema}}.stream_poison;
CREATE TRIGGER stream_poison_no_truncate BEFORE TRUNCATE
  ON {{schema}}.stream_poison FOR EACH STATEMENT
  EXECUTE FUNCTION {{schema}}.refuse_change();
