/*
 * evidence.c - kasirctl evidence ORDER_ID [--output FILE]
 * [--include-personal] and kasirctl evidence verify FILE: one signed
 * archive with everything kasir knows about an order, for a dispute, a
 * chargeback or an audit (docs/kasirctl.md, "evidence").
 *
 * Each daemon answers for what it owns, over its admin socket: kasir-ingest
 * evidence.order (every notification's raw body, signature result, source
 * address), kasir-order order.show (the order, evidence decisions,
 * transitions, entitlements and their history, its audit), kasir-reconciler
 * evidence.order (every Status API answer raw, refunds started from kasir,
 * its audit),
 * kasir-notifier evidence.order (messages, attempts, provider ids, its
 * audit); kasirctl
 * adds its own ops.audit rows and the incidents naming the order.  A daemon
 * that does not answer is named in bundle.json and in the summary: the bundle
 * is still written, never silently short.
 *
 * Personal data (names, e-mail addresses, phone numbers) is replaced by
 * "[redacted]" unless --include-personal is given; the run is recorded in
 * ops.audit, and refused when the ops database is configured but down.
 * The archive itself (ustar, signed manifest) is evidence_archive.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "evidence_archive.h"
#include "kasirctl.h"
#include "util.h"

#define ORDER_ID_MAX   50
#define EV_PATH_MAX    1024
#define EV_SUMMARY_MAX (256 * 1024)
#define REDACTED       "[redacted]"

/* ---- redaction ------------------------------------------------------------
 */

static bool
personal_key(const char *k)
{
	static const char *const parts[] = {
	    "email",         "phone",     "first_name", "last_name",
	    "customer_name", "recipient", "address"};

	if (k == NULL)
		return false;
	if (strcmp(k, "name") == 0)
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(parts); i++)
		if (strstr(k, parts[i]) != NULL)
			return true;
	return false;
}

/* Replaces every string (or number) under a personal key; returns how
 * many values were replaced. */
static int
redact(cJSON *j)
{
	cJSON *e;
	int n = 0;

	cJSON_ArrayForEach(e, j)
	{
		if (personal_key(e->string) &&
		    (cJSON_IsString(e) || cJSON_IsNumber(e))) {
			cJSON *r = cJSON_CreateString(REDACTED);

			if (r != NULL && cJSON_ReplaceItemViaPointer(j, e, r)) {
				e = r;
				n++;
			}
			continue;
		}
		if (cJSON_IsObject(e) || cJSON_IsArray(e))
			n += redact(e);
	}
	return n;
}

/* ---- building the bundle --------------------------------------------------
 */

struct ev_run {
	struct ctl *c;
	struct ev_bundle b;
	bool personal;
	int error; /* first failure adding a file */
	char error_name[EV_NAME_MAX + 1];
};

static void
add_bytes(struct ev_run *e, const char *name, const void *data, size_t len)
{
	int r = ev_bundle_add(&e->b, name, data, len);

	if (r < 0 && e->error == 0) {
		e->error = r;
		kasir_strlcpy(e->error_name, name, sizeof(e->error_name));
	}
}

/* Adds j (borrowed) as pretty JSON, redacted unless --include-personal. */
static void
add_json(struct ev_run *e, const char *name, const cJSON *j)
{
	cJSON *copy = cJSON_Duplicate(j, true);
	char *s;

	if (copy == NULL) {
		if (e->error == 0)
			e->error = -ENOMEM;
		return;
	}
	if (!e->personal)
		redact(copy);
	s = cJSON_Print(copy);
	cJSON_Delete(copy);
	if (s == NULL) {
		if (e->error == 0)
			e->error = -ENOMEM;
		return;
	}
	add_bytes(e, name, s, strlen(s));
	free(s);
}

/* A raw body: the bytes as stored, unless it is JSON naming personal data
 * and --include-personal is absent (then the redacted JSON; *ret_redacted
 * says so). */
static void
add_raw(struct ev_run *e, const char *name, const uint8_t *raw, size_t len,
        bool *ret_redacted)
{
	cJSON *j;

	*ret_redacted = false;
	if (!e->personal &&
	    (j = cJSON_ParseWithLength((const char *)raw, len)) != NULL) {
		if (redact(j) > 0) {
			char *s = cJSON_Print(j);

			if (s != NULL) {
				add_bytes(e, name, s, strlen(s));
				free(s);
				*ret_redacted = true;
				cJSON_Delete(j);
				return;
			}
		}
		cJSON_Delete(j);
	}
	add_bytes(e, name, raw, len);
}

/* kasir-ingest: notifications/NNN-<id>.json and refused/NNN-<id>.body,
 * and one index of both without the bodies. */
static void
add_ingest(struct ev_run *e, cJSON *r)
{
	static const char *const lists[2] = {"notifications", "quarantined"};
	cJSON *row;

	for (int l = 0; l < 2; l++) {
		int i = 0;

		cJSON_ArrayForEach(row, cJSON_GetObjectItem(r, lists[l]))
		{
			cJSON *jhex =
			    cJSON_DetachItemFromObject(row, "raw_hex");
			const char *hex =
			    cJSON_IsString(jhex) ? jhex->valuestring : "";
			char name[EV_NAME_MAX + 1];
			size_t hl = strlen(hex), n = 0;
			uint8_t *raw;
			bool red = false;

			if (cJSON_IsTrue(
			        cJSON_GetObjectItem(row, "body_omitted"))) {
				cJSON_Delete(jhex);
				continue;
			}
			snprintf(name, sizeof(name), "ingest/%s/%03d-%.0f.%s",
			         l == 0 ? "notification" : "refused", ++i,
			         j_num(row, "id"), l == 0 ? "json" : "body");
			if ((raw = malloc(hl / 2 + 1)) == NULL ||
			    hex_decode(hex, hl, raw, hl / 2 + 1, &n) < 0) {
				free(raw);
				cJSON_Delete(jhex);
				cJSON_AddStringToObject(row, "body_file",
				                        "undecodable");
				continue;
			}
			cJSON_Delete(jhex);
			add_raw(e, name, raw, n, &red);
			free(raw);
			cJSON_AddStringToObject(row, "body_file", name);
			cJSON_AddBoolToObject(row, "body_redacted", red);
		}
	}
	add_json(e, "ingest/notifications.json", r);
}

/* kasir-reconciler: status-check/NNN-<id>.json and the index. */
static void
add_reconciler(struct ev_run *e, cJSON *r)
{
	cJSON *row;
	int i = 0;

	cJSON_ArrayForEach(row, cJSON_GetObjectItem(r, "status_checks"))
	{
		cJSON *body = cJSON_DetachItemFromObject(row, "body");
		char name[EV_NAME_MAX + 1];
		bool red = false;

		if (cJSON_IsString(body)) {
			snprintf(name, sizeof(name),
			         "reconciler/status-check/%03d-%.0f.json", ++i,
			         j_num(row, "id"));
			add_raw(e, name, (const uint8_t *)body->valuestring,
			        strlen(body->valuestring), &red);
			cJSON_AddStringToObject(row, "body_file", name);
			cJSON_AddBoolToObject(row, "body_redacted", red);
		}
		cJSON_Delete(body);
	}
	add_json(e, "reconciler/status_checks.json",
	         cJSON_GetObjectItem(r, "status_checks"));
	add_json(e, "reconciler/refunds.json",
	         cJSON_GetObjectItem(r, "refunds"));
	add_json(e, "reconciler/audit.json", cJSON_GetObjectItem(r, "audit"));
}

/* kasir-order's view, one file per kind of row: the order, its
 * transitions (each naming its evidence), the evidence it applied or
 * ignored (with the body it decided on), entitlements and their history,
 * its audit.  The summary has read the whole view before. */
static void
add_order(struct ev_run *e, cJSON *o)
{
	static const struct {
		const char *key;
		const char *file;
	} parts[] = {
	    {"timeline", "order/transitions.json"},
	    {"evidence", "order/evidence.json"},
	    {"entitlements", "order/entitlements.json"},
	    {"entitlement_history", "order/entitlement_history.json"},
	    {"audit", "order/audit.json"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(parts); i++) {
		cJSON *rows = cJSON_DetachItemFromObject(o, parts[i].key);

		if (rows != NULL)
			add_json(e, parts[i].file, rows);
		cJSON_Delete(rows);
	}
	add_json(e, "order/order.json", o);
}

/* The incidents naming the order, each with its notes. */
static cJSON *
incidents_of(struct ctl *c, const char *order_id)
{
	cJSON *out = cJSON_CreateArray(), *ids = NULL, *row;

	if (!c->ops_ok || ops_incidents_naming(c, order_id, &ids) < 0)
		return out;
	cJSON_ArrayForEach(row, ids)
	{
		int64_t id = (int64_t)j_num(row, "id");
		cJSON *inc = NULL, *notes = NULL;

		if (ops_incident_get(c, id, &inc) < 0)
			continue;
		if (ops_incident_notes(c, id, &notes) == 0)
			cJSON_AddItemToObject(inc, "notes", notes);
		cJSON_AddItemToArray(out, inc);
	}
	cJSON_Delete(ids);
	return out;
}

/* ---- the summary ----------------------------------------------------------
 */

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_printf(struct sbuf *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
sb_printf(struct sbuf *s, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (s->p == NULL || s->len >= s->cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		s->len += (size_t)n < s->cap - s->len ? (size_t)n
		                                      : s->cap - s->len - 1;
}

static const char *
dash(const char *s)
{
	return s[0] ? s : "-";
}

/* One language's summary; lang 0 = Bahasa Indonesia, 1 = English. */
static void
summary_lang(struct sbuf *s, int lang, const char *id, const cJSON *order,
             const cJSON *ingest, const cJSON *recon, const cJSON *notif,
             const cJSON *audit, const cJSON *incidents, const cJSON *missing,
             bool personal)
{
#define T(idn, en) (lang == 0 ? (idn) : (en))
	const cJSON *e;

	sb_printf(s, "## %s\n\n",
	          T("Ringkasan (Bahasa Indonesia)", "Summary (English)"));
	if (order != NULL) {
		sb_printf(s, "- %s: `%s`\n", T("Pesanan", "Order"), id);
		sb_printf(s, "- %s: **%s**%s\n", T("Status", "Status"),
		          j_str(order, "status"),
		          j_bool(order, "partial_refund") &&
		                  strcmp(j_str(order, "status"), "PAID") == 0
		              ? T(" (sebagian dana dikembalikan)",
		                  " (partially refunded)")
		              : "");
		sb_printf(s, "- %s: %s (%s), %.0f %s\n", T("Kursus", "Course"),
		          j_str(order, "course_id"),
		          j_str(order, "course_title"), j_num(order, "amount"),
		          j_str(order, "currency"));
		sb_printf(s, "- %s: %s\n", T("Pelanggan", "Customer"),
		          personal ? j_str(order, "customer_email")
		                   : T("[disamarkan: pakai --include-personal]",
		                       "[redacted: use --include-personal]"));
		sb_printf(s, "- %s: %s, %s %s\n", T("Dibuat", "Created"),
		          j_str(order, "created_at"), T("dibayar", "paid"),
		          dash(j_str(order, "paid_at")));
		sb_printf(s, "- %s: %s, %s %s\n",
		          T("Metode pembayaran", "Payment method"),
		          dash(j_str(order, "payment_type")),
		          T("ID transaksi Midtrans", "Midtrans transaction id"),
		          dash(j_str(order, "transaction_id")));
	} else {
		sb_printf(s, "- %s `%s`: %s\n", T("Pesanan", "Order"), id,
		          T("kasir-order tidak menjawab atau tidak mengenal "
		            "pesanan ini",
		            "kasir-order did not answer or does not know this "
		            "order"));
	}
	sb_printf(s, "\n### %s\n\n",
	          T("Perubahan status dan buktinya",
	            "Status changes and their evidence"));
	sb_printf(s, "| %s | %s | %s | %s |\n|---|---|---|---|\n",
	          T("Waktu (UTC)", "Time (UTC)"), T("Dari → ke", "From → to"),
	          T("Alasan", "Reason"), T("Bukti", "Evidence"));
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(order, "timeline")) sb_printf(
	    s, "| %s | %s → %s | %s | %s#%.0f |\n", j_str(e, "at"),
	    j_str(e, "from"), j_str(e, "to"), dash(j_str(e, "reason")),
	    dash(j_str(e, "source")), j_num(e, "ref"));
	sb_printf(s, "\n### %s\n\n", T("Akses kursus", "Course access"));
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(order, "entitlement_history"))
	    sb_printf(s, "- %s: %s %s (%s)\n", j_str(e, "at"),
	              j_str(e, "action"), j_str(e, "course_id"),
	              dash(j_str(e, "reason")));
	if (cJSON_GetArraySize(
	        cJSON_GetObjectItem(order, "entitlement_history")) == 0)
		sb_printf(s, "- %s\n", T("tidak ada", "none"));
	sb_printf(s, "\n### %s\n\n",
	          T("Bukti dari Midtrans", "Midtrans evidence"));
	sb_printf(
	    s,
	    "- %s: %d (%s `ingest/notification/`), %s: %d "
	    "(`ingest/refused/`)\n",
	    T("Notifikasi bertanda tangan sah", "Notifications with a valid "
	                                        "signature"),
	    cJSON_GetArraySize(cJSON_GetObjectItem(ingest, "notifications")),
	    T("isi mentah di", "raw bodies in"),
	    T("Ditolak (tanda tangan salah)", "Refused (bad signature)"),
	    cJSON_GetArraySize(cJSON_GetObjectItem(ingest, "quarantined")));
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(ingest, "notifications"))
	    sb_printf(s, "  - %s: %s (status_code %s, %s %s) %s %s\n",
	              j_str(e, "received_at"), j_str(e, "transaction_status"),
	              j_str(e, "status_code"), j_str(e, "gross_amount"),
	              dash(j_str(e, "payment_type")), T("dari", "from"),
	              j_str(e, "source"));
	sb_printf(
	    s, "- %s: %d (`reconciler/status-check/`)\n",
	    T("Jawaban Status API", "Status API answers"),
	    cJSON_GetArraySize(cJSON_GetObjectItem(recon, "status_checks")));
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(recon, "status_checks"))
	    sb_printf(s, "  - %s: HTTP %.0f, %s, %s\n", j_str(e, "checked_at"),
	              j_num(e, "http_status"), j_str(e, "verdict"),
	              dash(j_str(e, "transaction_status")));
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(recon, "refunds"))
	{
		const cJSON *a;

		sb_printf(s, "- %s %.0f (%s `%s`) %s %s: %s; %s:",
		          T("Pengembalian dana", "Refund"), j_num(e, "amount"),
		          T("kunci", "key"), j_str(e, "refund_key"),
		          T("oleh", "by"), j_str(e, "actor"),
		          j_str(e, "reason"),
		          T("jawaban Midtrans", "Midtrans answered"));
		cJSON_ArrayForEach(a, cJSON_GetObjectItem(e, "attempts"))
		    sb_printf(s, " %s (%s)", j_str(a, "outcome"),
		              dash(j_str(a, "status_code")));
		sb_printf(s, "\n");
	}
	sb_printf(s, "\n### %s\n\n", T("Pesan ke pelanggan", "Messages sent"));
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(notif, "jobs")) sb_printf(
	    s, "- %s %s: %s, %.0f %s, provider id %s\n", j_str(e, "kind"),
	    j_str(e, "channel"), j_str(e, "state"), j_num(e, "attempts"),
	    T("percobaan", "attempt(s)"), dash(j_str(e, "provider_id")));
	sb_printf(s, "\n### %s\n\n",
	          T("Tindakan manual", "Manual actions (kasirctl)"));
	cJSON_ArrayForEach(e, audit)
	    sb_printf(s, "- %s: `%s` %s %s (%s): %s\n", j_str(e, "at"),
	              j_str(e, "command"), T("oleh", "by"), j_str(e, "actor"),
	              j_str(e, "result"), dash(j_str(e, "reason")));
	if (cJSON_GetArraySize(audit) == 0)
		sb_printf(s, "- %s\n", T("tidak ada", "none"));
	sb_printf(s, "\n### %s\n\n", T("Insiden", "Incidents"));
	cJSON_ArrayForEach(e, incidents) sb_printf(
	    s, "- %s %s: %s (%s, %s %s)\n", j_str(e, "id"),
	    j_str(e, "severity"), j_str(e, "title"), j_str(e, "state"),
	    T("dibuka", "opened"), j_str(e, "opened_at"));
	if (cJSON_GetArraySize(incidents) == 0)
		sb_printf(s, "- %s\n", T("tidak ada", "none"));
	if (cJSON_GetArraySize(missing) > 0) {
		sb_printf(s, "\n### %s\n\n", T("TIDAK LENGKAP", "INCOMPLETE"));
		cJSON_ArrayForEach(e, missing) sb_printf(
		    s, "- %s: %s\n", j_str(e, "service"), j_str(e, "message"));
	}
	sb_printf(s, "\n");
#undef T
}

/* ---- the commands ---------------------------------------------------------
 */

static int
load_key(struct ctl *c)
{
	if (c->conf.evidence_key.value == NULL)
		return out_fail_local(
		    c, "no_evidence_key", CTL_EXIT_USAGE,
		    "no evidence key in %s (evidence.key_file: a file of at "
		    "least 32 random bytes, or a credential name)",
		    c->conf_source);
	if (c->conf.evidence_key.len < 32)
		return out_fail_local(c, "weak_evidence_key", CTL_EXIT_USAGE,
		                      "the evidence key (%s) is shorter than "
		                      "32 bytes",
		                      c->conf.evidence_key.origin);
	return 0;
}

int
cmd_evidence(struct ctl *c, int argc, char **argv)
{
	static const struct {
		enum ctl_svc svc;
		const char *cmd;
	} asks[] = {
	    {SVC_ORDER, "order.show"},
	    {SVC_INGEST, "evidence.order"},
	    {SVC_RECONCILER, "evidence.order"},
	    {SVC_NOTIFIER, "evidence.order"},
	};
	struct ev_run e = {.c = c};
	struct ctl_error err[ARRAY_SIZE(asks)];
	cJSON *r[ARRAY_SIZE(asks)] = {NULL}, *args, *audit = NULL, *incidents,
	      *meta, *missing, *res;
	const char *id = NULL, *output = NULL;
	char path[EV_PATH_MAX], why[512], ts[40];
	struct sbuf sum = {0};
	time_t now = time(NULL);
	struct tm tm;
	int rc = CTL_EXIT_OK, n;

	/* the archive keeps what the daemons hold, byte for byte: a raw
	 * Status API answer or notification is evidence, control
	 * characters included (its files are not printed) */
	c->raw_replies = true;
	for (int i = 0; i < argc; i++) {
		const char *v;

		if (strcmp(argv[i], "--include-personal") == 0)
			e.personal = true;
		else if ((v = opt_value(argc, argv, &i, "--output")))
			output = v;
		else if (id == NULL && argv[i][0] != '-')
			id = argv[i];
		else
			id = "";
	}
	if (id == NULL || !order_id_valid(id, ORDER_ID_MAX) ||
	    (output != NULL &&
	     (strlen(output) == 0 || strlen(output) >= EV_PATH_MAX - 8)))
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl evidence ORDER_ID "
		                      "[--output FILE] [--include-personal]");
	kasir_strlcpy(c->target, id, sizeof(c->target));
	c->target_service = CTL_NAME;
	if ((rc = load_key(c)) != 0)
		return rc;
	/* customer data leaves kasir only recorded */
	if (c->conf.db_url != NULL && ops_open(c, why, sizeof(why)) < 0)
		return out_fail_local(c, ADMIN_E_DATABASE_UNAVAILABLE,
		                      CTL_EXIT_UNAVAILABLE,
		                      "%s; an evidence bundle holds customer "
		                      "data and is only made when ops.audit "
		                      "records it",
		                      why);
	if (c->conf.db_url == NULL)
		fprintf(stderr,
		        "kasirctl: warning: no ops database in %s: this bundle "
		        "(customer data) is recorded nowhere\n",
		        c->conf_source);
	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
	if (output == NULL)
		snprintf(path, sizeof(path), "evidence-%s-%s.tar", id, ts);
	else
		kasir_strlcpy(path, output, sizeof(path));
	c->audit_args = cJSON_CreateObject();
	cJSON_AddBoolToObject(c->audit_args, "include_personal", e.personal);
	cJSON_AddStringToObject(c->audit_args, "output", path);

	if ((args = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(args, "order_id", id)) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	for (size_t i = 0; i < ARRAY_SIZE(asks); i++) {
		memset(&err[i], 0, sizeof(err[i]));
		if (ctl_call(c, asks[i].svc, asks[i].cmd, args,
		             c->conf.slow_timeout_ms, &r[i], &err[i]) < 0)
			r[i] = NULL;
	}
	cJSON_Delete(args);
	if (r[0] == NULL && strstr(err[0].code, "not_found") != NULL &&
	    cJSON_GetArraySize(cJSON_GetObjectItem(r[1], "notifications")) ==
	        0 &&
	    cJSON_GetArraySize(cJSON_GetObjectItem(r[1], "quarantined")) == 0) {
		rc =
		    out_fail_local(c, ADMIN_E_ORDER_NOT_FOUND, CTL_EXIT_FAILED,
		                   "unknown order %s: kasir-order has no such "
		                   "order and kasir-ingest no notification for "
		                   "it",
		                   id);
		goto out;
	}
	if (c->ops_ok)
		(void)ops_audit_for_order(c, id, &audit);
	if (audit == NULL)
		audit = cJSON_CreateArray();
	incidents = incidents_of(c, id);

	missing = cJSON_CreateArray();
	for (size_t i = 0; i < ARRAY_SIZE(asks); i++) {
		cJSON *m;

		if (r[i] != NULL)
			continue;
		m = cJSON_CreateObject();
		cJSON_AddStringToObject(m, "service", err[i].service);
		cJSON_AddStringToObject(m, "command", asks[i].cmd);
		cJSON_AddStringToObject(m, "code", err[i].code);
		cJSON_AddStringToObject(m, "message", err[i].message);
		cJSON_AddItemToArray(missing, m);
	}
	if (!c->ops_ok) {
		cJSON *m = cJSON_CreateObject();

		cJSON_AddStringToObject(m, "service", CTL_NAME);
		cJSON_AddStringToObject(m, "command", "ops.audit");
		cJSON_AddStringToObject(m, "code",
		                        ADMIN_E_DATABASE_UNAVAILABLE);
		cJSON_AddStringToObject(
		    m, "message",
		    "no ops database: kasirctl's manual "
		    "actions and incidents are not included");
		cJSON_AddItemToArray(missing, m);
	}

	/* the summary first: it reads the answers before the files take
	 * the bodies out of them */
	sum.cap = EV_SUMMARY_MAX;
	sum.p = malloc(sum.cap);
	if (sum.p != NULL)
		sum.p[0] = '\0';
	sb_printf(&sum, "# kasir evidence: %s\n\n", id);
	sb_printf(&sum, "%s %s UTC %s %s (%s). %s\n\n", "Dibuat / created", ts,
	          "oleh / by", c->user, admin_role_name(c->role),
	          e.personal ? "Data pribadi disertakan / personal data "
	                       "included."
	                     : "Data pribadi disamarkan / personal data "
	                       "redacted.");
	for (int lang = 0; lang < 2; lang++)
		summary_lang(&sum, lang, id, r[0], r[1], r[2], r[3], audit,
		             incidents, missing, e.personal);
	sb_printf(&sum, "---\n%s\n%s\n",
	          "Keaslian: `kasirctl evidence verify FILE` memeriksa SHA-256 "
	          "setiap berkas di MANIFEST dan tanda tangan HMAC-SHA256 "
	          "MANIFEST.sig.",
	          "Authenticity: `kasirctl evidence verify FILE` checks every "
	          "file's SHA-256 in MANIFEST and MANIFEST.sig's HMAC-SHA256.");
	if (sum.p != NULL)
		add_bytes(&e, "summary.md", sum.p, sum.len);

	meta = cJSON_CreateObject();
	cJSON_AddStringToObject(meta, "order_id", id);
	cJSON_AddStringToObject(meta, "created_at", ts);
	cJSON_AddStringToObject(meta, "created_by", c->user);
	cJSON_AddStringToObject(meta, "role", admin_role_name(c->role));
	cJSON_AddBoolToObject(meta, "include_personal", e.personal);
	cJSON_AddStringToObject(meta, "kasir_version", KASIR_VERSION);
	cJSON_AddItemToObject(meta, "missing", missing);
	/* bundle.json is written as is: it names the creator, not the
	 * customer */
	{
		char *s = cJSON_Print(meta);

		if (s != NULL)
			add_bytes(&e, "bundle.json", s, strlen(s));
		free(s);
	}
	if (r[0] != NULL)
		add_order(&e, r[0]);
	if (r[1] != NULL)
		add_ingest(&e, r[1]);
	if (r[2] != NULL)
		add_reconciler(&e, r[2]);
	if (r[3] != NULL)
		add_json(&e, "notifier/messages.json", r[3]);
	add_json(&e, "kasirctl/audit.json", audit);
	add_json(&e, "kasirctl/incidents.json", incidents);
	n = (int)e.b.count;

	if (e.error != 0) {
		rc = out_fail_local(c, "bundle_too_big", CTL_EXIT_FAILED,
		                    "cannot add %s to the bundle: %s (bounds: "
		                    "%d files, %u bytes)",
		                    e.error_name[0] ? e.error_name : "a file",
		                    kasir_strerror(e.error), EV_FILES_MAX,
		                    (unsigned)EV_TOTAL_MAX);
	} else if ((rc = ev_bundle_write(
	                &e.b, c->conf.evidence_key_id,
	                (const uint8_t *)c->conf.evidence_key.value,
	                c->conf.evidence_key.len, path)) < 0) {
		rc = out_fail_local(c, "write_failed", CTL_EXIT_FAILED,
		                    "%s: %s", path,
		                    rc == -EEXIST ? "exists (never overwritten)"
		                                  : kasir_strerror(rc));
	} else {
		rc = cJSON_GetArraySize(
		         meta ? cJSON_GetObjectItem(meta, "missing") : NULL) > 0
		         ? CTL_EXIT_UNAVAILABLE
		         : CTL_EXIT_OK;
		out_text(c, "evidence for %s: %s (%d files%s)\n", id, path, n,
		         e.personal ? ", personal data included"
		                    : ", personal data redacted");
		{
			cJSON *m;

			cJSON_ArrayForEach(
			    m,
			    cJSON_GetObjectItem(meta, "missing")) if (!c->json)
			    fprintf(
			        stderr,
			        "kasirctl: warning: bundle incomplete: %s\n",
			        j_str(m, "message"));
		}
		res = cJSON_CreateObject();
		cJSON_AddStringToObject(res, "order_id", id);
		cJSON_AddStringToObject(res, "file", path);
		cJSON_AddNumberToObject(res, "files", n);
		cJSON_AddBoolToObject(res, "include_personal", e.personal);
		cJSON_AddItemToObject(
		    res, "missing",
		    cJSON_Duplicate(cJSON_GetObjectItem(meta, "missing"),
		                    true));
		out_json_ok(c, res);
	}
	cJSON_Delete(meta);
	cJSON_Delete(incidents);
out:
	free(sum.p);
	cJSON_Delete(audit);
	for (size_t i = 0; i < ARRAY_SIZE(asks); i++)
		cJSON_Delete(r[i]);
	ev_bundle_free(&e.b);
	return rc;
}

int
cmd_evidence_verify(struct ctl *c, int argc, char **argv)
{
	char why[512];
	size_t files = 0;
	int rc;

	if (argc != 1 || strlen(argv[0]) >= EV_PATH_MAX)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl evidence verify FILE");
	kasir_strlcpy(c->target, argv[0], sizeof(c->target));
	c->target_service = CTL_NAME;
	if ((rc = load_key(c)) != 0)
		return rc;
	why[0] = '\0';
	rc =
	    ev_verify_file(argv[0], (const uint8_t *)c->conf.evidence_key.value,
	                   c->conf.evidence_key.len, &files, why, sizeof(why));
	if (rc < 0)
		return out_fail_local(c, "verify_failed", CTL_EXIT_FAILED,
		                      "%s: NOT VERIFIED: %s", argv[0], why);
	out_text(c, "%s: verified: %zu files, manifest signature valid\n",
	         argv[0], files);
	{
		cJSON *res = cJSON_CreateObject();

		cJSON_AddStringToObject(res, "file", argv[0]);
		cJSON_AddBoolToObject(res, "verified", true);
		cJSON_AddNumberToObject(res, "files", (double)files);
		return out_json_ok(c, res);
	}
}
