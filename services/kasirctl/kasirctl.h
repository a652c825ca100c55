/*
 * kasirctl.h - the operator's tool: internals shared by its files.
 *
 *   main.c        command line, role, the command table, the audit record
 *   conf.c        kasirctl.yaml, or var/dev.env in the dev stack
 *   call.c        admin socket requests to the daemons (admin_socket.h)
 *   ops.c         the "ops" schema: migrations, ops.audit, incidents
 *   output.c      --json and text output, errors, timestamps
 *   status.c      kasirctl status
 *   order_show.c  kasirctl order show ID
 *   doctor.c      kasirctl doctor
 *   findings.c    doctor's findings: SOP severity, scenario, step, command
 *   reconcile.c   kasirctl reconcile ID | --pending, reconcile-mode on|off
 *   access.c      kasirctl access grant ID
 *   notify.c      kasirctl notify resend|requeue, reminders pause|resume
 *   incident.c    kasirctl incident open|note|close|report
 *   export.c      kasirctl export orders|events
 *   evidence.c    kasirctl evidence ORDER_ID | verify FILE (the archive:
 *                 evidence_archive.c)
 *   refund.c      kasirctl refund ORDER_ID
 *   drill.c       kasirctl drill list|run|history (drill.h: drill_probe.c
 *                 HTTP and /metrics, drill_history.c)
 *
 * kasirctl never writes another service's tables: every change is an admin
 * request to the owning daemon, which checks the role (from the socket's
 * peer credentials, optionally lowered by "as_role") and audits the change
 * in its own schema in the same transaction.  kasirctl itself writes only
 * the "ops" schema: its own record of every command it ran, incidents and
 * incident notes.
 *
 * One invocation = one struct ctl, freed at one point (ctl_fini).
 */
#ifndef KASIR_KASIRCTL_H
#define KASIR_KASIRCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin_socket.h"
#include "config.h"

struct cJSON;
struct kasir_db;

#define CTL_NAME         "kasirctl"
#define CTL_SCHEMA       "ops"
#define CTL_ROLE         "kasir_ctl"
#define CTL_REASON_MAX   500  /* --reason, incident texts: bytes */
#define CTL_TEXT_MAX     4000 /* incident notes and template fields */
#define CTL_TITLE_MAX    200
#define CTL_ARG_MAX      200  /* any other argument */
#define CTL_INCIDENT_MAX 32   /* "INC-123" */
#define CTL_LINE_MAX     4096 /* a dev.env line */
#define CTL_LIST_MAX     1000 /* rows of one ops listing (ops.c) */

/* Exit statuses (docs/kasirctl.md). */
enum ctl_exit {
	CTL_EXIT_OK = 0,
	CTL_EXIT_FAILED = 1,      /* refused, unknown order, doctor P0/P1 */
	CTL_EXIT_USAGE = 2,       /* bad command line or configuration */
	CTL_EXIT_UNAVAILABLE = 3, /* a service (or the ops database) is not
	                             answering */
};

/* The daemons kasirctl talks to. */
enum ctl_svc {
	SVC_INGEST = 0,
	SVC_ORDER,
	SVC_NOTIFIER,
	SVC_RECONCILER,
	SVC_COUNT
};

/* "kasir-ingest"... and the short name used in config ("ingest"...). */
const char *ctl_svc_name(enum ctl_svc s);
const char *ctl_svc_key(enum ctl_svc s);

/* ---- configuration (conf.c) ------------------------------------------ */

/* "deployment:" in kasirctl.yaml; absent means production.  Only dev and
 * staging may be drilled (drill.c). */
enum ctl_deployment {
	CTL_DEPLOY_PRODUCTION = 0,
	CTL_DEPLOY_STAGING,
	CTL_DEPLOY_DEV,
};
/* enum ctl_deployment for "dev"/"staging"/"production" (NULL: production),
 * -EINVAL otherwise. */
int ctl_deployment_parse(const char *s);

/* kasirctl drill (drill.c): how faults are injected and measured. */
struct ctl_drill_conf {
	char *stop_command;  /* "systemctl stop {unit}"; NULL: no 6.5 drill */
	char *start_command; /* "systemctl start {unit}" */
	char *api_url;       /* kasir-order's public API, drill orders */
	struct conf_secret api_token;
	char *course;             /* the catalog's drill course */
	char *fake_midtrans;      /* fake Midtrans control base URL */
	char *smtp_control;       /* smtp-sink control base URL */
	char *metrics[SVC_COUNT]; /* http://HOST:PORT/metrics per daemon */
	int64_t timeout_ms;       /* each phase of a drill */
};

struct ctl_conf {
	char *socket[SVC_COUNT]; /* nng url; NULL: not configured */
	int64_t timeout_ms;      /* per admin request */
	int64_t slow_timeout_ms; /* reconcile (asks Midtrans), export */

	/* the ops database (optional: without it nothing is recorded and
	 * incident commands are unavailable) */
	char *db_url;
	struct conf_secret db_password;
	char *db_migrate_url;
	struct conf_secret db_migrate_password;
	char *db_migrations;

	char *engineer_group; /* unix groups -> roles */
	char *support_group;

	/* evidence bundles (evidence.c): the key that signs their manifest
	 * (NULL value: not configured) and the id written beside it */
	struct conf_secret evidence_key;
	char *evidence_key_id;

	char *deployment; /* "dev" | "staging" | "production" (default) */
	struct ctl_drill_conf drill;

	/* doctor thresholds */
	int64_t lag_max;         /* stream lag (messages) before P2 */
	int64_t expiry_grace_ms; /* pending past expiry by more: P2 */
	int64_t recent_ms;       /* window for Snap failures, unknown
	                            notifications */
	int64_t snap_window_ms;  /* every Snap attempt in it failed: P0 */
};

/*
 * Finds and loads the configuration: path (--config) if not NULL, else
 * $KASIRCTL_CONFIG, else the dev stack's env file ($KASIR_DEV_ENV or
 * var/dev.env found by walking up from the cwd: its KASIRCTL_CONFIG, or
 * its KASIR_<SVC>_SOCKET lines), else /etc/kasir/kasirctl.yaml.
 * On success *ret_source (caller frees) names what was used.  On failure
 * why holds every error (file:line: message lines).
 */
int ctl_conf_find_load(const char *path, struct ctl_conf *conf,
                       char **ret_source, char *why, size_t why_len);
/* Loads one kasirctl.yaml, every check included (its table's finish hook):
 * what --check-config and --config both use.  0, or < 0 with why holding
 * the errors (file:line: message lines). */
int ctl_conf_load_file(const char *file, struct ctl_conf *conf, char *why,
                       size_t why_len);
void ctl_conf_free(struct ctl_conf *conf);
/* Parses a dev.env file into conf (sockets only, or KASIRCTL_CONFIG
 * which is then loaded).  Exposed for the unit test. */
int ctl_devenv_load(const char *file, struct ctl_conf *conf, char *why,
                    size_t why_len);
/* One shell word as written by shlex.quote(): 'a'"'"'b', "x", plain.
 * 0 or -EINVAL; out gets the value. */
int ctl_shell_unquote(const char *in, char *out, size_t out_len);

/* ---- one invocation --------------------------------------------------- */

struct ctl {
	struct ctl_conf conf;
	char *conf_source;         /* owned */
	bool json;                 /* --json */
	bool raw_replies;          /* replies kept byte for byte (evidence):
	                            * never made terminal-safe */
	char user[64];             /* unix user name */
	enum admin_role unix_role; /* from groups (root: engineer) */
	enum admin_role role;      /* effective: KASIR_ROLE may lower it */
	const char *reason;        /* --reason; NULL if absent */
	char incident[CTL_INCIDENT_MAX]; /* normalised "INC-n"; "" if none */
	int64_t incident_id;             /* 0 if none */

	struct kasir_db *ops; /* lazily opened; NULL until then */
	bool ops_tried;
	bool ops_ok;

	/* what the audit record says about this run (main.c writes it) */
	const char *command; /* "access grant" */
	const char *target_service;
	char target[CTL_ARG_MAX]; /* order id, incident id... */
	struct cJSON *audit_args; /* owned */
	const char *result;       /* "ok" | "refused" | "failed" */
	char error[704];          /* "service: code: message" */
	bool changing;            /* the command changes something */
};

/* ---- admin requests (call.c) ----------------------------------------- */

/* Why a request did not succeed. */
struct ctl_error {
	char service[32]; /* "kasir-order", or "kasirctl" */
	char socket[256]; /* the url asked; "" when none */
	char code[64];    /* "order_not_found", "role_required",
	                     "service_unavailable", ... */
	char message[512];
	int exit; /* enum ctl_exit */
};

/*
 * Sends {"v":1,"cmd":cmd,"args":args,"actor","as_role","reason",
 * "incident"} to svc and waits up to timeout_ms (0: the configured
 * default).  args is borrowed (NULL: {}).  On success returns 0 and
 * *ret_result (caller frees) is the reply's result.  On failure returns a
 * negative error and fills *err (service not configured or not answering,
 * an error reply, a malformed reply).
 */
int ctl_call(struct ctl *c, enum ctl_svc svc, const char *cmd,
             const struct cJSON *args, int64_t timeout_ms,
             struct cJSON **ret_result, struct ctl_error *err);
/* Code of a socket kasirctl may not open (EACCES/EPERM on connect). */
#define CTL_E_PERMISSION_DENIED "permission_denied"
/* True when err says this user has no access to the daemon: the socket's
 * permissions refused the connection (permission_denied) or the daemon
 * refused the role (role_required).  Never "down". */
bool ctl_error_access(const struct ctl_error *err);

/* True when err says the daemon does not know the command. */
bool ctl_error_unknown_command(const struct ctl_error *err);

/* True when err says the daemon answers but cannot reach its database. */
bool ctl_error_database(const struct ctl_error *err);

/* ---- doctor's findings (findings.c) ------------------------------------ */

/* One kind of finding: what the SOP says about it, declared once. */
struct ctl_finding_def {
	const char *id;       /* the check name: "snap_outage" */
	const char *severity; /* "P0".."P3" */
	const char *scenario; /* SOP scenario "6.1".."6.5", "7" (forbidden) */
	const char *step;     /* the SOP step to follow, in our words */
	const char *command;  /* what resolves it */
	const char *alert;    /* the alert for the same fact, or NULL */
	bool root_cause;      /* when found, every other finding is listed
	                         under it */
};

/* The row for id, or NULL. */
const struct ctl_finding_def *ctl_finding_def(const char *id);
/* The whole table (static storage). */
const struct ctl_finding_def *ctl_finding_defs(size_t *ret_count);

/* ---- ops schema (ops.c) ------------------------------------------------ */

/* Opens the ops database once (applying migrations when they are missing
 * and a migrate_url is configured).  0, or KASIR_EDB / -ENOENT (not
 * configured) with why filled. */
int ops_open(struct ctl *c, char *why, size_t why_len);
/* Writes the ops.audit row for this run (c->result etc.). */
int ops_audit(struct ctl *c);
/* Manual actions recorded by kasirctl (ops.audit), as a JSON array of
 * rows: for an order (target) or an incident.  *ret caller frees. */
int ops_audit_for_order(struct ctl *c, const char *order_id,
                        struct cJSON **ret);
int ops_audit_for_incident(struct ctl *c, int64_t incident_id,
                           struct cJSON **ret);
/* "INC-12" or "12" -> 12.  -EINVAL when not an incident id. */
int ops_incident_parse(const char *s, int64_t *ret_id);
/* The incident row as JSON; KASIR_ENOTFOUND when absent. */
int ops_incident_get(struct ctl *c, int64_t id, struct cJSON **ret);
/* detected_by may be NULL (then asked for at close). */
int ops_incident_open(struct ctl *c, const char *severity, const char *title,
                      const char *detected_by, int64_t *ret_id);
int ops_incident_note(struct ctl *c, int64_t id, const char *text);
/* The SOP template fields (section 8) an incident is closed with, in the
 * order of fields[] below. */
#define INCIDENT_FIELDS 6
/* fields: root_cause, impact, resolution, preventive, owner, detected_by
 * (NULL: absent; detected_by is kept when it was given at open). */
int ops_incident_close(struct ctl *c, int64_t id,
                       const char *const fields[INCIDENT_FIELDS]);
int ops_incident_notes(struct ctl *c, int64_t id, struct cJSON **ret);
/* [{id}] of the incidents naming order_id (title, a note, or a kasirctl
 * command on it run under the incident), at most 50.  *ret caller frees. */
int ops_incidents_naming(struct ctl *c, const char *order_id,
                         struct cJSON **ret);
/* Open incidents (all: closed ones too), newest first. */
int ops_incident_list(struct ctl *c, bool all, struct cJSON **ret);
/* Message of the last database error (for the user). */
const char *ops_last_error(struct ctl *c);

/* ---- output (output.c) ------------------------------------------------- */

/* Prints {"ok":true,"command":...,"result":result} (--json; takes result)
 * and returns CTL_EXIT_OK; in text mode only frees result. */
int out_json_ok(struct ctl *c, struct cJSON *result);
/* Reports err (stderr in text mode, {"ok":false,...} on stdout with
 * --json), records it for the audit and returns err->exit. */
int out_fail(struct ctl *c, const struct ctl_error *err);
/* out_fail with what was found all the same (takes result, may be NULL):
 * --json puts it under "result" beside "error" (order show of an order
 * only other services name). */
int out_fail_result(struct ctl *c, const struct ctl_error *err,
                    struct cJSON *result);
/* A failure found by kasirctl itself (code, exit, printf message). */
int out_fail_local(struct ctl *c, const char *code, int exit, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));
/* Text output helpers (no-ops with --json). */
void out_text(struct ctl *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Field getters that never return NULL: "" / "-" for absent or null. */
const char *j_str(const struct cJSON *o, const char *key);
void text_terminal_safe(char *s);
void json_terminal_safe(struct cJSON *o, bool c0);
double j_num(const struct cJSON *o, const char *key);
bool j_bool(const struct cJSON *o, const char *key);
/* RFC 3339 ("2026-11-23T09:33:19.123Z", "2026-11-23 09:33:19.12+00")
 * -> unix ms.  -EINVAL when unparsable. */
int ts_parse(const char *s, int64_t *ret_ms);
/* "3m", "2h10m", "4d" for an age in ms. */
void fmt_age(int64_t ms, char *buf, size_t len);

/* ---- commands ------------------------------------------------------------ */

/* argv holds the words after the command name(s); options already
 * consumed by main (--json, --reason, --incident). Each returns an exit
 * status. */
int cmd_status(struct ctl *c, int argc, char **argv);
int cmd_order_show(struct ctl *c, int argc, char **argv);
int cmd_order_find(struct ctl *c, int argc, char **argv);
int cmd_doctor(struct ctl *c, int argc, char **argv);
int cmd_reconcile(struct ctl *c, int argc, char **argv);
int cmd_reconcile_mode(struct ctl *c, int argc, char **argv);
int cmd_access_grant(struct ctl *c, int argc, char **argv);
int cmd_notify_resend(struct ctl *c, int argc, char **argv);
int cmd_notify_requeue(struct ctl *c, int argc, char **argv);
int cmd_notify_decide(struct ctl *c, int argc, char **argv);
int cmd_reminders(struct ctl *c, int argc, char **argv);
int cmd_incident_open(struct ctl *c, int argc, char **argv);
int cmd_incident_note(struct ctl *c, int argc, char **argv);
int cmd_incident_close(struct ctl *c, int argc, char **argv);
int cmd_incident_report(struct ctl *c, int argc, char **argv);
int cmd_incident_list(struct ctl *c, int argc, char **argv);
int cmd_export(struct ctl *c, int argc, char **argv);
int cmd_evidence(struct ctl *c, int argc, char **argv);
int cmd_evidence_verify(struct ctl *c, int argc, char **argv);
int cmd_refund(struct ctl *c, int argc, char **argv);
int cmd_drill_list(struct ctl *c, int argc, char **argv);
int cmd_drill_run(struct ctl *c, int argc, char **argv);
int cmd_drill_history(struct ctl *c, int argc, char **argv);

/* doctor.c, shared with drill: every check run once, no output; the
 * object --json doctor prints as result plus "at_ms".  NULL on ENOMEM.
 * err (NULL: not wanted) gets what each daemon's status call failed
 * with, as ctl_collect_status gives it. */
struct cJSON *ctl_doctor_collect(struct ctl *c,
                                 struct ctl_error err[SVC_COUNT]);

/* status.c, shared with doctor: "status" of every configured daemon
 * (st[s] NULL when it did not answer: err[s] says why; caller frees st),
 * and the stream lags computed from them (array; caller frees). */
void ctl_collect_status(struct ctl *c, struct cJSON *st[SVC_COUNT],
                        struct ctl_error err[SVC_COUNT]);
struct cJSON *ctl_stream_lags(struct cJSON *const st[SVC_COUNT]);
/* When every configured daemon refused this user (ctl_error_access: the
 * socket's permissions or role none), reports that as the run's failure
 * and returns its exit status (1); otherwise returns -1 and prints
 * nothing. */
int ctl_no_access(struct ctl *c, const struct ctl_error err[SVC_COUNT]);

/* Shared by the changing commands: sends one admin request to svc.  args
 * is taken over (kept for the audit record).  Returns an exit status: on
 * CTL_EXIT_OK *ret_result (caller frees) is the daemon's result; otherwise
 * the failure was reported (out_fail) and recorded for the audit. */
int ctl_change(struct ctl *c, enum ctl_svc svc, const char *cmd,
               struct cJSON *args, int64_t timeout_ms,
               struct cJSON **ret_result);

/* Option parsing for command arguments: "--name value" or "--name=value".
 * Returns the value, advancing *i, or NULL when argv[*i] is not that
 * option. */
const char *opt_value(int argc, char **argv, int *i, const char *name);
/* Checks that s is at most max bytes of valid UTF-8 without control
 * characters other than newline/tab. */
bool text_ok(const char *s, size_t max);

#endif
