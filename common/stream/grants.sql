-- Grants of migration "0000_stream" to the daemon's runtime role (run
-- after schema.sql, only when a runtime role is given).  db_migrate()
-- puts validated names in place of the schema and role placeholders.
GRANT USAGE ON SCHEMA {{schema}} TO "{{role}}";
GRANT SELECT, INSERT ON {{schema}}.stream_out,
  {{schema}}.stream_poison TO "{{role}}";
GRANT SELECT, INSERT, UPDATE ON {{schema}}.stream_head,
  {{schema}}.stream_cursor TO "{{role}}";
