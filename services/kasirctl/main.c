/*
 * main.c - kasirctl: the incident SOP as commands (docs/kasirctl.md).
 *
 * One run: load the configuration, work out who is asking (unix user and
 * role), run one command from the table below, and record the run in
 * ops.audit (actor, role, command, reason, incident, result) whatever its
 * outcome.  Changes are never made here: they are admin requests to the
 * owning daemon, which checks the role itself and audits in its schema.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "db.h"
#include "err.h"
#include "kasirctl.h"
#include "log.h"
#include "util.h"

#define GROUPS_MAX 256 /* supplementary groups looked at */

struct ctl_command {
	const char *word1;
	const char *word2; /* NULL: one-word command */
	int (*run)(struct ctl *c, int argc, char **argv);
	bool changing;  /* needs --reason, engineer role */
	bool needs_ops; /* cannot work without the ops database */
	const char *usage;
	bool no_reason; /* changing, but its record is its own reason
	                   (incident open/note/close): no --reason */
};
/* the table leaves no_reason out but for the incident commands */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static const struct ctl_command commands[] = {
    {"status", NULL, cmd_status, false, false, "status"},
    {"order", "show", cmd_order_show, false, false, "order show ORDER_ID"},
    {"order", "find", cmd_order_find, false, false,
     "order find --email ADDR | --phone NUMBER | --name TEXT [--limit N]"},
    {"doctor", NULL, cmd_doctor, false, false, "doctor [--table]"},
    {"reconcile", NULL, cmd_reconcile, true, false,
     "reconcile ORDER_ID | --pending"},
    {"reconcile-mode", NULL, cmd_reconcile_mode, true, false,
     "reconcile-mode on|off"},
    {"access", "grant", cmd_access_grant, true, false, "access grant ORDER_ID"},
    {"notify", "resend", cmd_notify_resend, true, false,
     "notify resend ORDER_ID --kind receipt"},
    {"notify", "requeue", cmd_notify_requeue, true, false,
     "notify requeue [--dead] [--order ID] [--channel email|whatsapp]"},
    {"notify", "decide", cmd_notify_decide, true, false,
     "notify decide JOB_ID resend|delivered"},
    {"reminders", NULL, cmd_reminders, true, false, "reminders pause|resume"},
    {"incident", "open", cmd_incident_open, true, true,
     "incident open --severity P0..P3 --title TEXT", true},
    {"incident", "note", cmd_incident_note, true, true,
     "incident note INC-ID TEXT", true},
    {"incident", "close", cmd_incident_close, true, true,
     "incident close INC-ID --root-cause T --impact T --resolution T "
     "--preventive T --owner NAME",
     true},
    {"incident", "report", cmd_incident_report, false, true,
     "incident report INC-ID"},
    {"incident", "list", cmd_incident_list, false, true,
     "incident list [--all]"},
    {"export", NULL, cmd_export, false, false,
     "export orders|events --from TIME --to TIME --format csv"},
    {"evidence", "verify", cmd_evidence_verify, false, false,
     "evidence verify FILE"},
    {"evidence", NULL, cmd_evidence, false, false,
     "evidence ORDER_ID [--output FILE] [--include-personal]"},
    {"refund", NULL, cmd_refund, true, false, "refund ORDER_ID [--amount N]"},
    {"drill", "list", cmd_drill_list, false, false, "drill list"},
    {"drill", "run", cmd_drill_run, true, true,
     "drill run 6.1..6.5 [--auto] (dev and staging only)"},
    {"drill", "history", cmd_drill_history, false, true, "drill history"},
};

static void
usage(FILE *f)
{
	fprintf(f, "usage: kasirctl [--config FILE] [--json] [--reason TEXT] "
	           "[--incident INC-ID] COMMAND ...\n"
	           "       kasirctl --check-config FILE\n\ncommands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(f, "  %-70s%s\n", commands[i].usage,
		        !commands[i].changing   ? ""
		        : commands[i].no_reason ? " +"
		                                : " *");
	fprintf(f, "\n* changes something: needs the engineer role and "
	           "--reason; --incident links it to an incident\n"
	           "+ changes the incident record: needs the engineer role, "
	           "no --reason (the record is its own)\n"
	           "Read-only commands are open to the support role.  "
	           "KASIR_ROLE=support acts with less than your role.\n"
	           "Exit: 0 ok, 1 refused/failed/no access to a socket "
	           "(doctor: P0/P1 found), 2 usage/config, 3 service not "
	           "answering.\n");
}

/* True when the process is in unix group name (primary or
 * supplementary). */
static bool
in_group(const char *name)
{
	gid_t groups[GROUPS_MAX];
	struct group *g;
	int n;

	if (name == NULL || (g = getgrnam(name)) == NULL)
		return false;
	if (getegid() == g->gr_gid || getgid() == g->gr_gid)
		return true;
	n = getgroups(GROUPS_MAX, groups);
	for (int i = 0; i < n; i++)
		if (groups[i] == g->gr_gid)
			return true;
	return false;
}

/* --check-config FILE: the load a run does, and nothing else. */
static int
check_config(const char *file)
{
	struct ctl_conf conf;
	char why[2048];

	if (ctl_conf_load_file(file, &conf, why, sizeof(why)) < 0) {
		fprintf(stderr, "%s\n", why);
		return CTL_EXIT_USAGE;
	}
	ctl_conf_free(&conf);
	printf("configuration OK\n");
	return CTL_EXIT_OK;
}

/* Who is asking: user name and role from uid and groups; KASIR_ROLE may
 * only lower it.  0, or -EINVAL with why filled. */
static int
identify(struct ctl *c, char *why, size_t why_len)
{
	uid_t uid = getuid();
	struct passwd *pw = getpwuid(uid);
	const char *env = getenv("KASIR_ROLE");

	if (pw != NULL && pw->pw_name != NULL)
		kasir_strlcpy(c->user, pw->pw_name, sizeof(c->user));
	else
		snprintf(c->user, sizeof(c->user), "uid:%u", (unsigned)uid);
	if (uid == 0 || in_group(c->conf.engineer_group))
		c->unix_role = ADMIN_ROLE_ENGINEER;
	else if (in_group(c->conf.support_group))
		c->unix_role = ADMIN_ROLE_SUPPORT;
	else
		c->unix_role = ADMIN_ROLE_NONE;
	c->role = c->unix_role;
	if (env != NULL && env[0] != '\0') {
		enum admin_role r;

		if (admin_role_parse(env, &r) < 0) {
			snprintf(why, why_len,
			         "KASIR_ROLE=%.32s: want engineer, support or "
			         "none",
			         env);
			return -EINVAL;
		}
		if (r > c->unix_role) {
			snprintf(why, why_len,
			         "KASIR_ROLE=%.32s cannot raise your role (%s "
			         "is %s)",
			         env, c->user, admin_role_name(c->unix_role));
			return -EINVAL;
		}
		c->role = r;
	}
	return 0;
}

/* A failure before any command ran (the command line, the
 * configuration): the message on stderr, and with --json also the one
 * JSON object on stdout that --json always prints (`kasirctl --json foo`
 * printed none).  Returns exit. */
static int early_fail(struct ctl *c, const char *code, int exit,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
early_fail(struct ctl *c, const char *code, int exit, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "kasirctl: %s\n", msg);
	if (c->json) {
		if (c->command == NULL)
			c->command = "";
		/* the message again, on stdout: cut to what fits */
		(void)out_fail_local(c, code, exit, "%.500s", msg);
	}
	return exit;
}

static const struct ctl_command *
find_command(int argc, char **argv, int *ret_used)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		const struct ctl_command *k = &commands[i];

		if (argc < 1 || strcmp(argv[0], k->word1) != 0)
			continue;
		if (k->word2 == NULL) {
			*ret_used = 1;
			return k;
		}
		if (argc >= 2 && strcmp(argv[1], k->word2) == 0) {
			*ret_used = 2;
			return k;
		}
	}
	return NULL;
}

/* Checks --incident against ops.incident (exists, still open). */
static int
check_incident(struct ctl *c)
{
	char why[512];
	cJSON *inc = NULL;
	int r;

	if ((r = ops_open(c, why, sizeof(why))) < 0) {
		fprintf(stderr,
		        "kasirctl: warning: cannot check %s (%s); passing it "
		        "on unchecked\n",
		        c->incident, why);
		c->incident_id = 0; /* no foreign key to satisfy */
		return 0;
	}
	r = ops_incident_get(c, c->incident_id, &inc);
	if (r == KASIR_ENOTFOUND) {
		c->incident_id = 0; /* the audit row cannot point to it */
		return out_fail_local(c, "incident_not_found", CTL_EXIT_FAILED,
		                      "there is no incident %s "
		                      "(kasirctl incident list)",
		                      c->incident);
	}
	if (r < 0)
		return out_fail_local(c, ADMIN_E_DATABASE_UNAVAILABLE,
		                      CTL_EXIT_UNAVAILABLE, "ops database: %s",
		                      ops_last_error(c));
	r = strcmp(j_str(inc, "state"), "open") == 0 ? 0 : -1;
	cJSON_Delete(inc);
	if (r < 0 && c->changing)
		return out_fail_local(c, "incident_closed", CTL_EXIT_FAILED,
		                      "%s is closed: open a new incident",
		                      c->incident);
	return 0;
}

int
main(int argc, char **argv)
{
	struct ctl c;
	const struct ctl_command *k;
	const char *config = NULL, *incident = NULL;
	char **rest, why[2048];
	int nrest = 0, used = 0, rc;
	bool literal = false, bad_reason = false;

	memset(&c, 0, sizeof(c));
	log_open(CTL_NAME, LOG_WARNING);
	rest = calloc((size_t)argc + 1, sizeof(char *));
	if (rest == NULL)
		return CTL_EXIT_FAILED;
	/* global options anywhere; "--" ends option processing */
	for (int i = 1; i < argc; i++) {
		const char *v;

		if (literal) {
			rest[nrest++] = argv[i];
		} else if (strcmp(argv[i], "--") == 0) {
			literal = true;
		} else if (strcmp(argv[i], "--json") == 0) {
			c.json = true;
		} else if (strcmp(argv[i], "-h") == 0 ||
		           strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			free(rest);
			return CTL_EXIT_OK;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("kasirctl %s\n", KASIR_VERSION);
			free(rest);
			return CTL_EXIT_OK;
		} else if ((v = opt_value(argc, argv, &i, "--check-config"))) {
			free(rest);
			return check_config(v);
		} else if ((v = opt_value(argc, argv, &i, "--config"))) {
			config = v;
		} else if ((v = opt_value(argc, argv, &i, "--reason"))) {
			c.reason = v;
		} else if ((v = opt_value(argc, argv, &i, "--incident"))) {
			incident = v;
		} else {
			rest[nrest++] = argv[i];
		}
	}
	k = find_command(nrest, rest, &used);
	if (k == NULL) {
		if (nrest > 0)
			rc = early_fail(&c, "usage", CTL_EXIT_USAGE,
			                "unknown command: %.64s%s%.64s",
			                rest[0], nrest > 1 ? " " : "",
			                nrest > 1 ? rest[1] : "");
		else
			rc = early_fail(&c, "usage", CTL_EXIT_USAGE,
			                "no command given");
		usage(stderr);
		free(rest);
		return rc;
	}
	c.command = k->usage;
	{
		/* the audit names the command by its words */
		static char name[64];

		snprintf(name, sizeof(name), "%s%s%s", k->word1,
		         k->word2 ? " " : "", k->word2 ? k->word2 : "");
		c.command = name;
	}
	c.changing = k->changing;
	c.result = NULL;
	/* refused below, once ops.audit can record the attempt (an outside
	 * attack, 2026-12-07: a refused --reason left no row); the text
	 * itself is not kept (an escape sequence, 600 bytes) */
	if (c.reason != NULL && !text_ok(c.reason, CTL_REASON_MAX)) {
		bad_reason = true;
		c.reason = NULL;
	}
	if (incident != NULL) {
		if (ops_incident_parse(incident, &c.incident_id) < 0) {
			free(rest);
			return early_fail(&c, "usage", CTL_EXIT_USAGE,
			                  "--incident %.40s: want INC-<number>",
			                  incident);
		}
		snprintf(c.incident, sizeof(c.incident), "INC-%lld",
		         (long long)c.incident_id);
	}
	if (ctl_conf_find_load(config, &c.conf, &c.conf_source, why,
	                       sizeof(why)) < 0) {
		free(rest);
		return early_fail(&c, "config", CTL_EXIT_USAGE, "%s", why);
	}
	if (identify(&c, why, sizeof(why)) < 0) {
		rc = early_fail(&c, "usage", CTL_EXIT_USAGE, "%s", why);
		goto out;
	}
	if (k->needs_ops && (rc = ops_open(&c, why, sizeof(why))) < 0) {
		rc = out_fail_local(&c, ADMIN_E_DATABASE_UNAVAILABLE,
		                    rc == -ENOENT ? CTL_EXIT_USAGE
		                                  : CTL_EXIT_UNAVAILABLE,
		                    "%s", why);
		goto out;
	}
	if (k->changing && !k->needs_ops &&
	    ops_open(&c, why, sizeof(why)) < 0) {
		if (c.conf.db_url != NULL) {
			/* configured but down: a manual change must leave
			 * kasirctl's record too */
			rc = out_fail_local(&c, ADMIN_E_DATABASE_UNAVAILABLE,
			                    CTL_EXIT_UNAVAILABLE,
			                    "%s; refusing to change anything "
			                    "unrecorded",
			                    why);
			goto out;
		}
		fprintf(stderr,
		        "kasirctl: warning: %s: this run is recorded only by "
		        "the daemon\n",
		        why);
	}
	if (bad_reason) {
		rc = out_fail_local(&c, "usage", CTL_EXIT_USAGE,
		                    "--reason: 1..%d bytes of text, no control "
		                    "characters",
		                    CTL_REASON_MAX);
		goto audit;
	}
	if (c.incident_id > 0 && (rc = check_incident(&c)) != 0)
		goto audit;
	rc = k->run(&c, nrest - used, rest + used);
audit:
	if (c.result == NULL)
		c.result = "ok";
	if (c.conf.db_url != NULL && ops_audit(&c) < 0)
		fprintf(stderr,
		        "kasirctl: warning: this run was not recorded in "
		        "ops.audit: %s\n",
		        ops_last_error(&c));
out:
	cJSON_Delete(c.audit_args);
	db_close(c.ops);
	ctl_conf_free(&c.conf);
	free(c.conf_source);
	free(rest);
	return rc;
}
