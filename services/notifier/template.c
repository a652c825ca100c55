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
                     "Terima kasih telah memesan {course_title}.\n"
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
        },
    [KIND_REMINDER] =
        {
            .subject = "Pengingat: pembayaran {course_title} menunggu",
            .email = "Halo {customer_name},\n"
                     "\n"
                     "Pesanan {order_id} untuk {course_title} sebesar "
                     "{amount} belum dibayar.\n"
                     "Selesaikan pembayaran sebelum {expires_at}:\n"
                     "{redirect_url}\n"
                     "\n"
                     "Abaikan pesan ini jika Anda sudah membayar.\n"
                     "\n"
                     "Salam,\n"
                     "Tim BuatFilm AgentBar\n",
        },
    [KIND_RECEIPT] =
        {
            .subject = "Pembayaran diterima: {course_title} ({order_id})",
            .email = "Halo {customer_name},\n"
                     "\n"
                     "Pembayaran Anda sebesar {amount} untuk "
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
        },
    [KIND_EXPIRY] =
        {
            .subject = "Pesanan {order_id} kedaluwarsa",
            .email = "Halo {customer_name},\n"
                     "\n"
                     "Pesanan {order_id} untuk {course_title} "
                     "({amount}) telah kedaluwarsa karena pembayaran tidak "
                     "diterima sebelum {expires_at}.\n"
                     "Anda dapat membuat pesanan baru kapan saja.\n"
                     "\n"
                     "Salam,\n"
                     "Tim BuatFilm AgentBar\n",
        },
    [KIND_REFUND] =
        {
            .subject = "Pengembalian dana pesanan {order_id}",
            .email = "Halo {customer_name},\n"
                     "\n"
                     "Dana untuk pesanan {order_id} ({course_title}, "
                     "{amount}) telah dikembalikan.\n"
                     "Dana akan kembali ke metode pembayaran Anda sesuai "
                     "ketentuan penyedia pembayaran.\n"
                     "\n"
                     "Salam,\n"
                     "Tim BuatFilm AgentBar\n",
        },
};

const struct notify_template *
template_default(enum notify_kind k)
{
	if ((int)k < 0 || k >= KIND_COUNT)
		return NULL;
	return &defaults[k];
}

/*
 * The WhatsApp templates kasir registers with Meta by default; their
 * texts are in deploy/whatsapp/templates.json and docs/whatsapp.md (the
 * notifier tests send through a fake that knows only that file, so a
 * drift between the two fails them).
 */
#define WA_DEFAULT(nm, ...)                                                    \
	{                                                                      \
		.name = (char *)(nm), .language = (char *)"id", .params = {    \
			.var = {__VA_ARGS__},                                  \
			.n = sizeof((enum template_var[]){__VA_ARGS__}) /      \
			     sizeof(enum template_var),                        \
			.set = true,                                           \
		}                                                              \
	}
static const struct wa_template wa_defaults[KIND_COUNT] = {
    [KIND_INSTRUCTIONS] = WA_DEFAULT(
        "kasir_instruksi_pembayaran", TV_CUSTOMER_NAME, TV_COURSE_TITLE,
        TV_AMOUNT, TV_EXPIRES_AT, TV_REDIRECT_URL, TV_ORDER_ID),
    [KIND_REMINDER] =
        WA_DEFAULT("kasir_pengingat_pembayaran", TV_CUSTOMER_NAME, TV_ORDER_ID,
                   TV_COURSE_TITLE, TV_AMOUNT, TV_REDIRECT_URL, TV_EXPIRES_AT),
    [KIND_RECEIPT] =
        WA_DEFAULT("kasir_bukti_pembayaran", TV_CUSTOMER_NAME, TV_AMOUNT,
                   TV_COURSE_TITLE, TV_ORDER_ID, TV_VALID_UNTIL),
    [KIND_EXPIRY] = WA_DEFAULT("kasir_pesanan_kedaluwarsa", TV_CUSTOMER_NAME,
                               TV_ORDER_ID, TV_COURSE_TITLE, TV_EXPIRES_AT),
    [KIND_REFUND] = WA_DEFAULT("kasir_pengembalian_dana", TV_CUSTOMER_NAME,
                               TV_ORDER_ID, TV_COURSE_TITLE, TV_AMOUNT),
};
#undef WA_DEFAULT

const struct wa_template *
wa_template_default(enum notify_kind k)
{
	if ((int)k < 0 || k >= KIND_COUNT)
		return NULL;
	return &wa_defaults[k];
}

bool
wa_template_name_valid(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return false;
	for (; s[n]; n++)
		if (!((s[n] >= 'a' && s[n] <= 'z') ||
		      (s[n] >= '0' && s[n] <= '9') || s[n] == '_'))
			return false;
	return n >= 1 && n <= 512;
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

static bool
two_digits(const char *s)
{
	return s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9';
}

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

		/* exactly "hh:mm": sscanf alone took "+1:2" and the six
		 * bytes skipped below ran past the string's end */
		if (!two_digits(p + 1) || p[3] != ':' || !two_digits(p + 4))
			return -EINVAL;
		hh = (p[1] - '0') * 10 + (p[2] - '0');
		mm = (p[4] - '0') * 10 + (p[5] - '0');
		if (hh > 23 || mm > 59)
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

/* Each placeholder's name and where its value is in template_vars. */
static const struct {
	const char *name;
	size_t off;
} vars[TV_COUNT] = {
    [TV_CUSTOMER_NAME] = {"customer_name",
                          offsetof(struct template_vars, customer_name)},
    [TV_COURSE_TITLE] = {"course_title",
                         offsetof(struct template_vars, course_title)},
    [TV_AMOUNT] = {"amount", offsetof(struct template_vars, amount)},
    [TV_ORDER_ID] = {"order_id", offsetof(struct template_vars, order_id)},
    [TV_REDIRECT_URL] = {"redirect_url",
                         offsetof(struct template_vars, redirect_url)},
    [TV_EXPIRES_AT] = {"expires_at",
                       offsetof(struct template_vars, expires_at)},
    [TV_VALID_UNTIL] = {"valid_until",
                        offsetof(struct template_vars, valid_until)},
};

const char *
template_var_name(enum template_var tv)
{
	if ((int)tv < 0 || tv >= TV_COUNT)
		return NULL;
	return vars[tv].name;
}

static int
var_find(const char *name, size_t len, enum template_var *ret)
{
	for (int i = 0; i < TV_COUNT; i++) {
		if (strlen(vars[i].name) == len &&
		    memcmp(vars[i].name, name, len) == 0) {
			*ret = (enum template_var)i;
			return 0;
		}
	}
	return -EINVAL;
}

int
template_var_parse(const char *name, enum template_var *ret)
{
	if (name == NULL)
		return -EINVAL;
	return var_find(name, strlen(name), ret);
}

/* The value of tv in v, "-" for NULL. */
static const char *
var_value(const struct template_vars *v, enum template_var tv)
{
	const char *val;

	memcpy(&val, (const char *)v + vars[tv].off, sizeof(val));
	return val ? val : "-";
}

/* The value of placeholder name (len bytes), or -EINVAL when unknown.
 * v may be NULL (checking only). */
static int
lookup(const char *name, size_t len, const struct template_vars *v,
       const char **ret)
{
	enum template_var tv;

	if (var_find(name, len, &tv) < 0)
		return -EINVAL;
	if (v != NULL)
		*ret = var_value(v, tv);
	return 0;
}

void
template_param(const struct template_vars *v, enum template_var tv, char *out,
               size_t len)
{
	const char *in = var_value(v, tv);
	size_t o = 0;
	bool space = false;

	if (len == 0)
		return;
	for (; *in; in++) {
		unsigned char c = (unsigned char)*in;

		if (c < 0x20 || c == 0x7f || c == ' ') {
			space = o > 0;
			continue;
		}
		if (space) {
			if (o + 1 >= len)
				break;
			out[o++] = ' ';
			space = false;
		}
		if (o + 1 >= len)
			break;
		out[o++] = (char)c;
	}
	/* never end inside a UTF-8 sequence: drop an incomplete last one */
	if (*in != '\0') {
		size_t k = o, want;

		while (k > 0 && ((unsigned char)out[k - 1] & 0xc0) == 0x80)
			k--;
		if (k > 0 && ((unsigned char)out[k - 1] & 0xc0) == 0xc0) {
			unsigned char lead = (unsigned char)out[k - 1];

			want = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
			if (o - (k - 1) < want)
				o = k - 1;
		}
		while (o > 0 && out[o - 1] == ' ')
			o--;
	}
	if (o == 0 && len >= 2)
		out[o++] = '-';
	out[o] = '\0';
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
