/*
 * mime.c - building the email: RFC 5322 headers, RFC 2047 encoded UTF-8
 * subject and display name, quoted-printable text body, and a Message-ID
 * derived from the job id so a resent copy of the same job is
 * recognisable by the recipient's mail system and by us.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "notifier.h"
#include "util.h"

#define EW_CHUNK 45 /* bytes per encoded word: 60 base64 chars + 12 = 72 */

/* Length of the UTF-8 sequence starting with byte c (input is valid). */
static size_t
utf8_seqlen(unsigned char c)
{
	if (c < 0x80)
		return 1;
	if ((c & 0xe0) == 0xc0)
		return 2;
	if ((c & 0xf0) == 0xe0)
		return 3;
	return 4;
}

int
mime_encode_header(const char *utf8, char **ret)
{
	size_t len, cap, o = 0;
	char *out;

	if (utf8 == NULL)
		return -EINVAL;
	len = strlen(utf8);
	if (!utf8_valid(utf8, len))
		return -EINVAL;
	/* each chunk of <= 45 bytes becomes <= 72 chars + 3 of folding */
	cap = ((len + EW_CHUNK - 1) / EW_CHUNK + 1) * 80;
	out = malloc(cap);
	if (out == NULL)
		return -ENOMEM;
	size_t i = 0;
	do { /* an empty subject still gives one (empty) encoded word */
		size_t n = 0;

		while (i + n < len) {
			size_t l = utf8_seqlen((unsigned char)utf8[i + n]);

			if (n + l > EW_CHUNK)
				break;
			n += l;
		}
		if (o > 0) {
			memcpy(out + o, "\r\n ", 3);
			o += 3;
		}
		memcpy(out + o, "=?UTF-8?B?", 10);
		o += 10;
		o += (size_t)EVP_EncodeBlock((unsigned char *)out + o,
		                             (const unsigned char *)utf8 + i,
		                             (int)n);
		memcpy(out + o, "?=", 2);
		o += 2;
		i += n;
	} while (i < len);
	out[o] = '\0';
	*ret = out;
	return 0;
}

/* Appends to a growing buffer; the buffer is sized in advance so this
 * never overflows (asserted by the callers' size computation). */
struct obuf {
	char *p;
	size_t len, cap;
};

static int
ob_put(struct obuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 1024;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (p == NULL)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static int
ob_puts(struct obuf *b, const char *s)
{
	return ob_put(b, s, strlen(s));
}

/*
 * Quoted-printable of one logical line (no line terminator inside),
 * soft-wrapped at 76 characters.
 */
static int
qp_line(struct obuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t col = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char enc[4];
		size_t el;
		bool last = (i + 1 == n);

		if ((c == '=' || c >= 0x7f || (c < 0x20 && c != '\t')) ||
		    ((c == ' ' || c == '\t') && last) ||
		    (c == '.' && col == 0)) {
			enc[0] = '=';
			enc[1] = hex[c >> 4];
			enc[2] = hex[c & 15];
			el = 3;
		} else {
			enc[0] = (char)c;
			el = 1;
		}
		/* keep room for the soft break "=" within 76 columns */
		if (col + el > 75) {
			if (ob_put(b, "=\r\n", 3) < 0)
				return -ENOMEM;
			col = 0;
			if (c == '.' && el == 1) {
				enc[0] = '=';
				enc[1] = '2';
				enc[2] = 'E';
				el = 3;
			}
		}
		if (ob_put(b, enc, el) < 0)
			return -ENOMEM;
		col += el;
	}
	return ob_put(b, "\r\n", 2);
}

int
mime_qp_encode(const char *text, char **ret)
{
	struct obuf b = {0};
	const char *p = text, *end;

	if (text == NULL)
		return -EINVAL;
	if (ob_put(&b, "", 0) < 0)
		return -ENOMEM;
	end = text + strlen(text);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (qp_line(&b, p, n) < 0) {
			free(b.p);
			return -ENOMEM;
		}
		p = nl ? nl + 1 : end;
	}
	*ret = b.p;
	return 0;
}

bool
mime_address_valid(const char *addr)
{
	size_t n, at = 0, nat = 0;

	if (addr == NULL)
		return false;
	n = strlen(addr);
	if (n < 3 || n > 254)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)addr[i];

		if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' ||
		    c == '"' || c == '(' || c == ')' || c == ',' || c == ';' ||
		    c == '\\' || c == '[' || c == ']')
			return false;
		if (c == '@') {
			at = i;
			nat++;
		}
	}
	return nat == 1 && at > 0 && at < n - 1;
}

static void
rfc5322_date(int64_t ms, char *buf, size_t len)
{
	static const char *const wd[7] = {"Sun", "Mon", "Tue", "Wed",
	                                  "Thu", "Fri", "Sat"};
	static const char *const mon[12] = {"Jan", "Feb", "Mar", "Apr",
	                                    "May", "Jun", "Jul", "Aug",
	                                    "Sep", "Oct", "Nov", "Dec"};
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d +0000",
	         wd[tm.tm_wday], tm.tm_mday, mon[tm.tm_mon], tm.tm_year + 1900,
	         tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static bool
header_token_valid(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f ||
		    *s == '<' || *s == '>' || *s == '@')
			return false;
	return s != NULL;
}

int
mime_build(const struct mime_message *m, char **ret, size_t *ret_len)
{
	struct obuf b = {0};
	char *subject = NULL, *name = NULL, *body = NULL, line[256];
	const char *domain = m->msgid_domain ? m->msgid_domain : "kasir";
	int r = -EINVAL;

	if (!mime_address_valid(m->from_addr) ||
	    !mime_address_valid(m->to_addr) || !header_token_valid(domain) ||
	    m->subject == NULL || m->body == NULL)
		goto out;
	if (!utf8_valid(m->body, strlen(m->body)))
		goto out;
	if ((r = mime_encode_header(m->subject, &subject)) < 0)
		goto out;
	if (m->from_name && *m->from_name &&
	    (r = mime_encode_header(m->from_name, &name)) < 0)
		goto out;
	if ((r = mime_qp_encode(m->body, &body)) < 0)
		goto out;

	r = -ENOMEM;
	rfc5322_date(m->date_ms, line, sizeof(line));
	if (ob_puts(&b, "Date: ") < 0 || ob_puts(&b, line) < 0 ||
	    ob_puts(&b, "\r\nFrom: ") < 0)
		goto out;
	if (name && (ob_puts(&b, name) < 0 || ob_puts(&b, " ") < 0))
		goto out;
	if (ob_puts(&b, "<") < 0 || ob_puts(&b, m->from_addr) < 0 ||
	    ob_puts(&b, ">\r\nTo: <") < 0 || ob_puts(&b, m->to_addr) < 0 ||
	    ob_puts(&b, ">\r\nSubject: ") < 0 || ob_puts(&b, subject) < 0)
		goto out;
	snprintf(line, sizeof(line), "\r\nMessage-ID: <job-%" PRId64 "@%s>\r\n",
	         m->job_id, domain);
	if (ob_puts(&b, line) < 0)
		goto out;
	if (m->order_id && header_token_valid(m->order_id) &&
	    strlen(m->order_id) < 100) {
		snprintf(line, sizeof(line), "X-Kasir-Order: %s\r\n",
		         m->order_id);
		if (ob_puts(&b, line) < 0)
			goto out;
	}
	snprintf(line, sizeof(line), "X-Kasir-Job: %" PRId64 "\r\n", m->job_id);
	if (ob_puts(&b, line) < 0 ||
	    ob_puts(&b, "MIME-Version: 1.0\r\n"
	                "Content-Type: text/plain; charset=UTF-8\r\n"
	                "Content-Transfer-Encoding: quoted-printable\r\n"
	                "\r\n") < 0 ||
	    ob_puts(&b, body) < 0)
		goto out;
	*ret = b.p;
	*ret_len = b.len;
	b.p = NULL;
	r = 0;
out:
	free(b.p);
	free(subject);
	free(name);
	free(body);
	return r;
}
