/*
 * output.c - what kasirctl prints: JSON for machines (--json: exactly one
 * JSON object on stdout, success or not) or text for people (results on
 * stdout, errors on stderr), plus small helpers to read replies.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "kasirctl.h"
#include "util.h"

/* Control characters of s become '?', in place: C1 (as UTF-8) always,
 * C0 and DEL when c0.  What a daemon reports can hold a notification's
 * unsigned fields, and an escape sequence in them would rewrite the
 * operator's terminal (a fake "status PAID" line, the window title). */
static void
terminal_safe(char *s, bool c0)
{
	for (unsigned char *p = (unsigned char *)s; p != NULL && *p; p++) {
		if (c0 && (*p < 0x20 || *p == 0x7f))
			*p = '?';
		else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
			p[0] = p[1] = '?';
	}
}

void
text_terminal_safe(char *s)
{
	terminal_safe(s, true);
}

/* Every string of the tree o made terminal-safe: for text output all
 * control characters; for JSON (c0 false) only C1, which cJSON prints
 * raw (C0 and DEL it escapes as \u00XX). */
void
json_terminal_safe(cJSON *o, bool c0)
{
	cJSON *e;

	if (o == NULL)
		return;
	if (o->string != NULL)
		terminal_safe(o->string, c0);
	if (cJSON_IsString(o))
		terminal_safe(o->valuestring, c0);
	cJSON_ArrayForEach(e, o) json_terminal_safe(e, c0);
}

const char *
j_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) && v->valuestring ? v->valuestring : "";
}

double
j_num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (cJSON_IsNumber(v))
		return v->valuedouble;
	if (cJSON_IsString(v) && v->valuestring)
		return strtod(v->valuestring, NULL);
	return 0;
}

bool
j_bool(const cJSON *o, const char *key)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static void
print_json(cJSON *o)
{
	char *text = cJSON_Print(o);

	if (text != NULL) {
		fputs(text, stdout);
		fputc('\n', stdout);
		free(text);
	} else {
		fputs("{\"ok\":false,\"error\":{\"code\":\"internal\","
		      "\"message\":\"out of memory\"}}\n",
		      stdout);
	}
	fflush(stdout);
}

int
out_json_ok(struct ctl *c, cJSON *result)
{
	cJSON *o;

	if (!c->json) {
		cJSON_Delete(result);
		return CTL_EXIT_OK;
	}
	o = cJSON_CreateObject();
	if (o == NULL) {
		cJSON_Delete(result);
		return CTL_EXIT_FAILED;
	}
	cJSON_AddBoolToObject(o, "ok", true);
	cJSON_AddStringToObject(o, "command", c->command);
	cJSON_AddItemToObject(o, "result",
	                      result ? result : cJSON_CreateObject());
	print_json(o);
	cJSON_Delete(o);
	return CTL_EXIT_OK;
}

/* A hint for people: what to do about a well-known error. */
static const char *
hint(const struct ctl *c, const char *code)
{
	if (strcmp(code, ADMIN_E_ROLE_REQUIRED) == 0 &&
	    c->role == ADMIN_ROLE_NONE)
		return "role none may run nothing: reading needs the support "
		       "role (unix group in roles.support_group of the "
		       "config), changing the engineer role "
		       "(roles.engineer_group); KASIR_ROLE only lowers a role";
	if (strcmp(code, ADMIN_E_ROLE_REQUIRED) == 0)
		return c->role == ADMIN_ROLE_ENGINEER
		           ? NULL
		           : "this command needs the engineer role (unix group "
		             "in roles.engineer_group of the config)";
	if (strcmp(code, CTL_E_PERMISSION_DENIED) == 0)
		return "not a daemon failure, the daemons need nothing: ask "
		       "to be added to the group named above";
	if (strcmp(code, "reason_required") == 0)
		return "add --reason \"why you are doing this\"";
	if (strcmp(code, "service_unavailable") == 0)
		return "check the service: systemctl status <unit>, "
		       "journalctl -u <unit>";
	return NULL;
}

int
out_fail(struct ctl *c, const struct ctl_error *err)
{
	return out_fail_result(c, err, NULL);
}

int
out_fail_result(struct ctl *c, const struct ctl_error *err, cJSON *result)
{
	bool refused = err->exit == CTL_EXIT_FAILED &&
	               strcmp(err->code, "bad_reply") != 0 &&
	               strcmp(err->code, "internal") != 0;

	/* the audit record of this run */
	c->result = refused ? "refused" : "failed";
	snprintf(c->error, sizeof(c->error), "%s: %s: %s", err->service,
	         err->code, err->message);
	if (c->json) {
		cJSON *o = cJSON_CreateObject(), *e;

		if (o == NULL) {
			cJSON_Delete(result);
			return err->exit;
		}
		cJSON_AddBoolToObject(o, "ok", false);
		cJSON_AddStringToObject(o, "command", c->command);
		e = cJSON_AddObjectToObject(o, "error");
		cJSON_AddStringToObject(e, "code", err->code);
		cJSON_AddStringToObject(e, "message", err->message);
		cJSON_AddStringToObject(e, "service", err->service);
		if (err->socket[0] != '\0')
			cJSON_AddStringToObject(e, "socket", err->socket);
		if (strcmp(err->code, "role_required") == 0)
			cJSON_AddStringToObject(e, "your_role",
			                        admin_role_name(c->role));
		if (result != NULL)
			cJSON_AddItemToObject(o, "result", result);
		print_json(o);
		cJSON_Delete(o);
	} else {
		const char *h = hint(c, err->code);

		if (strcmp(err->service, CTL_NAME) == 0)
			fprintf(stderr, "kasirctl: %s [%s]\n", err->message,
			        err->code);
		else
			fprintf(stderr, "kasirctl: %s: %s [%s]\n", err->service,
			        err->message, err->code);
		if (strcmp(err->code, "role_required") == 0)
			fprintf(stderr, "kasirctl: you act as %s (%s)\n",
			        c->user, admin_role_name(c->role));
		if (h != NULL)
			fprintf(stderr, "kasirctl: %s\n", h);
		cJSON_Delete(result);
	}
	return err->exit;
}

int
out_fail_local(struct ctl *c, const char *code, int exit, const char *fmt, ...)
{
	struct ctl_error err;
	va_list ap;

	memset(&err, 0, sizeof(err));
	kasir_strlcpy(err.service, CTL_NAME, sizeof(err.service));
	kasir_strlcpy(err.code, code, sizeof(err.code));
	va_start(ap, fmt);
	vsnprintf(err.message, sizeof(err.message), fmt, ap);
	va_end(ap);
	/* a local message can name what the operator was handed (an
	 * archive member's name: an outside attack, 2026-12-07) */
	text_terminal_safe(err.message);
	err.exit = exit;
	return out_fail(c, &err);
}

void
out_text(struct ctl *c, const char *fmt, ...)
{
	va_list ap;

	if (c->json)
		return;
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
}

/* Parses up to n digits. */
static int
digits(const char **p, int n, int *ret)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (**p < '0' || **p > '9')
			return -EINVAL;
		v = v * 10 + (**p - '0');
		(*p)++;
	}
	*ret = v;
	return 0;
}

int
ts_parse(const char *s, int64_t *ret_ms)
{
	struct tm tm;
	int y, mo, d, h, mi, sec, ms = 0, off = 0;
	const char *p = s;
	time_t t;

	if (s == NULL || digits(&p, 4, &y) < 0 || *p++ != '-' ||
	    digits(&p, 2, &mo) < 0 || *p++ != '-' || digits(&p, 2, &d) < 0 ||
	    (*p != 'T' && *p != ' '))
		return -EINVAL;
	p++;
	if (digits(&p, 2, &h) < 0 || *p++ != ':' || digits(&p, 2, &mi) < 0 ||
	    *p++ != ':' || digits(&p, 2, &sec) < 0)
		return -EINVAL;
	if (*p == '.') {
		int scale = 100;

		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		while (*p >= '0' && *p <= '9') {
			ms += (*p - '0') * scale;
			scale /= 10;
			p++;
		}
	}
	if (*p == 'Z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p == '-' ? -1 : 1, oh, om = 0;

		p++;
		if (digits(&p, 2, &oh) < 0)
			return -EINVAL;
		if (*p == ':')
			p++;
		if (*p >= '0' && *p <= '9' && digits(&p, 2, &om) < 0)
			return -EINVAL;
		off = sign * (oh * 60 + om);
	} else {
		return -EINVAL;
	}
	if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
	    mi > 59 || sec > 60)
		return -EINVAL;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	*ret_ms = ((int64_t)t - (int64_t)off * 60) * 1000 + ms;
	return 0;
}

void
fmt_age(int64_t ms, char *buf, size_t len)
{
	int64_t s = ms / 1000;

	if (s < 0)
		s = 0;
	if (s < 120)
		snprintf(buf, len, "%llds", (long long)s);
	else if (s < 7200)
		snprintf(buf, len, "%lldm", (long long)(s / 60));
	else if (s < 172800)
		snprintf(buf, len, "%lldh%02lldm", (long long)(s / 3600),
		         (long long)(s % 3600 / 60));
	else
		snprintf(buf, len, "%lldd%02lldh", (long long)(s / 86400),
		         (long long)(s % 86400 / 3600));
}

const char *
opt_value(int argc, char **argv, int *i, const char *name)
{
	size_t n = strlen(name);
	const char *a = argv[*i];

	if (strncmp(a, name, n) != 0)
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] != '\0' || *i + 1 >= argc)
		return NULL;
	(*i)++;
	return argv[*i];
}

bool
text_ok(const char *s, size_t max)
{
	size_t l;

	if (s == NULL)
		return false;
	l = strlen(s);
	if (l == 0 || l > max || !utf8_valid(s, l))
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if ((*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7f)
			return false;
	return true;
}
