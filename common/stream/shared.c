/*
 * shared.c - what the backbone's parts share: name checks, statements
 * built from code-given names, loop names, metrics and condition
 * variables on the monotonic clock (see stream_impl.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "metrics.h"
#include "util.h"
#include "stream_impl.h"

bool
stream_schema_valid(const char *s)
{
	size_t i;

	if (s == NULL || s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		if (i >= STREAM_SCHEMA_MAX)
			return false;
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	}
	return true;
}

bool
stream_valid(const char *s)
{
	size_t i;

	if (s == NULL)
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		if (i >= MSG_STREAM_MAX - 1)
			return false;
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
		      s[i] == '-'))
			return false;
	}
	return i > 0;
}

/*
 * The liveness name of one of the backbone's loops: the service part of
 * the handle's application_name ("kasir-ingest-publisher" -> "ingest"),
 * the job and the stream: "ingest.publish.payment".
 */
void
stream_loop_name(const char *app, const char *job, const char *stream,
                 char *out, size_t len)
{
	size_t n;

	if (app == NULL)
		app = "kasir";
	if (strncmp(app, "kasir-", 6) == 0)
		app += 6;
	n = strcspn(app, "-");
	snprintf(out, len, "%.*s.%s.%s", (int)(n < 16 ? n : 16), app, job,
	         stream);
}

int
stream_stmt_build(struct stream_stmt *s, const char *what, const char *schema,
                  const char *stream, int nparams, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(s->name, sizeof(s->name), "kasir_stream_%s_%s_%s", what,
	             schema, stream);
	if (n < 0 || (size_t)n >= sizeof(s->name))
		return -ENAMETOOLONG;
	va_start(ap, fmt);
	n = vsnprintf(s->sql, sizeof(s->sql), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(s->sql))
		return -ENAMETOOLONG;
	s->st.name = s->name;
	s->st.sql = s->sql;
	s->st.nparams = nparams;
	return 0;
}

void
stream_i64_text(int64_t v, char buf[24])
{
	snprintf(buf, 24, "%lld", (long long)v);
}

int
stream_cond_init_mono(pthread_cond_t *cv)
{
	return cond_init_monotonic(cv);
}

/* Waits on cv for at most ms (mu held by the caller). */
void
stream_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	deadline_after_ms(CLOCK_MONOTONIC, ms, &ts);
	pthread_cond_timedwait(cv, mu, &ts);
}

const char *const stream_reject_names[REJ_COUNT] = {
    "toobig",  "envelope", "key",  "signature",
    "message", "stream",   "type", "replay"};

struct metric *
stream_counter(struct metrics *m, const char *name, const char *stream,
               const char *extra, const char *help)
{
	char labels[128];

	if (m == NULL)
		return NULL;
	if (extra != NULL)
		snprintf(labels, sizeof(labels), "stream=\"%s\",%s", stream,
		         extra);
	else
		snprintf(labels, sizeof(labels), "stream=\"%s\"", stream);
	return metrics_counter(m, name, labels, help);
}

struct metric *
stream_gauge(struct metrics *m, const char *name, const char *stream,
             const char *help)
{
	char labels[64];

	if (m == NULL)
		return NULL;
	snprintf(labels, sizeof(labels), "stream=\"%s\"", stream);
	return metrics_gauge(m, name, labels, help);
}

void
stream_rejected_register(struct metrics *m, const char *stream,
                         struct metric *out[REJ_COUNT])
{
	char extra[64];

	for (int i = 0; i < REJ_COUNT; i++) {
		snprintf(extra, sizeof(extra), "reason=\"%s\"",
		         stream_reject_names[i]);
		out[i] =
		    stream_counter(m, "kasir_stream_rejected_total", stream,
		                   extra, "stream frames refused, by reason");
	}
}

enum reject_reason
stream_reject_reason_of(int rc)
{
	switch (rc) {
	case KASIR_ETOOBIG:
		return REJ_TOOBIG;
	case KASIR_EKEY:
		return REJ_KEY;
	case KASIR_ESIG:
		return REJ_SIGNATURE;
	case KASIR_ETYPE:
		return REJ_TYPE;
	case KASIR_EPROTO:
		return REJ_ENVELOPE;
	default:
		return REJ_MESSAGE;
	}
}
