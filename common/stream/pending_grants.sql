-- Grants of migration "0001_stream_pending" to the daemon's runtime role:
-- appenders insert, the sequencer reads and deletes.
GRANT SELECT, INSERT, DELETE ON {{schema}}.stream_pending TO "{{role}}";
GRANT USAGE ON SEQUENCE {{schema}}.stream_pending_pos_seq TO "{{role}}";
