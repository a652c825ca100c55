/*
 * log.c - structured logging to the journal or logfmt on stderr (log.h).
 *
 * The destination is decided once in log_open(): systemd sets
 * $JOURNAL_STREAM to "DEV:INO" of the stream it connected to stderr; when
 * that matches our fd 2, stderr is the journal and sd_journal_sendv() keeps
 * the structured fields.  Otherwise every call writes one logfmt line with a
 * single write() (under a mutex, since lines may exceed PIPE_BUF), bounded
 * to LOG_LINE_MAX bytes.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <systemd/sd-journal.h>

#include "log.h"
#include "util.h"

#define LOG_LINE_MAX   8192 /* one logfmt line, including "\n" */
#define LOG_MSG_MAX    4096 /* formatted message before escaping */
#define LOG_FIELDS_MAX 16   /* caller fields per line */
#define LOG_IDENT_MAX  64

static char log_ident[LOG_IDENT_MAX] = "kasir";
static atomic_int log_max_level = LOG_INFO;
static bool log_journal;
static pthread_mutex_t log_write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {
    [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert",     [LOG_CRIT] = "crit",
    [LOG_ERR] = "err",     [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
    [LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
};

/* true when fd 2 is the stream named by $JOURNAL_STREAM. */
static bool
stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char tail;

	if (e == NULL || sscanf(e, "%llu:%llu%c", &dev, &ino, &tail) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

void
log_open(const char *ident, int max_level)
{
	if (ident != NULL)
		kasir_strlcpy(log_ident, ident, sizeof(log_ident));
	log_set_level(max_level);
	log_journal = stderr_is_journal();
}

void
log_set_level(int max_level)
{
	if (max_level < LOG_EMERG)
		max_level = LOG_EMERG;
	if (max_level > LOG_DEBUG)
		max_level = LOG_DEBUG;
	atomic_store(&log_max_level, max_level);
}

int
log_level_parse(const char *s, int *ret_level)
{
	static const struct {
		const char *name;
		int level;
	} levels[] = {
	    {"debug", LOG_DEBUG},   {"info", LOG_INFO},
	    {"notice", LOG_NOTICE}, {"warning", LOG_WARNING},
	    {"err", LOG_ERR},
	};

	if (s == NULL)
		return -EINVAL;
	for (size_t i = 0; i < ARRAY_SIZE(levels); i++)
		if (strcmp(s, levels[i].name) == 0) {
			*ret_level = levels[i].level;
			return 0;
		}
	return -EINVAL;
}

/* A bounded line buffer; once full, further appends are dropped and
 * truncated is set. */
struct line {
	char buf[LOG_LINE_MAX];
	size_t len, limit; /* limit leaves room for the "…\"\n" trailer */
	bool truncated, in_quote;
};

static void
line_putc(struct line *l, char c)
{
	if (l->len >= l->limit) {
		l->truncated = true;
		return;
	}
	l->buf[l->len++] = c;
}

/* Appends n bytes only if all fit, so escapes are never cut in half. */
static void
line_put(struct line *l, const char *s, size_t n)
{
	if (l->truncated || n > l->limit - l->len) {
		l->truncated = true;
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void
line_puts(struct line *l, const char *s)
{
	line_put(l, s, strlen(s));
}

/* Appends raw text, as much as fits, cut at a UTF-8 character boundary. */
static void
line_put_cut(struct line *l, const char *s, size_t n)
{
	size_t room = l->truncated ? 0 : l->limit - l->len;

	if (n <= room) {
		line_put(l, s, n);
		return;
	}
	while (room > 0 && ((uint8_t)s[room] & 0xc0) == 0x80)
		room--;
	memcpy(l->buf + l->len, s, room);
	l->len += room;
	l->truncated = true;
}

/* Length of the valid UTF-8 sequence starting at s (at most n bytes), 0
 * when it is not valid. */
static size_t
utf8_seq(const char *s, size_t n)
{
	uint8_t c = (uint8_t)s[0];
	size_t k = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;

	if (k == 0 || k > n || !utf8_valid(s, k))
		return 0;
	return k;
}

static bool
needs_quotes(const char *v)
{
	size_t n = strlen(v);

	if (n == 0)
		return true;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t)v[i];
		if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
			return true;
		if (c >= 0x80) {
			size_t k = utf8_seq(v + i, n - i);
			if (k == 0)
				return true;
			i += k - 1;
		}
	}
	return false;
}

/* Appends v, quoted and escaped when needed (logfmt). */
static void
line_value(struct line *l, const char *v)
{
	size_t n = strlen(v);
	char esc[8];

	if (!needs_quotes(v)) {
		line_put_cut(l, v, n);
		return;
	}
	line_putc(l, '"');
	l->in_quote = true;
	for (size_t i = 0; i < n && !l->truncated; i++) {
		uint8_t c = (uint8_t)v[i];
		size_t k;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			line_put(l, esc, 2);
		} else if (c == '\n') {
			line_put(l, "\\n", 2);
		} else if (c == '\r') {
			line_put(l, "\\r", 2);
		} else if (c == '\t') {
			line_put(l, "\\t", 2);
		} else if (c < ' ' || c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\x%02x", c);
			line_put(l, esc, 4);
		} else if (c < 0x80) {
			line_putc(l, (char)c);
		} else if ((k = utf8_seq(v + i, n - i)) > 0) {
			line_put(l, v + i, k);
			i += k - 1;
		} else {
			snprintf(esc, sizeof(esc), "\\x%02x", c);
			line_put(l, esc, 4);
		}
	}
	if (!l->truncated) {
		line_putc(l, '"');
		l->in_quote = false;
	}
}

static void
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return; /* nowhere left to report it */
		}
		buf += n;
		len -= (size_t)n;
	}
}

static void
log_logfmt(int prio, const struct log_field *fields, const char *msg)
{
	struct line l;
	char ts[32];

	l.len = 0;
	l.limit = LOG_LINE_MAX - (sizeof("…") - 1) - 2; /* …, quote, \n */
	l.truncated = false;
	l.in_quote = false;

	time_rfc3339(now_real_ms(), ts, sizeof(ts));
	line_puts(&l, "ts=");
	line_puts(&l, ts);
	line_puts(&l, " level=");
	line_puts(&l, level_names[prio]);
	line_puts(&l, " proc=");
	line_value(&l, log_ident);
	line_puts(&l, " msg=");
	/* msg is always quoted so that grep 'msg="' finds every message. */
	if (needs_quotes(msg)) {
		line_value(&l, msg);
	} else {
		line_putc(&l, '"');
		l.in_quote = true;
		line_put_cut(&l, msg, strlen(msg));
		if (!l.truncated) {
			line_putc(&l, '"');
			l.in_quote = false;
		}
	}
	for (size_t i = 0; fields != NULL && fields[i].key != NULL &&
	                   i < LOG_FIELDS_MAX && !l.truncated;
	     i++) {
		if (fields[i].value == NULL)
			continue;
		line_putc(&l, ' ');
		line_puts(&l, fields[i].key);
		line_putc(&l, '=');
		line_value(&l, fields[i].value);
	}
	if (l.truncated) {
		memcpy(l.buf + l.len, "…", sizeof("…") - 1);
		l.len += sizeof("…") - 1;
		if (l.in_quote)
			l.buf[l.len++] = '"';
	}
	l.buf[l.len++] = '\n';

	pthread_mutex_lock(&log_write_lock);
	write_all(STDERR_FILENO, l.buf, l.len);
	pthread_mutex_unlock(&log_write_lock);
}

/* Appends "KEY=value" to buf at *off; the iovec points into buf. */
static bool
journal_field(char *buf, size_t size, size_t *off, struct iovec *iov,
              const char *key, const char *value)
{
	int n = snprintf(buf + *off, size - *off, "%s=%s", key, value);

	if (n < 0 || (size_t)n >= size - *off)
		return false;
	iov->iov_base = buf + *off;
	iov->iov_len = (size_t)n;
	*off += (size_t)n + 1;
	return true;
}

static void
log_to_journal(int prio, const struct log_field *fields, const char *msg)
{
	char buf[LOG_LINE_MAX], pbuf[2] = {(char)('0' + prio), '\0'};
	struct iovec iov[3 + LOG_FIELDS_MAX];
	size_t off = 0;
	int n = 0;

	if (!journal_field(buf, sizeof(buf), &off, &iov[n], "MESSAGE", msg))
		return;
	n++;
	journal_field(buf, sizeof(buf), &off, &iov[n++], "PRIORITY", pbuf);
	journal_field(buf, sizeof(buf), &off, &iov[n++], "SYSLOG_IDENTIFIER",
	              log_ident);
	for (size_t i = 0;
	     fields != NULL && fields[i].key != NULL && i < LOG_FIELDS_MAX;
	     i++) {
		if (fields[i].value == NULL)
			continue;
		if (!journal_field(buf, sizeof(buf), &off, &iov[n],
		                   fields[i].key, fields[i].value))
			break; /* keep what fits */
		n++;
	}
	(void)sd_journal_sendv(iov, n);
}

void
log_fields(int prio, const struct log_field *fields, const char *fmt, ...)
{
	char msg[LOG_MSG_MAX];
	int saved_errno = errno;
	va_list ap;

	if (prio < LOG_EMERG || prio > LOG_DEBUG)
		prio = LOG_ERR;
	if (prio > atomic_load(&log_max_level))
		return;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		kasir_strlcpy(msg, fmt, sizeof(msg));
	else if ((size_t)n >= sizeof(msg))
		/* Mark the cut; back off to a UTF-8 boundary first. */
		for (size_t i = sizeof(msg) - 4;; i--)
			if (((uint8_t)msg[i] & 0xc0) != 0x80 || i == 0) {
				memcpy(msg + i, "…", sizeof("…"));
				break;
			}

	if (log_journal)
		log_to_journal(prio, fields, msg);
	else
		log_logfmt(prio, fields, msg);
	errno = saved_errno;
}
