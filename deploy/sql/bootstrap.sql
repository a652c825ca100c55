-- deploy/sql/bootstrap.sql - the database, schemas and roles of kasir.
--
-- Run by a superuser, once per cluster; idempotent (safe to run again, it
-- also repairs drifted ownership and rights):
--
--   psql -v ON_ERROR_STOP=1 -d postgres -f deploy/sql/bootstrap.sql
--
-- Creates database kasir and, per service, a schema and two roles:
--
--   service     schema   owner role (migrations)     runtime role
--   ingest      ingest   kasir_ingest_owner          kasir_ingest
--   order       orders   kasir_order_owner           kasir_order
--   notifier    notify   kasir_notifier_owner        kasir_notifier
--   reconciler  recon    kasir_reconciler_owner      kasir_reconciler
--   ctl         ops      kasir_ctl_owner             kasir_ctl
--
-- The owner role owns its schema and everything its migrations create.
-- The runtime role has USAGE on its own schema only and, through default
-- privileges, SELECT and INSERT on the tables (USAGE/SELECT on the
-- sequences) its owner creates.  UPDATE is never a default: a migration
-- grants it explicitly on the few mutable tables (cursors, job states), so
-- append-only tables stay append-only by rights as well as by trigger.
-- No role gets anything in another service's schema, and nobody can create
-- objects in schema public.
--
-- Passwords are not set here (no secret in the repository): the deployment
-- sets them from the secret files db-<role>, e.g.
--   ALTER ROLE kasir_order PASSWORD '<contents of db-kasir_order>';
-- (tests/lib/kasirtest.py and deploy/dev/up do exactly that).

\set ON_ERROR_STOP on

SELECT 'CREATE DATABASE kasir ENCODING ''UTF8'' TEMPLATE template0'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'kasir') \gexec

-- Roles are cluster-wide.
DO $bootstrap$
DECLARE
	svc text;
	r text;
BEGIN
	FOREACH svc IN ARRAY ARRAY['ingest', 'order', 'notifier', 'reconciler', 'ctl'] LOOP
		FOREACH r IN ARRAY ARRAY['kasir_' || svc || '_owner', 'kasir_' || svc] LOOP
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
				EXECUTE format('CREATE ROLE %I LOGIN', r);
			END IF;
			EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB '
				       'NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT', r);
			EXECUTE format('GRANT CONNECT ON DATABASE kasir TO %I', r);
		END LOOP;
	END LOOP;
END
$bootstrap$;

REVOKE ALL ON DATABASE kasir FROM PUBLIC;

\connect kasir

REVOKE CREATE ON SCHEMA public FROM PUBLIC;

DO $bootstrap$
DECLARE
	s record;
	owner_role text;
	runtime_role text;
BEGIN
	FOR s IN SELECT * FROM (VALUES ('ingest', 'ingest'), ('order', 'orders'),
				       ('notifier', 'notify'), ('reconciler', 'recon'),
				       ('ctl', 'ops')) AS t(svc, schema) LOOP
		owner_role := 'kasir_' || s.svc || '_owner';
		runtime_role := 'kasir_' || s.svc;

		EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I',
			       s.schema, owner_role);
		EXECUTE format('ALTER SCHEMA %I OWNER TO %I', s.schema, owner_role);
		EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', s.schema);
		EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', s.schema, runtime_role);

		EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I '
			       'GRANT SELECT, INSERT ON TABLES TO %I',
			       owner_role, s.schema, runtime_role);
		EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I '
			       'GRANT USAGE, SELECT ON SEQUENCES TO %I',
			       owner_role, s.schema, runtime_role);

		EXECUTE format('ALTER ROLE %I IN DATABASE kasir SET search_path = %I',
			       owner_role, s.schema);
		EXECUTE format('ALTER ROLE %I IN DATABASE kasir SET search_path = %I',
			       runtime_role, s.schema);
	END LOOP;
END
$bootstrap$;
