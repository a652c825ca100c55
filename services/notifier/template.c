/*
 * template.c - notification texts: the Indonesian defaults, {placeholder}
 * rendering, rupiah amounts and dates in WIB.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "notifier.h"

static const char *const kind_names[KIND_COUNT] = {
    [KIND_INSTRUCTIONS] = "instructions",
    [KIND_REMINDER] = "reminder",
    [KIND_RECEIPT] = "receipt",
    [KIND_EXPIRY] = "expiry",
    [KIND_REFUND] = "refund",
};

static const char *const channel_names[CHANNEL_COUNT] = {
    [CHANNEL_EMAIL] = "email",
    [CHANNEL_WHATSAPP] = "whatsapp",
};

const char *
notify_kind_name(enum notify_kind k)
{
	if ((int)k < 0 || k >= KIND_COUNT)
		return NULL;
	return kind_names[k];
}

int
notify_kind_parse(const char *s, enum notify_kind *ret)
{
	for (int i = 0; s && i < KIND_COUNT; i++) {
		if (strcmp(s, kind_names[i]) == 0) {
			*ret = (enum notify_kind)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *
notify_channel_name(enum notify_channel_id c)
{
	if ((int)c < 0 || c >= CHANNEL_COUNT)
		return NULL;
	return channel_names[c];
}

int
notify_channel_parse(const char *s, enum notify_channel_id *ret)
{
	for (int i = 0; s && i < CHANNEL_COUNT; i++) {
		if (strcmp(s, channel_names[i]) == 0) {
			*ret = (enum notify_channel_id)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* Indonesian defaults.  Operators override any of them in the YAML. */
static const struct notify_template defaults[KIND_COUNT] = {
    [KIND_INSTRUCTIONS] =
        {
            .subject = "Selesaikan pembayaran {course_title} ({order_id})",
            .email = "Halo {customer_name},\n"
                     "\n"
                     "Terima kasih telah memesan kelas {course_title}.\n"
                     "Total pembayaran: {amount}\n"
                     "Nomor pesanan: {order_id}\n"
                     "\n"
                     "Silakan selesaikan pembayaran melalui tautan berikut:\n"
                     "{redirect_url}\n"
                     "\n"
                     "Batas waktu pembayaran: {expires_at}\n"
                     "\n"
                     "Salam,\n"
                     "Tim BuatFilm AgentBar\n",
            .whatsapp = "Halo {customer_name}, terima kasih telah memesan "
                        "{course_title} ({amount}). Selesaikan pembayaran "
                        "sebelum {expires_at} melalui {redirect_url} "
                        "(pesanan {order_id}).",
        },
    [KIND_REMINDER] =
        {
            .subject = "Pengingat: pembayaran {course_title} menunggu",
            .email = "Halo {customer_name},\n"
                     "\n"
                     "Pesanan {order_id} untuk kelas {course_title} sebesar "
                     "{amount} belum dibayar.\n"
                     "Selesaikan pembayaran sebelum {expires_at}:\n"
                     "{redirect_url}\n"
                     "\n"
                     "Abaikan pesan ini jika Anda sudah membayar.\n"
                     "\n"
                     "Salam,\n"
                     "Tim BuatFilm AgentBar\n",
            .whatsapp = "Halo {customer_name}, pesanan {order_id} "
                        "({course_title}, {amount}) belum dibayar. Bayar "
                        "sebelum {expires_at}: {redirect_url}",
        },
    [KIND_RECEIPT] =
        {
            .subject = "Pembayaran diterima: {course_title} ({order_id})",
            .email = "Halo {customer_name},\n"
                     "\n"
                     "Pembayaran Anda sebesar {amount} untuk kelas "
                     "{course_title} telah kami terima.\n"
                     "Nomor pesanan: {order_id}\n"
                     "\n"
                     "Akses kelas Anda sudah aktif, berlaku hingga: "
                     "{valid_until}.\n"
                     "Masuk dengan alamat email yang Anda gunakan saat "
                     "memesan.\n"
                     "\n"
                     "Simpan email ini sebagai bukti pembayaran.\n"
                     "\n"
                     "Salam,\n"
                     "Tim BuatFilm AgentBar\n",
            .whatsapp = "Halo {customer_name}, pembayaran {amount} untuk "
                        "{course_title} (pesanan {order_id}) sudah kami "
                        "terima. Akses kelas aktif hingga {valid_until}. "
                        "Terima kasih!",
        },
    [KIND_EXPIRY] =
        {
            .subject = "Pesanan {order_id} kedaluwarsa",
            .email = "Halo {customer_name},\n"
                     "\n"
                     "Pesanan {order_id} untuk kelas {course_title} "
                     "({amount}) telah kedaluwarsa karena pembayaran tidak "
                     "diterima sebelum {expires_at}.\n"
                     "Anda dapat membuat pesanan baru kapan saja.\n"
                     "\n"
                     "Salam,\n"
                     "Tim BuatFilm AgentBar\n",
            .whatsapp = "Halo {customer_name}, pesanan {order_id} "
                        "({course_title}) telah kedaluwarsa. Silakan buat "
                        "pesanan baru bila masih berminat.",
        },
    [KIND_REFUND] =
        {
            .subject = "Pengembalian dana pesanan {order_id}",
            .email = "Halo {customer_name},\n"
                     "\n"
                     "Dana untuk pesanan {order_id} (kelas {course_title}, "
                     "{amount}) telah dikembalikan.\n"
                     "Dana akan kembali ke metode pembayaran Anda sesuai "
                     "ketentuan penyedia pembayaran.\n"
                     "\n"
                     "Salam,\n"
                     "Tim BuatFilm AgentBar\n",
            .whatsapp = "Halo {customer_name}, dana pesanan {order_id} "
                        "({course_title}, {amount}) telah dikembalikan.",
        },
};

const struct notify_template *
template_default(enum notify_kind k)
{
	if ((int)k < 0 || k >= KIND_COUNT)
		return NULL;
	return &defaults[k];
}

int
rupiah_format(int64_t amount, char *buf, size_t len)
{
	char digits[24], out[40];
	size_t nd, o = 0;
	uint64_t u;

	if (amount < 0)
		u = (uint64_t)(-(amount + 1)) + 1; /* INT64_MIN safe */
	else
		u = (uint64_t)amount;
	nd = (size_t)snprintf(digits, sizeof(digits), "%" PRIu64, u);
	if (amount < 0)
		out[o++] = '-';
	out[o++] = 'R';
	out[o++] = 'p';
	for (size_t i = 0; i < nd; i++) {
		if (i > 0 && (nd - i) % 3 == 0)
			out[o++] = '.';
		out[o++] = digits[i];
	}
	out[o] = '\0';
	if (o + 1 > len)
		return -ENOSPC;
	memcpy(buf, out, o + 1);
	return 0;
}

static const char *const bulan[12] = {
    "Januari", "Februari", "Maret",     "April",   "Mei",      "Juni",
    "Juli",    "Agustus",  "September", "Oktober", "November", "Desember",
};

/* Parses "YYYY-MM-DDTHH:MM:SS[.fff](Z|+hh:mm|-hh:mm)" into epoch seconds. */
static int
rfc3339_parse(const char *s, time_t *ret)
{
	struct tm tm;
	const char *p;
	int off = 0;
	time_t t;

	if (s == NULL)
		return -EINVAL;
	memset(&tm, 0, sizeof(tm));
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (p == NULL)
		return -EINVAL;
	if (*p == '.') {
		p++;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int hh, mm;
		char sign = *p;

		if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2 || hh > 23 ||
		    mm > 59)
			return -EINVAL;
		off = (hh * 60 + mm) * 60;
		if (sign == '-')
			off = -off;
		p += 6;
	} else {
		return -EINVAL;
	}
	if (*p != '\0')
		return -EINVAL;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -EINVAL;
	*ret = t - off;
	return 0;
}

int
time_format_wib(const char *rfc3339, char *buf, size_t len)
{
	struct tm tm;
	time_t t;
	int n;

	if (rfc3339_parse(rfc3339, &t) < 0)
		return -EINVAL;
	t += 7 * 3600; /* WIB = UTC+7, no daylight saving */
	if (gmtime_r(&t, &tm) == NULL)
		return -EINVAL;
	n = snprintf(buf, len, "%d %s %d %02d:%02d WIB", tm.tm_mday,
	             bulan[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
	             tm.tm_min);
	if (n < 0 || (size_t)n >= len)
		return -ENOSPC;
	return 0;
}

#define PLACEHOLDER_NAME_MAX 32

/* The value of placeholder name (len bytes), or -EINVAL when unknown.
 * v may be NULL (checking only). */
static int
lookup(const char *name, size_t len, const struct template_vars *v,
       const char **ret)
{
	static const struct {
		const char *name;
		size_t off;
	} known[] = {
	    {"customer_name", offsetof(struct template_vars, customer_name)},
	    {"course_title", offsetof(struct template_vars, course_title)},
	    {"amount", offsetof(struct template_vars, amount)},
	    {"order_id", offsetof(struct template_vars, order_id)},
	    {"redirect_url", offsetof(struct template_vars, redirect_url)},
	    {"expires_at", offsetof(struct template_vars, expires_at)},
	    {"valid_until", offsetof(struct template_vars, valid_until)},
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (strlen(known[i].name) == len &&
		    memcmp(known[i].name, name, len) == 0) {
			if (v != NULL) {
				const char *val;

				memcpy(&val, (const char *)v + known[i].off,
				       sizeof(val));
				*ret = val ? val : "-";
			}
			return 0;
		}
	}
	return -EINVAL;
}

/*
 * One pass over text shared by check and render: "{name}" is replaced,
 * "{{" and "}}" are literal braces, anything else with a brace is an
 * error.  out == NULL only checks.
 */
static int
template_walk(const char *text, const struct template_vars *v, char *out,
              size_t out_cap, size_t *ret_len, char *why, size_t why_len)
{
	size_t o = 0, tl;

	if (text == NULL)
		return -EINVAL;
	tl = strlen(text);
	if (tl > NOTIFY_TEMPLATE_MAX) {
		if (why)
			snprintf(why, why_len, "template longer than %d bytes",
			         NOTIFY_TEMPLATE_MAX);
		return KASIR_ETOOBIG;
	}
	for (size_t i = 0; i < tl;) {
		const char *piece = "";
		size_t plen;

		if ((text[i] == '{' && text[i + 1] == '{') ||
		    (text[i] == '}' && text[i + 1] == '}')) {
			piece = &text[i];
			plen = 1;
			i += 2;
		} else if (text[i] == '{') {
			const char *end = memchr(text + i + 1, '}', tl - i - 1);
			size_t nlen;

			if (end == NULL) {
				if (why)
					snprintf(why, why_len,
					         "unterminated '{' at offset "
					         "%zu",
					         i);
				return -EINVAL;
			}
			nlen = (size_t)(end - (text + i + 1));
			if (nlen == 0 || nlen > PLACEHOLDER_NAME_MAX ||
			    lookup(text + i + 1, nlen, v, &piece) < 0) {
				if (why)
					snprintf(
					    why, why_len,
					    "unknown placeholder {%.*s}",
					    (int)(nlen > PLACEHOLDER_NAME_MAX
					              ? PLACEHOLDER_NAME_MAX
					              : nlen),
					    text + i + 1);
				return -EINVAL;
			}
			plen = v ? strnlen(piece, NOTIFY_VALUE_MAX) : 0;
			i += nlen + 2;
		} else if (text[i] == '}') {
			if (why)
				snprintf(why, why_len,
				         "stray '}' at offset %zu (write }} "
				         "for a literal brace)",
				         i);
			return -EINVAL;
		} else {
			piece = &text[i];
			plen = 1;
			i++;
		}
		if (out != NULL) {
			if (o + plen + 1 > out_cap)
				return KASIR_ETOOBIG;
			memcpy(out + o, piece, plen);
		}
		o += plen;
	}
	if (out != NULL)
		out[o] = '\0';
	if (ret_len)
		*ret_len = o;
	return 0;
}

int
template_check(const char *text, char *why, size_t why_len)
{
	return template_walk(text, NULL, NULL, 0, NULL, why, why_len);
}

int
template_render(const char *text, const struct template_vars *v, char **ret)
{
	char *out;
	int r;

	out = malloc(NOTIFY_RENDERED_MAX);
	if (out == NULL)
		return -ENOMEM;
	r = template_walk(text, v, out, NOTIFY_RENDERED_MAX, NULL, NULL, 0);
	if (r < 0) {
		free(out);
		return r;
	}
	*ret = out;
	return 0;
}
