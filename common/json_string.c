/*
 * json_string.c - control characters in JSON strings, on the raw text
 * (see json_string.h for why it cannot be done on cJSON's tree).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "json_string.h"

#define JSON_PATH_FRAMES 16 /* deeper members are named by their ancestors */
#define JSON_KEY_MAX     64

static int
hex4(const unsigned char *p, const unsigned char *end, unsigned *ret)
{
	unsigned v = 0;

	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		unsigned char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*ret = v;
	return 0;
}

static int
refuse(const char **ret_why, int err, const char *why)
{
	if (ret_why != NULL)
		*ret_why = why;
	return err;
}

int
json_scan_string(const unsigned char **pp, const unsigned char *end,
                 bool allow_controls, const char **ret_why)
{
	const unsigned char *p = *pp + 1; /* past the opening quote */

	while (p < end) {
		unsigned char c = *p;
		unsigned u, lo;

		if (c == '"') {
			*pp = p + 1;
			return 0;
		}
		if (c < 0x20)
			return refuse(ret_why, JSON_STRING_MALFORMED,
			              "control character in a string");
		if (c == 0x7f && !allow_controls)
			return refuse(ret_why, JSON_STRING_CONTROL,
			              "control character in a string");
		/* U+0080..U+009F written raw: UTF-8 C2 80..C2 9F (an
		 * outside attack, 2026-12-07: the escapes were refused, the
		 * raw bytes were not) */
		if (c == 0xc2 && !allow_controls && end - p >= 2 &&
		    p[1] >= 0x80 && p[1] <= 0x9f)
			return refuse(ret_why, JSON_STRING_CONTROL,
			              "control character in a string");
		if (c != '\\') {
			p++;
			continue;
		}
		if (end - p < 2)
			break;
		switch (p[1]) {
		case '"':
		case '\\':
		case '/':
			p += 2;
			continue;
		case 'b':
		case 'f':
		case 'n':
		case 'r':
		case 't':
			if (!allow_controls)
				return refuse(ret_why, JSON_STRING_CONTROL,
				              "control character in a string");
			p += 2;
			continue;
		case 'u':
			break;
		default:
			return refuse(ret_why, JSON_STRING_MALFORMED,
			              "bad escape in a string");
		}
		if (hex4(p + 2, end, &u) < 0)
			return refuse(ret_why, JSON_STRING_MALFORMED,
			              "bad \\u escape in a string");
		p += 6;
		if (u == 0)
			return refuse(ret_why, JSON_STRING_NUL,
			              "\\u0000 in a string");
		if (!allow_controls && (u < 0x20 || (u >= 0x7f && u <= 0x9f)))
			return refuse(ret_why, JSON_STRING_CONTROL,
			              "control character in a string");
		if (u >= 0xDC00 && u <= 0xDFFF)
			return refuse(ret_why, JSON_STRING_SURROGATE,
			              "unpaired surrogate escape");
		if (u >= 0xD800 && u <= 0xDBFF) {
			if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
			    hex4(p + 2, end, &lo) < 0 || lo < 0xDC00 ||
			    lo > 0xDFFF)
				return refuse(ret_why, JSON_STRING_SURROGATE,
				              "unpaired surrogate escape");
			p += 6;
		}
	}
	return refuse(ret_why, JSON_STRING_MALFORMED, "unterminated string");
}

struct frame {
	bool array;
	unsigned index;         /* arrays: the current element */
	char key[JSON_KEY_MAX]; /* objects: the current member's key */
};

/* Writes the path of the frames into out ("a.b[2].c"); extra is appended
 * as one more member name when not NULL. */
static void
write_path(const struct frame *f, unsigned n, const char *extra, char *out,
           size_t len)
{
	size_t used = 0;

	if (len == 0)
		return;
	out[0] = '\0';
	for (unsigned i = 0; i < n && used < len; i++) {
		int w;

		if (f[i].array)
			w = snprintf(out + used, len - used, "[%u]",
			             f[i].index);
		else
			w = snprintf(out + used, len - used, "%s%s",
			             used ? "." : "", f[i].key);
		if (w < 0)
			return;
		used += (size_t)w;
	}
	if (extra != NULL && used < len)
		snprintf(out + used, len - used, "%s%s", used ? "." : "",
		         extra);
}

static const unsigned char *
skip_ws(const unsigned char *p, const unsigned char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

int
json_find_control(const char *text, size_t len, char *ret_field,
                  size_t field_len)
{
	const unsigned char *p = (const unsigned char *)text, *end = p + len;
	struct frame f[JSON_PATH_FRAMES];
	unsigned depth = 0; /* real depth; frames hold the first 16 */

	/* a string whatever is returned: a caller printed it uninitialised
	 * after -EINVAL, stack bytes in an API answer (an outside attack,
	 * 2026-12-07) */
	if (field_len > 0)
		ret_field[0] = '\0';

	while ((p = skip_ws(p, end)) < end) {
		const unsigned char *start = p;
		struct frame *top = depth > 0 && depth <= JSON_PATH_FRAMES
		                        ? &f[depth - 1]
		                        : NULL;

		switch (*p) {
		case '{':
		case '[':
			if (depth < JSON_PATH_FRAMES) {
				f[depth].array = *p == '[';
				f[depth].index = 0;
				f[depth].key[0] = '\0';
			}
			depth++;
			p++;
			continue;
		case '}':
		case ']':
			if (depth == 0)
				return -EINVAL;
			depth--;
			p++;
			continue;
		case ',':
			if (top != NULL && top->array)
				top->index++;
			p++;
			continue;
		case ':':
			p++;
			continue;
		case '"':
			break;
		default:
			/* number, true, false, null */
			while (p < end && *p != '\0' &&
			       strchr(",:{}[] \t\r\n", *p) == NULL)
				p++;
			if (p == start)
				return -EINVAL; /* a NUL byte, say */
			continue;
		}
		bool is_key = top != NULL && !top->array;
		const unsigned char *after;
		unsigned nf;

		if (json_scan_string(&p, end, false, NULL) < 0) {
			/* a key or a value?  find the end to look behind */
			const unsigned char *q = start + 1;
			while (q < end && *q != '"')
				q += *q == '\\' ? 2 : 1;
			q = q < end ? skip_ws(q + 1, end) : end;
			nf =
			    depth < JSON_PATH_FRAMES ? depth : JSON_PATH_FRAMES;
			if (q < end && *q == ':' && is_key)
				/* the key itself: its object's path + "?" */
				write_path(f, nf - 1, "?", ret_field,
				           field_len);
			else
				write_path(f, nf, NULL, ret_field, field_len);
			return KASIR_EREJECT;
		}
		after = skip_ws(p, end);
		if (is_key && after < end && *after == ':') {
			size_t n = (size_t)(p - start) - 2;
			if (n >= JSON_KEY_MAX)
				n = JSON_KEY_MAX - 1;
			memcpy(top->key, start + 1, n);
			top->key[n] = '\0';
		}
	}
	return depth == 0 ? 0 : -EINVAL;
}
