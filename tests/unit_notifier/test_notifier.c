/*
 * test_notifier.c - unit tests of kasir-notifier's pure parts: rupiah
 * amounts, WIB dates, templates, RFC 2047 subjects, quoted-printable,
 * the MIME message, the retry schedule, phone numbers and the guard.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "err.h"
#include "notifier.h"

static void
test_rupiah(void **state)
{
	char buf[40];

	(void)state;
	assert_int_equal(rupiah_format(150000, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "Rp150.000");
	assert_int_equal(rupiah_format(0, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "Rp0");
	assert_int_equal(rupiah_format(999, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "Rp999");
	assert_int_equal(rupiah_format(1000, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "Rp1.000");
	assert_int_equal(rupiah_format(1250000, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "Rp1.250.000");
	assert_int_equal(rupiah_format(-75000, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "-Rp75.000");
	assert_int_equal(rupiah_format(INT64_MAX, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "Rp9.223.372.036.854.775.807");
	assert_int_equal(rupiah_format(INT64_MIN, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "-Rp9.223.372.036.854.775.808");
	/* too small: refused, nothing half-written is promised */
	assert_int_equal(rupiah_format(150000, buf, 9), -ENOSPC);
	assert_int_equal(rupiah_format(150000, buf, 10), 0);
}

static void
test_wib(void **state)
{
	char buf[64];

	(void)state;
	assert_int_equal(
	    time_format_wib("2026-11-23T09:33:19.123Z", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "23 November 2026 16:33 WIB");
	/* crossing midnight and a year */
	assert_int_equal(
	    time_format_wib("2026-12-31T20:00:00Z", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "1 Januari 2027 03:00 WIB");
	/* an explicit offset */
	assert_int_equal(
	    time_format_wib("2026-08-17T10:00:00+07:00", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "17 Agustus 2026 10:00 WIB");
	assert_int_equal(time_format_wib("yesterday", buf, sizeof(buf)),
	                 -EINVAL);
	assert_int_equal(
	    time_format_wib("2026-08-17T10:00:00", buf, sizeof(buf)), -EINVAL);
	assert_int_equal(time_format_wib(NULL, buf, sizeof(buf)), -EINVAL);
	/* a short offset: refused, and nothing read past the string's end
	 * (a copy sized exactly, so that ASan sees an overread) */
	{
		static const char *const bad[] = {
		    "2026-01-01T00:00:00+1:2", "2026-01-01T00:00:00+01:2",
		    "2026-01-01T00:00:00+0100", "2026-01-01T00:00:00+",
		    "2026-01-01T00:00:00-1"};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			char *s = strdup(bad[i]);

			assert_non_null(s);
			assert_int_equal(time_format_wib(s, buf, sizeof(buf)),
			                 -EINVAL);
			free(s);
		}
	}
}

static void
test_template_render(void **state)
{
	struct template_vars v = {
	    .customer_name = "Siti Rahayu",
	    .course_title = "Sinematografi Dasar",
	    .amount = "Rp150.000",
	    .order_id = "ORD-1",
	};
	char *out = NULL, why[128];

	(void)state;
	assert_int_equal(
	    template_render("Halo {customer_name}, {course_title} {amount} "
	                    "({order_id}) {{literal}} {valid_until}",
	                    &v, &out),
	    0);
	assert_string_equal(out, "Halo Siti Rahayu, Sinematografi Dasar "
	                         "Rp150.000 (ORD-1) {literal} -");
	free(out);

	assert_int_equal(template_render("x {nope} y", &v, &out), -EINVAL);
	assert_int_equal(template_check("x {nope} y", why, sizeof(why)),
	                 -EINVAL);
	assert_non_null(strstr(why, "{nope}"));
	assert_int_equal(template_check("x {amount", why, sizeof(why)),
	                 -EINVAL);
	assert_int_equal(template_check("x } y", why, sizeof(why)), -EINVAL);
	assert_int_equal(template_check("{}", why, sizeof(why)), -EINVAL);
	assert_int_equal(template_check("ok {amount}", why, sizeof(why)), 0);

	/* every default template uses known placeholders only */
	for (int k = 0; k < KIND_COUNT; k++) {
		const struct notify_template *t = template_default(k);

		assert_int_equal(template_check(t->subject, why, sizeof(why)),
		                 0);
		assert_int_equal(template_check(t->email, why, sizeof(why)), 0);
	}
	/* the receipt names the customer, the course and the amount */
	assert_int_equal(
	    template_render(template_default(KIND_RECEIPT)->email, &v, &out),
	    0);
	assert_non_null(strstr(out, "Siti Rahayu"));
	assert_non_null(strstr(out, "Sinematografi Dasar"));
	assert_non_null(strstr(out, "Rp150.000"));
	free(out);
	/* course titles say "Kelas ..." themselves: no "kelas {course_title}"
	 */
	for (int k = 0; k < KIND_COUNT; k++) {
		assert_null(
		    strstr(template_default(k)->email, "kelas {course"));
		assert_null(strstr(template_default(k)->subject, "kelas {"));
	}
}

/* A WhatsApp template parameter: one line, no runs of spaces, not empty,
 * cut on a UTF-8 boundary. */
static void
test_wa_param(void **state)
{
	struct template_vars v = {
	    .customer_name = "  Siti\n\tRahayu    binti   X ",
	    .course_title = "Kelas \xc3\xa9\xc3\xa9",
	    .amount = "",
	};
	enum template_var tv;
	char out[64], small[9];

	(void)state;
	template_param(&v, TV_CUSTOMER_NAME, out, sizeof(out));
	assert_string_equal(out, "Siti Rahayu binti X");
	template_param(&v, TV_AMOUNT, out, sizeof(out));
	assert_string_equal(out, "-");
	template_param(&v, TV_ORDER_ID, out, sizeof(out)); /* NULL */
	assert_string_equal(out, "-");
	/* "Kelas " + 2 bytes of the first e-acute: never half a character */
	template_param(&v, TV_COURSE_TITLE, small, sizeof(small));
	assert_string_equal(small, "Kelas \xc3\xa9");
	assert_int_equal(template_var_parse("valid_until", &tv), 0);
	assert_int_equal(tv, TV_VALID_UNTIL);
	assert_int_equal(template_var_parse("nope", &tv), -EINVAL);
	assert_true(wa_template_name_valid("kasir_bukti_pembayaran"));
	assert_false(wa_template_name_valid("Kasir-Bukti"));
	assert_false(wa_template_name_valid(""));
}

/*
 * The built-in WhatsApp templates are the ones in
 * deploy/whatsapp/templates.json (what docs/whatsapp.md tells the operator
 * to register with Meta, and what the fake WhatsApp accepts): same name,
 * language and parameters, and the body has exactly {{1}}..{{n}}.
 */
static void
test_wa_defaults_registered(void **state)
{
	const char *src = getenv("KASIR_SOURCE_DIR");
	char path[512], *text;
	const cJSON *list, *t;
	cJSON *root;
	FILE *f;
	long n;
	int seen = 0;
	char *doc;

	(void)state;
	assert_non_null(src);
	snprintf(path, sizeof(path), "%s/deploy/whatsapp/templates.json", src);
	f = fopen(path, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	root = cJSON_Parse(text);
	assert_non_null(root);
	/* docs/whatsapp.md shows each body exactly, to be registered */
	snprintf(path, sizeof(path), "%s/docs/whatsapp.md", src);
	f = fopen(path, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	doc = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(doc, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	list = cJSON_GetObjectItemCaseSensitive(root, "templates");
	cJSON_ArrayForEach(t, list)
	{
		const char *kind =
		    cJSON_GetObjectItemCaseSensitive(t, "kind")->valuestring;
		const char *body =
		    cJSON_GetObjectItemCaseSensitive(t, "body")->valuestring;
		const cJSON *params = cJSON_GetObjectItemCaseSensitive(
		                t, "parameters"),
		            *p;
		const struct wa_template *d;
		enum notify_kind k;
		size_t i = 0;
		char ph[16];

		assert_int_equal(notify_kind_parse(kind, &k), 0);
		if (strstr(doc, body) == NULL)
			fail_msg("docs/whatsapp.md lacks the %s body: %s", kind,
			         body);
		d = wa_template_default(k);
		assert_string_equal(
		    d->name,
		    cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring);
		assert_string_equal(
		    d->language, cJSON_GetObjectItemCaseSensitive(t, "language")
		                     ->valuestring);
		assert_int_equal(cJSON_GetArraySize(params), (int)d->params.n);
		cJSON_ArrayForEach(p, params)
		{
			assert_string_equal(
			    p->valuestring,
			    template_var_name(d->params.var[i]));
			i++;
			snprintf(ph, sizeof(ph), "{{%zu}}", i);
			assert_non_null(strstr(body, ph));
		}
		snprintf(ph, sizeof(ph), "{{%zu}}", i + 1);
		assert_null(strstr(body, ph));
		seen |= 1 << k;
	}
	assert_int_equal(seen, (1 << KIND_COUNT) - 1);
	cJSON_Delete(root);
	free(text);
	free(doc);
}

static void
test_template_bounds(void **state)
{
	char *big = malloc(NOTIFY_TEMPLATE_MAX + 2), *out = NULL;
	char *val = malloc(NOTIFY_VALUE_MAX * 4);
	struct template_vars v = {0};
	size_t n = 0;

	(void)state;
	memset(big, 'a', NOTIFY_TEMPLATE_MAX + 1);
	big[NOTIFY_TEMPLATE_MAX + 1] = '\0';
	assert_int_equal(template_render(big, &v, &out), KASIR_ETOOBIG);
	/* a huge value is cut at NOTIFY_VALUE_MAX */
	memset(val, 'b', NOTIFY_VALUE_MAX * 4 - 1);
	val[NOTIFY_VALUE_MAX * 4 - 1] = '\0';
	v.customer_name = val;
	assert_int_equal(template_render("{customer_name}", &v, &out), 0);
	n = strlen(out);
	assert_int_equal(n, NOTIFY_VALUE_MAX);
	free(out);
	/* 40 huge values overflow the rendered bound: refused */
	{
		char t[40 * 16];

		t[0] = '\0';
		for (int i = 0; i < 40; i++)
			strcat(t, "{customer_name}");
		assert_int_equal(template_render(t, &v, &out), KASIR_ETOOBIG);
	}
	free(big);
	free(val);
}

/* Decodes "=?UTF-8?B?...?=" words (separated by CRLF SP) back to text. */
static char *
decode_2047(const char *s)
{
	char *out = calloc(1, strlen(s) + 1);
	size_t o = 0;

	while (*s) {
		const char *start, *end;
		unsigned char tmp[256];
		int n;

		assert_memory_equal(s, "=?UTF-8?B?", 10);
		start = s + 10;
		end = strstr(start, "?=");
		assert_non_null(end);
		/* every encoded word is at most 75 characters */
		assert_true(end + 2 - s <= 75);
		n = EVP_DecodeBlock(tmp, (const unsigned char *)start,
		                    (int)(end - start));
		assert_true(n >= 0);
		/* EVP_DecodeBlock counts the '=' padding as zero bytes */
		if (end - start >= 1 && end[-1] == '=')
			n--;
		if (end - start >= 2 && end[-2] == '=')
			n--;
		memcpy(out + o, tmp, (size_t)n);
		o += (size_t)n;
		s = end + 2;
		if (*s) {
			assert_memory_equal(s, "\r\n ", 3);
			s += 3;
		}
	}
	out[o] = '\0';
	return out;
}

static void
test_rfc2047(void **state)
{
	const char *subjects[] = {
	    "Pembayaran diterima: Sinematografi Dasar (ORD-1)",
	    ("Kelas “Film Pendek” — pembayaran diterima ✓ 🎬 sekarang juga "
	     "dengan judul yang sangat panjang sekali untuk dilipat"),
	    "",
	    "=?UTF-8?B?trick?= \r\nBcc: evil@example.com",
	};
	char *enc, *dec;

	(void)state;
	for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
		assert_int_equal(mime_encode_header(subjects[i], &enc), 0);
		/* nothing but encoded words and folding: no raw CR/LF
		 * except the folding itself */
		for (const char *p = enc; *p; p++)
			if (*p == '\r')
				assert_memory_equal(p, "\r\n ", 3);
		dec = decode_2047(enc);
		assert_string_equal(dec, subjects[i]);
		free(dec);
		free(enc);
	}
	/* multi-word for a long subject, words never split a character */
	assert_int_equal(mime_encode_header(subjects[1], &enc), 0);
	assert_non_null(strstr(enc, "?=\r\n =?UTF-8?B?"));
	free(enc);
	/* invalid UTF-8 is refused */
	assert_int_equal(mime_encode_header("bad \xff\xfe", &enc), -EINVAL);
}

static void
test_qp(void **state)
{
	char *out;
	char longline[300];

	(void)state;
	assert_int_equal(mime_qp_encode("Halo Siti,\nTotal: Rp150.000 = "
	                                "lunas\n.\nakhir  \n",
	                                &out),
	                 0);
	assert_string_equal(out, "Halo Siti,\r\nTotal: Rp150.000 =3D lunas\r\n"
	                         "=2E\r\nakhir =20\r\n");
	free(out);
	assert_int_equal(mime_qp_encode("Kelas “Film”\n", &out), 0);
	assert_string_equal(out, "Kelas =E2=80=9CFilm=E2=80=9D\r\n");
	free(out);
	memset(longline, 'x', sizeof(longline) - 1);
	longline[sizeof(longline) - 1] = '\0';
	assert_int_equal(mime_qp_encode(longline, &out), 0);
	/* every physical line <= 76 characters, soft breaks end with '=' */
	{
		size_t total = 0;

		for (char *line = out; *line;) {
			char *e = strstr(line, "\r\n");
			size_t n;

			assert_non_null(e);
			n = (size_t)(e - line);
			assert_true(n <= 76);
			total += n;
			if (e[2] != '\0') {
				assert_int_equal(line[n - 1], '=');
				total--;
			}
			line = e + 2;
		}
		assert_int_equal(total, sizeof(longline) - 1);
	}
	free(out);
}

static void
test_mime_build(void **state)
{
	struct mime_message m = {
	    .from_addr = "kasir@buatfilm.example",
	    .from_name = "BuatFilm AgentBar",
	    .to_addr = "siti@example.com",
	    .subject = "Pembayaran diterima: Sinematografi",
	    .body = "Halo Siti,\nTotal Rp150.000\n",
	    .job_id = 42,
	    .msgid_domain = "kasir",
	    .order_id = "ORD-1",
	    .date_ms = 1795426399000LL, /* 2026-11-23T09:33:19Z */
	};
	char *msg;
	size_t len;

	(void)state;
	assert_int_equal(mime_build(&m, &msg, &len), 0);
	assert_int_equal(strlen(msg), len);
	assert_non_null(strstr(msg, "\r\nMessage-ID: <job-42@kasir>\r\n"));
	assert_non_null(
	    strstr(msg, "Date: Mon, 23 Nov 2026 09:33:19 +0000\r\n"));
	assert_non_null(strstr(msg, "\r\nTo: <siti@example.com>\r\n"));
	assert_non_null(strstr(msg, "\r\nFrom: =?UTF-8?B?"));
	assert_non_null(strstr(msg, " <kasir@buatfilm.example>\r\n"));
	assert_non_null(strstr(msg, "\r\nSubject: =?UTF-8?B?"));
	assert_non_null(strstr(msg, "\r\nMIME-Version: 1.0\r\n"));
	assert_non_null(strstr(msg, "\r\nContent-Type: text/plain; "
	                            "charset=UTF-8\r\n"));
	assert_non_null(strstr(msg, "\r\nContent-Transfer-Encoding: "
	                            "quoted-printable\r\n"));
	assert_non_null(
	    strstr(msg, "\r\n\r\nHalo Siti,\r\nTotal Rp150.000\r\n"));
	/* no bare LF anywhere */
	for (size_t i = 0; i < len; i++)
		if (msg[i] == '\n')
			assert_int_equal(msg[i - 1], '\r');
	free(msg);

	/* the same job gives the same Message-ID: a resend is recognisable */
	m.date_ms += 60000;
	assert_int_equal(mime_build(&m, &msg, &len), 0);
	assert_non_null(strstr(msg, "Message-ID: <job-42@kasir>"));
	free(msg);

	/* header injection through the address is refused */
	m.to_addr = "siti@example.com>\r\nBcc: x@evil.example";
	assert_int_equal(mime_build(&m, &msg, &len), -EINVAL);
	m.to_addr = "not-an-address";
	assert_int_equal(mime_build(&m, &msg, &len), -EINVAL);
	m.to_addr = "a@b@c";
	assert_int_equal(mime_build(&m, &msg, &len), -EINVAL);
	assert_false(mime_address_valid("two words@example.com"));
	assert_true(mime_address_valid("a.b+c@example.co.id"));
}

static void
test_schedule(void **state)
{
	struct duration_list l;

	(void)state;
	assert_int_equal(duration_list_parse("30s,2m,10m,30m,2h,6h", &l), 0);
	assert_int_equal(l.n, 6);
	assert_int_equal(l.ms[0], 30000);
	assert_int_equal(l.ms[1], 120000);
	assert_int_equal(l.ms[5], 6 * 3600 * 1000);
	assert_int_equal(duration_list_parse(" 1s , 2s ", &l), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.ms[1], 2000);
	assert_int_equal(duration_list_parse("", &l), 0);
	assert_int_equal(l.n, 0);
	assert_true(l.set);
	assert_true(duration_list_parse("1s,,2s", &l) < 0);
	assert_true(duration_list_parse("1s,soon", &l) < 0);
	assert_true(duration_list_parse("0s", &l) < 0);
	assert_int_equal(duration_list_parse("1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,"
	                                     "1s,1s,1s,1s,1s,1s,1s",
	                                     &l),
	                 KASIR_ETOOBIG);

	assert_int_equal(duration_list_parse("30s,2m,10m", &l), 0);
	/* no jitter: exactly the schedule; after the last: dead */
	assert_int_equal(notify_retry_delay(&l, 1, 0, 0.7), 30000);
	assert_int_equal(notify_retry_delay(&l, 2, 0, 0.7), 120000);
	assert_int_equal(notify_retry_delay(&l, 3, 0, 0.7), 600000);
	assert_int_equal(notify_retry_delay(&l, 4, 0, 0.7), -1);
	assert_int_equal(notify_retry_delay(&l, 0, 0, 0.7), -1);
	/* jitter 20%: bounds at r = 0 and r -> 1, middle at 0.5 */
	assert_int_equal(notify_retry_delay(&l, 1, 20, 0.0), 24000);
	assert_int_equal(notify_retry_delay(&l, 1, 20, 0.5), 30000);
	assert_true(notify_retry_delay(&l, 1, 20, 0.9999999) <= 36000);
	assert_true(notify_retry_delay(&l, 1, 20, 0.9999999) > 35900);
	/* out-of-range draws are clamped */
	assert_int_equal(notify_retry_delay(&l, 1, 20, -3), 24000);
	assert_true(notify_retry_delay(&l, 1, 20, 7) <= 36000);
}

static void
test_phone(void **state)
{
	char out[20];

	(void)state;
	assert_int_equal(phone_normalize("+62 812-3456-7890", out, sizeof(out)),
	                 0);
	assert_string_equal(out, "6281234567890");
	assert_int_equal(phone_normalize("081234567890", out, sizeof(out)), 0);
	assert_string_equal(out, "6281234567890");
	assert_int_equal(phone_normalize("6281234567890", out, sizeof(out)), 0);
	assert_string_equal(out, "6281234567890");
	assert_int_equal(phone_normalize("12345", out, sizeof(out)), -EINVAL);
	assert_int_equal(phone_normalize("0812abc", out, sizeof(out)), -EINVAL);
	assert_int_equal(phone_normalize("1234567890123456", out, sizeof(out)),
	                 -EINVAL);
	assert_int_equal(phone_normalize("", out, sizeof(out)), -EINVAL);
}

static void
test_guard(void **state)
{
	const char *why = NULL;
	bool g;

	(void)state;
	assert_true(guard_allows(KIND_RECEIPT, "PAID", false, &why, &g));
	assert_false(g);
	/* the receipt guard: never for anything but PAID and not revoked */
	assert_false(guard_allows(KIND_RECEIPT, "PENDING", false, &why, &g));
	assert_true(g);
	assert_false(guard_allows(KIND_RECEIPT, NULL, false, &why, &g));
	assert_true(g);
	assert_false(guard_allows(KIND_RECEIPT, "REFUNDED", false, &why, &g));
	assert_true(g);
	assert_false(guard_allows(KIND_RECEIPT, "PAID", true, &why, &g));
	assert_true(g);
	assert_false(guard_allows(KIND_RECEIPT, "paid", false, &why, &g));
	/* reminders and instructions only while pending */
	assert_true(guard_allows(KIND_REMINDER, "PENDING", false, &why, &g));
	assert_false(guard_allows(KIND_REMINDER, "PAID", false, &why, &g));
	assert_false(g);
	assert_false(
	    guard_allows(KIND_INSTRUCTIONS, "EXPIRED", false, &why, &g));
	assert_true(guard_allows(KIND_EXPIRY, "EXPIRED", false, &why, &g));
	assert_false(guard_allows(KIND_EXPIRY, "PAID", false, &why, &g));
	assert_true(guard_allows(KIND_REFUND, "REFUNDED", false, &why, &g));
}

static void
test_names(void **state)
{
	enum notify_kind k;
	enum notify_channel_id c;

	(void)state;
	for (int i = 0; i < KIND_COUNT; i++) {
		assert_int_equal(notify_kind_parse(notify_kind_name(i), &k), 0);
		assert_int_equal(k, i);
	}
	assert_int_equal(notify_kind_parse("receipts", &k), -EINVAL);
	assert_int_equal(notify_channel_parse("whatsapp", &c), 0);
	assert_int_equal(c, CHANNEL_WHATSAPP);
	assert_int_equal(notify_channel_parse("sms", &c), -EINVAL);
	assert_null(notify_kind_name(KIND_COUNT));
}

/* Writes text to dir/name with mode 0600; returns the path (static). */
static const char *
write_file(const char *dir, const char *name, const char *text)
{
	static char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, 0600);
	return path;
}

/* Renders services/notifier/config.example.yaml the way the harness does
 * (placeholders -> values, tunables -> their defaults) into dir/conf.yaml,
 * with extra text appended. */
static const char *
render_example(const char *dir, const char *extra)
{
	static char out_path[512];
	const char *src = getenv("KASIR_SOURCE_DIR");
	char in_path[512], *text, *o;
	FILE *f;
	long n;
	size_t j = 0;

	assert_non_null(src);
	snprintf(in_path, sizeof(in_path),
	         "%s/services/notifier/config.example.yaml", src);
	f = fopen(in_path, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	o = calloc(1, (size_t)n * 4 + strlen(extra) + 1);
	for (long i = 0; i < n; i++) {
		char name[64];
		const char *end, *val, *eq;
		size_t nl;

		if (text[i] != '@' ||
		    (end = strchr(text + i + 1, '@')) == NULL ||
		    (size_t)(end - text - i - 1) >= sizeof(name)) {
			o[j++] = text[i];
			continue;
		}
		nl = (size_t)(end - text - i - 1);
		memcpy(name, text + i + 1, nl);
		name[nl] = '\0';
		if ((eq = strchr(name, '=')) != NULL)
			val = eq + 1; /* a tunable: its default */
		else if (strcmp(name, "SECRETS") == 0 ||
		         strcmp(name, "RUN") == 0 || strcmp(name, "VAR") == 0 ||
		         strcmp(name, "SRC") == 0)
			val = dir;
		else if (strcmp(name, "DB_HOST") == 0)
			val = "127.0.0.1";
		else
			val = "7999"; /* ports */
		strcpy(o + j, val);
		j += strlen(val);
		i = end - text;
	}
	strcpy(o + j, extra);
	free(text);
	snprintf(out_path, sizeof(out_path), "%s",
	         write_file(dir, "conf.yaml", o));
	free(o);
	return out_path;
}

/* Replaces the first from with to in the file at path. */
static void
rewrite(const char *path, const char *from, const char *to)
{
	FILE *f = fopen(path, "r");
	char *text, *hit, *o;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	hit = strstr(text, from);
	assert_non_null(hit);
	o = calloc(1, (size_t)n + strlen(to) + 1);
	memcpy(o, text, (size_t)(hit - text));
	strcat(o, to);
	strcat(o, hit + strlen(from));
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(o, f);
	fclose(f);
	free(o);
	free(text);
}

static void
test_config(void **state)
{
	char dir[] = "/tmp/kasir-notifier-conf-XXXXXX";
	struct notifier_conf c;
	const char *path;
	char *errors = NULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	write_file(dir, "msg-k1", "0123456789abcdef0123456789abcdef\n");
	write_file(dir, "smtp-password", "pw\n");
	write_file(dir, "whatsapp-token", "token\n");
	write_file(dir, "db-kasir_notifier", "x\n");
	write_file(dir, "db-kasir_notifier_owner", "x\n");

	/* the shipped example loads and passes the notifier's checks (its
	 * finish hook, run by conf_load) */
	path = render_example(dir, "");
	memset(&c, 0, sizeof(c));
	if (conf_load(path, notifier_conf_keys, &c, &errors) != 0)
		fail_msg("example config rejected:\n%s", errors);
	assert_int_equal(c.retry.n, 6);
	assert_int_equal(c.retry.ms[5], 6 * 3600 * 1000);
	assert_int_equal(c.lease_ms, 60000);
	assert_int_equal(c.smtp_tls, SMTP_TLS_OFF);
	assert_string_equal(c.wa_token.value, "token");
	assert_int_equal(c.remind_after_created.n, 1);
	assert_int_equal(c.remind_after_created.ms[0], 3600 * 1000);
	/* overridden in the example */
	assert_string_equal(c.tpl[KIND_RECEIPT].subject,
	                    "Pembayaran diterima: {course_title} ({order_id})");
	/* not overridden: the Indonesian default */
	assert_string_equal(c.tpl[KIND_EXPIRY].email,
	                    template_default(KIND_EXPIRY)->email);
	/* WhatsApp: the example names kasir's receipt template */
	assert_string_equal(c.wa_tpl[KIND_RECEIPT].name,
	                    "kasir_bukti_pembayaran");
	assert_string_equal(c.wa_tpl[KIND_RECEIPT].language, "id");
	assert_int_equal(c.wa_tpl[KIND_RECEIPT].params.n, 5);
	assert_int_equal(c.wa_tpl[KIND_RECEIPT].params.var[4], TV_VALID_UNTIL);
	assert_string_equal(c.wa_tpl[KIND_EXPIRY].name,
	                    wa_template_default(KIND_EXPIRY)->name);
	conf_free(notifier_conf_keys, &c);

	/* WhatsApp free text is no longer configurable: a clear error */
	path = render_example(dir, "  expiry:\n    whatsapp: \"Halo\"\n");
	memset(&c, 0, sizeof(c));
	assert_int_equal(conf_load(path, notifier_conf_keys, &c, &errors),
	                 KASIR_ECONFIG);
	assert_non_null(strstr(errors, "whatsapp.templates"));
	free(errors);
	errors = NULL;

	/* a template of the operator's own needs its parameter list; the
	 * error names the line of its name */
	path = render_example(dir, "");
	rewrite(path,
	        "      name: kasir_pengembalian_dana\n      language: id\n"
	        "      parameters: [customer_name, order_id, course_title, "
	        "amount]\n",
	        "      name: toko_refund\n      language: id\n");
	memset(&c, 0, sizeof(c));
	assert_int_equal(conf_load(path, notifier_conf_keys, &c, &errors),
	                 KASIR_ECONFIG);
	assert_non_null(strstr(errors, "whatsapp.templates.refund.parameters"));
	/* line 80 of the rendered file: "name: toko_refund" */
	if (strstr(errors, "conf.yaml:80: ") == NULL)
		fail_msg("%s", errors);
	assert_null(c.wa_tpl[KIND_REFUND].name); /* nothing half-applied */
	free(errors);
	errors = NULL;

	/* an unknown placeholder is a config error with file:line */
	path = render_example(dir, "  expiry:\n    subject: \"{oops}\"\n");
	memset(&c, 0, sizeof(c));
	assert_int_equal(conf_load(path, notifier_conf_keys, &c, &errors),
	                 KASIR_ECONFIG);
	assert_non_null(errors);
	assert_non_null(strstr(errors, "conf.yaml:"));
	assert_non_null(strstr(errors, "{oops}"));
	free(errors);
	errors = NULL;

	/* a lease shorter than twice a provider timeout is refused, at the
	 * line of jobs.lease */
	path = render_example(dir, "");
	rewrite(path, "  lease: 60s\n", "  lease: 15s\n");
	memset(&c, 0, sizeof(c));
	assert_int_equal(conf_load(path, notifier_conf_keys, &c, &errors),
	                 KASIR_ECONFIG);
	if (strstr(errors, "conf.yaml:88: jobs.lease must be") == NULL)
		fail_msg("%s", errors);
	free(errors);
	errors = NULL;

	{
		static const char *const files[] = {
		    "msg-k1",    "smtp-password",     "whatsapp-token",
		    "conf.yaml", "db-kasir_notifier", "db-kasir_notifier_owner",
		};
		char p[600];

		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
			unlink(p);
		}
		rmdir(dir);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rupiah),
	    cmocka_unit_test(test_wib),
	    cmocka_unit_test(test_template_render),
	    cmocka_unit_test(test_template_bounds),
	    cmocka_unit_test(test_wa_param),
	    cmocka_unit_test(test_wa_defaults_registered),
	    cmocka_unit_test(test_rfc2047),
	    cmocka_unit_test(test_qp),
	    cmocka_unit_test(test_mime_build),
	    cmocka_unit_test(test_schedule),
	    cmocka_unit_test(test_phone),
	    cmocka_unit_test(test_guard),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
