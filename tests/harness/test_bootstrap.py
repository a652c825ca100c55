"""deploy/sql/bootstrap.sql through kasirtest: database, schemas, the owner
and runtime role of every service, and what each role may (not) do."""


import psycopg2

import kasirtest
from kasirtest import SERVICES, Stack

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def refused(st, role, sql, what, code=None):
    """sql run as role must fail (with SQLSTATE code when given)."""
    try:
        st.sql(sql, role=role)
    except psycopg2.Error as e:
        ok = code is None or e.pgcode == code
        check(ok, f"{what}: refused ({e.pgcode} {str(e).splitlines()[0]})")
        return
    check(False, f"{what}: was allowed")


def allowed(st, role, sql, what):
    try:
        st.sql(sql, role=role)
        check(True, what)
    except psycopg2.Error as e:
        check(False, f"{what}: {e}")


INSUFFICIENT = "42501"  # insufficient_privilege

with Stack.for_test() as st:
    roles = {r for (r,) in st.sql("SELECT rolname FROM pg_roles WHERE rolname LIKE 'kasir%'")}
    check(roles == set(kasirtest.db_roles()), f"the ten roles exist: {sorted(roles)}")
    flags = st.sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'kasir%' AND "
                   "(rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls)")
    check(flags == [(0,)], "no kasir role is privileged")
    owners = dict(st.sql("SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace "
                         "WHERE nspname = ANY(%s)", (list(SERVICES.values()),)))
    check(owners == {sch: f"kasir_{svc}_owner" for svc, sch in SERVICES.items()},
          f"each schema owned by its owner role: {owners}")

    # every role logs in over TCP with the password from its secret file
    for role in kasirtest.db_roles():
        check(st.sql("SELECT current_user", role=role) == [(role,)], f"{role} logs in with its password")
    try:
        import psycopg2 as p2
        p2.connect(host="127.0.0.1", port=st.pg.port, user="kasir_order", password="wrong",
                   dbname="kasir", connect_timeout=5).close()
        check(False, "a wrong password is refused")
    except psycopg2.OperationalError:
        check(True, "a wrong password is refused")

    # owners create in their own schema; the runtime role gets SELECT/INSERT
    # through default privileges, not UPDATE/DELETE/TRUNCATE
    for svc, sch in SERVICES.items():
        owner, rt = f"kasir_{svc}_owner", f"kasir_{svc}"
        allowed(st, owner, f"CREATE TABLE {sch}.t_probe (id bigserial PRIMARY KEY, v text)",
                f"{owner} creates a table in {sch}")
        allowed(st, rt, f"INSERT INTO {sch}.t_probe (v) VALUES ('x')", f"{rt} inserts into its schema")
        check(st.sql(f"SELECT v FROM {sch}.t_probe", role=rt) == [("x",)], f"{rt} reads its schema")
        refused(st, rt, f"UPDATE {sch}.t_probe SET v = 'y'", f"{rt} UPDATE by default", INSUFFICIENT)
        refused(st, rt, f"DELETE FROM {sch}.t_probe", f"{rt} DELETE", INSUFFICIENT)
        refused(st, rt, f"TRUNCATE {sch}.t_probe", f"{rt} TRUNCATE", INSUFFICIENT)
        refused(st, rt, f"CREATE TABLE {sch}.t_rt (x int)", f"{rt} CREATE in its own schema", INSUFFICIENT)
        refused(st, rt, "CREATE TABLE public.t_pub (x int)", f"{rt} CREATE in public", INSUFFICIENT)
        refused(st, owner, "CREATE TABLE public.t_pub (x int)", f"{owner} CREATE in public", INSUFFICIENT)
        check(st.sql("SHOW search_path", role=rt) == [(sch,)], f"{rt} search_path = {sch}")

    # nobody reaches another service's schema
    for svc, sch in SERVICES.items():
        for other_svc, other in SERVICES.items():
            if other == sch:
                continue
            for role in (f"kasir_{svc}", f"kasir_{svc}_owner"):
                refused(st, role, f"SELECT * FROM {other}.t_probe",
                        f"{role} reads {other}", INSUFFICIENT)
            refused(st, f"kasir_{svc}_owner", f"CREATE TABLE {other}.t_x (x int)",
                    f"kasir_{svc}_owner creates in {other}", INSUFFICIENT)
            refused(st, f"kasir_{svc}", f"INSERT INTO {other}.t_probe (v) VALUES ('z')",
                    f"kasir_{svc} writes {other}", INSUFFICIENT)

    # idempotent: running it again changes nothing and keeps the data
    st.pg.bootstrap(st.secrets_dir)
    check(st.sql("SELECT v FROM orders.t_probe", role="kasir_order") == [("x",)],
          "bootstrap.sql runs twice; data and rights kept")
    check(st.sql("SELECT has_database_privilege('kasir_order', 'kasir', 'CONNECT'), "
                 "has_database_privilege('public', 'kasir', 'CONNECT')") == [(True, False)],
          "CONNECT on kasir only for the kasir roles")

    if failures:
        raise AssertionError(f"{len(failures)} failure(s): {failures}")
print("all ok")
