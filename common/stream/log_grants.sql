-- Grants of migration "0004_stream_log" to the daemon's runtime role:
-- appenders insert, the sequencer, the publisher and the replay server read.
GRANT SELECT, INSERT ON {{schema}}.stream_log TO "{{role}}";
GRANT USAGE ON SEQUENCE {{schema}}.stream_log_pos_seq TO "{{role}}";
GRANT SELECT ON {{schema}}.stream_log_messages TO "{{role}}";
GRANT EXECUTE ON FUNCTION {{schema}}.stream_log_ids(text, pg_snapshot, pg_snapshot)
  TO "{{role}}";
GRANT EXECUTE ON FUNCTION {{schema}}.stream_log(text, pg_snapshot, pg_snapshot, bigint, bigint)
  TO "{{role}}";
