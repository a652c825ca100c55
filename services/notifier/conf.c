/*
 * conf.c - kasir-notifier's configuration table, the retry schedule and
 * small input normalisers.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "notifier.h"

int
duration_list_parse(const char *s, struct duration_list *l)
{
	struct duration_list out = {.set = true};
	char item[32];

	if (s == NULL)
		return -EINVAL;
	while (*s) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);
		size_t a = 0, b = n;
		int64_t ms;
		int r;

		while (a < b && isspace((unsigned char)s[a]))
			a++;
		while (b > a && isspace((unsigned char)s[b - 1]))
			b--;
		if (b == a) {
			/* "" is the empty list; "1s,,2s" is an error */
			if (comma == NULL && out.n == 0 && n == b)
				break;
			return -EINVAL;
		}
		if (b - a >= sizeof(item))
			return -EINVAL;
		if (out.n >= NOTIFY_SCHEDULE_MAX)
			return KASIR_ETOOBIG;
		memcpy(item, s + a, b - a);
		item[b - a] = '\0';
		if ((r = conf_parse_duration(item, &ms)) < 0)
			return r;
		if (ms <= 0 || ms > 30LL * 24 * 3600 * 1000)
			return -ERANGE;
		out.ms[out.n++] = ms;
		s += n;
		if (comma)
			s++;
	}
	*l = out;
	return 0;
}

static int
parse_duration_list(const struct conf_node *node, void *field,
                    struct conf_errors *errs)
{
	struct duration_list *l = field;
	int r;

	if (node->kind != CONF_NODE_SCALAR) {
		conf_error(errs, node,
		           "expected a list of durations like "
		           "\"30s,2m,10m\"");
		return KASIR_ECONFIG;
	}
	r = duration_list_parse(node->value, l);
	if (r == KASIR_ETOOBIG) {
		conf_error(errs, node, "at most %d durations",
		           NOTIFY_SCHEDULE_MAX);
		return KASIR_ECONFIG;
	}
	if (r < 0) {
		conf_error(errs, node,
		           "invalid duration list \"%s\" (want e.g. "
		           "\"30s,2m,10m\", each 1ms..30d)",
		           node->value);
		return KASIR_ECONFIG;
	}
	return 0;
}

static int
parse_template(const struct conf_node *node, void *field,
               struct conf_errors *errs)
{
	char **dst = field;
	char why[160];

	if (node->kind != CONF_NODE_SCALAR) {
		conf_error(errs, node, "expected a text");
		return KASIR_ECONFIG;
	}
	if (template_check(node->value, why, sizeof(why)) < 0) {
		conf_error(errs, node, "template: %s", why);
		return KASIR_ECONFIG;
	}
	*dst = strdup(node->value);
	return *dst ? 0 : -ENOMEM;
}

/* The retired free-text key: say what replaced it. */
static int
parse_wa_text(const struct conf_node *node, void *field,
              struct conf_errors *errs)
{
	(void)field;
	conf_error(errs, node,
	           "WhatsApp free text is refused by the Cloud API outside "
	           "the 24-hour customer-service window: kasir sends approved "
	           "templates only; configure whatsapp.templates.<kind> "
	           "(docs/whatsapp.md) and remove this key");
	return KASIR_ECONFIG;
}

static int
parse_wa_name(const struct conf_node *node, void *field,
              struct conf_errors *errs)
{
	char **dst = field;

	if (node->kind != CONF_NODE_SCALAR ||
	    !wa_template_name_valid(node->value)) {
		conf_error(errs, node,
		           "a WhatsApp template name is 1..512 of a-z 0-9 _ "
		           "(as registered with Meta)");
		return KASIR_ECONFIG;
	}
	*dst = strdup(node->value);
	return *dst ? 0 : -ENOMEM;
}

static int
parse_wa_language(const struct conf_node *node, void *field,
                  struct conf_errors *errs)
{
	char **dst = field;
	size_t n = node->kind == CONF_NODE_SCALAR ? strlen(node->value) : 0;
	bool ok = n >= 2 && n <= 15;

	for (size_t i = 0; ok && i < n; i++)
		ok = isalpha((unsigned char)node->value[i]) ||
		     node->value[i] == '_';
	if (!ok) {
		conf_error(errs, node,
		           "a template language code like id or en_US");
		return KASIR_ECONFIG;
	}
	*dst = strdup(node->value);
	return *dst ? 0 : -ENOMEM;
}

/* A YAML list of placeholder names: [customer_name, amount, ...]. */
static int
parse_wa_params(const struct conf_node *node, void *field,
                struct conf_errors *errs)
{
	struct wa_params *p = field, out = {.set = true};

	if (node->kind != CONF_NODE_SEQ) {
		conf_error(errs, node,
		           "expected a list of placeholder names, e.g. "
		           "[customer_name, amount]");
		return KASIR_ECONFIG;
	}
	for (const struct conf_node *c = node->child; c; c = c->next) {
		if (out.n >= WA_PARAMS_MAX) {
			conf_error(errs, c, "at most %d parameters",
			           WA_PARAMS_MAX);
			return KASIR_ECONFIG;
		}
		if (c->kind != CONF_NODE_SCALAR ||
		    template_var_parse(c->value, &out.var[out.n]) < 0) {
			conf_error(errs, c,
			           "unknown placeholder (want customer_name, "
			           "course_title, amount, order_id, "
			           "redirect_url, expires_at or valid_until)");
			return KASIR_ECONFIG;
		}
		out.n++;
	}
	*p = out;
	return 0;
}

static void
free_string(void *field)
{
	char **s = field;

	free(*s);
	*s = NULL;
}

#define F(x) offsetof(struct notifier_conf, x)
#define TPL(kind, kname)                                                       \
	{.key = "templates." kname ".subject",                                 \
	 .type = CONF_CUSTOM,                                                  \
	 .offset = F(tpl[kind].subject),                                       \
	 .parse = parse_template,                                              \
	 .free = free_string},                                                 \
	    {.key = "templates." kname ".email",                               \
	     .type = CONF_CUSTOM,                                              \
	     .offset = F(tpl[kind].email),                                     \
	     .parse = parse_template,                                          \
	     .free = free_string},                                             \
	    {.key = "templates." kname ".whatsapp",                            \
	     .type = CONF_CUSTOM,                                              \
	     .offset = F(tpl[kind]),                                           \
	     .parse = parse_wa_text},                                          \
	    {.key = "whatsapp.templates." kname ".name",                       \
	     .type = CONF_CUSTOM,                                              \
	     .offset = F(wa_tpl[kind].name),                                   \
	     .parse = parse_wa_name,                                           \
	     .free = free_string},                                             \
	    {.key = "whatsapp.templates." kname ".language",                   \
	     .type = CONF_CUSTOM,                                              \
	     .offset = F(wa_tpl[kind].language),                               \
	     .parse = parse_wa_language,                                       \
	     .free = free_string},                                             \
	{                                                                      \
		.key = "whatsapp.templates." kname ".parameters",              \
		.type = CONF_CUSTOM, .offset = F(wa_tpl[kind].params),         \
		.parse = parse_wa_params, .size = sizeof(struct wa_params)     \
	}

static int notifier_conf_check(void *base, const struct conf_node *map,
                               struct conf_errors *errs);

const struct conf_key notifier_conf_keys[] = {
    BASE_CONF_KEYS_FOR(struct notifier_conf),

    {.key = "email.enabled",
     .type = CONF_BOOL,
     .offset = F(email_enabled),
     .defval = "true"},
    {.key = "email.url",
     .type = CONF_STRING,
     .offset = F(smtp_url),
     .defval = "smtp://127.0.0.1:25"},
    {.key = "email.starttls",
     .type = CONF_STRING,
     .offset = F(smtp_starttls),
     .defval = "required"},
    {.key = "email.username", .type = CONF_STRING, .offset = F(smtp_username)},
    {.key = "email.password_file",
     .type = CONF_SECRET,
     .offset = F(smtp_password)},
    {.key = "email.from",
     .type = CONF_STRING,
     .offset = F(mail_from),
     .defval = "kasir@localhost"},
    {.key = "email.from_name",
     .type = CONF_STRING,
     .offset = F(mail_from_name)},
    {.key = "email.message_id_domain",
     .type = CONF_STRING,
     .offset = F(message_id_domain),
     .defval = "kasir"},
    {.key = "email.timeout",
     .type = CONF_DURATION,
     .offset = F(smtp_timeout_ms),
     .min = 100,
     .max = 300000,
     .defval = "20s"},
    {.key = "email.rate",
     .type = CONF_INT,
     .offset = F(email_rate),
     .min = 1,
     .max = 10000,
     .defval = "10"},
    {.key = "email.burst",
     .type = CONF_INT,
     .offset = F(email_burst),
     .min = 1,
     .max = 10000,
     .defval = "20"},

    {.key = "whatsapp.enabled",
     .type = CONF_BOOL,
     .offset = F(whatsapp_enabled),
     .defval = "true"},
    {.key = "whatsapp.base_url",
     .type = CONF_STRING,
     .offset = F(wa_base),
     .defval = "https://graph.facebook.com"},
    {.key = "whatsapp.api_version",
     .type = CONF_STRING,
     .offset = F(wa_version),
     .defval = "v19.0"},
    {.key = "whatsapp.phone_number_id",
     .type = CONF_STRING,
     .offset = F(wa_phone_number_id)},
    {.key = "whatsapp.token_file", .type = CONF_SECRET, .offset = F(wa_token)},
    {.key = "whatsapp.timeout",
     .type = CONF_DURATION,
     .offset = F(wa_timeout_ms),
     .min = 100,
     .max = 300000,
     .defval = "10s"},
    {.key = "whatsapp.rate",
     .type = CONF_INT,
     .offset = F(whatsapp_rate),
     .min = 1,
     .max = 10000,
     .defval = "20"},
    {.key = "whatsapp.burst",
     .type = CONF_INT,
     .offset = F(whatsapp_burst),
     .min = 1,
     .max = 10000,
     .defval = "20"},

    {.key = "jobs.workers",
     .type = CONF_INT,
     .offset = F(workers),
     .min = 1,
     .max = NOTIFY_WORKERS_MAX,
     .defval = "4"},
    {.key = "jobs.lease",
     .type = CONF_DURATION,
     .offset = F(lease_ms),
     .min = 1000,
     .max = 3600000,
     .defval = "60s"},
    {.key = "jobs.poll",
     .type = CONF_DURATION,
     .offset = F(poll_ms),
     .min = 10,
     .max = 60000,
     .defval = "1s"},
    {.key = "jobs.retry_schedule",
     .type = CONF_CUSTOM,
     .offset = F(retry),
     .parse = parse_duration_list},
    {.key = "jobs.jitter_percent",
     .type = CONF_INT,
     .offset = F(jitter_pct),
     .min = 0,
     .max = 50,
     .defval = "20"},

    {.key = "reminders.after_created",
     .type = CONF_CUSTOM,
     .offset = F(remind_after_created),
     .parse = parse_duration_list},
    {.key = "reminders.before_expiry",
     .type = CONF_CUSTOM,
     .offset = F(remind_before_expiry),
     .parse = parse_duration_list},

    TPL(KIND_INSTRUCTIONS, "instructions"),
    TPL(KIND_REMINDER, "reminder"),
    TPL(KIND_RECEIPT, "receipt"),
    TPL(KIND_EXPIRY, "expiry"),
    TPL(KIND_REFUND, "refund"),
    CONF_END(notifier_conf_check),
};

#undef TPL
#undef F

static int
dup_default(char **field, const char *def)
{
	if (*field != NULL)
		return 0;
	*field = strdup(def);
	return *field ? 0 : -ENOMEM;
}

/*
 * The notifier's finish hook (config.h: conf_finish_fn): fills the defaults
 * a table default cannot express (lists, templates) and checks the rules
 * between keys.  conf_load() runs it, so --check-config and a start agree.
 */
static int
notifier_conf_check(void *base, const struct conf_node *map,
                    struct conf_errors *errs)
{
	struct notifier_conf *c = base;
	int64_t max_timeout;
	int rc = 0;

	if (base_conf_need_consume(&c->base, map, errs, NOTIFIER_NAME,
	                           "orders") < 0)
		rc = KASIR_ECONFIG;
	if (!c->retry.set)
		duration_list_parse("30s,2m,10m,30m,2h,6h", &c->retry);
	if (!c->remind_after_created.set)
		duration_list_parse("1h", &c->remind_after_created);
	if (!c->remind_before_expiry.set)
		duration_list_parse("3h", &c->remind_before_expiry);
	if (c->remind_after_created.n > NOTIFY_REMINDERS_MAX) {
		conf_error_key(errs, map, "reminders.after_created",
		               "reminders.after_created: at most %d offsets",
		               NOTIFY_REMINDERS_MAX);
		rc = KASIR_ECONFIG;
	}
	if (c->remind_before_expiry.n > NOTIFY_REMINDERS_MAX) {
		conf_error_key(errs, map, "reminders.before_expiry",
		               "reminders.before_expiry: at most %d offsets",
		               NOTIFY_REMINDERS_MAX);
		rc = KASIR_ECONFIG;
	}
	for (int k = 0; k < KIND_COUNT; k++) {
		const struct notify_template *d = template_default(k);
		const struct wa_template *w = wa_template_default(k);
		struct wa_template *t = &c->wa_tpl[k];
		char key[80];

		if (dup_default(&c->tpl[k].subject, d->subject) < 0 ||
		    dup_default(&c->tpl[k].email, d->email) < 0 ||
		    dup_default(&t->name, w->name) < 0 ||
		    dup_default(&t->language, w->language) < 0) {
			conf_error(errs, map, "out of memory");
			return -ENOMEM;
		}
		/* a renamed template keeps no default parameter list: the
		 * list belongs to the text registered under that name */
		if (!t->params.set && strcmp(t->name, w->name) == 0)
			t->params = w->params;
		if (!t->params.set) {
			snprintf(key, sizeof(key), "whatsapp.templates.%s.name",
			         notify_kind_name(k));
			conf_error_key(errs, map, key,
			               "whatsapp.templates.%s.parameters: "
			               "required when the template is not "
			               "kasir's own %s",
			               notify_kind_name(k), w->name);
			rc = KASIR_ECONFIG;
		}
	}
	if (strcmp(c->smtp_starttls, "off") == 0)
		c->smtp_tls = SMTP_TLS_OFF;
	else if (strcmp(c->smtp_starttls, "optional") == 0)
		c->smtp_tls = SMTP_TLS_OPTIONAL;
	else if (strcmp(c->smtp_starttls, "required") == 0)
		c->smtp_tls = SMTP_TLS_REQUIRED;
	else {
		conf_error_key(errs, map, "email.starttls",
		               "email.starttls: want off, optional or "
		               "required");
		rc = KASIR_ECONFIG;
	}
	if (c->email_enabled) {
		if (strncmp(c->smtp_url, "smtp://", 7) != 0 &&
		    strncmp(c->smtp_url, "smtps://", 8) != 0) {
			conf_error_key(errs, map, "email.url",
			               "email.url: want smtp://host:port or "
			               "smtps://host:port");
			rc = KASIR_ECONFIG;
		}
		if (!mime_address_valid(c->mail_from)) {
			conf_error_key(errs, map, "email.from",
			               "email.from: not an address");
			rc = KASIR_ECONFIG;
		}
	}
	if (c->whatsapp_enabled) {
		if (c->wa_phone_number_id == NULL ||
		    c->wa_token.value == NULL) {
			conf_error_key(errs, map, "whatsapp.enabled",
			               "whatsapp: phone_number_id and "
			               "token_file are required when enabled");
			return KASIR_ECONFIG;
		}
		for (const char *p = c->wa_phone_number_id; *p; p++)
			if (!isalnum((unsigned char)*p)) {
				conf_error_key(errs, map,
				               "whatsapp.phone_number_id",
				               "whatsapp.phone_number_id: "
				               "letters and digits only");
				rc = KASIR_ECONFIG;
				break;
			}
		if (strncmp(c->wa_base, "http://", 7) != 0 &&
		    strncmp(c->wa_base, "https://", 8) != 0) {
			conf_error_key(errs, map, "whatsapp.base_url",
			               "whatsapp.base_url: want http(s)://...");
			rc = KASIR_ECONFIG;
		}
		/* whatsapp.c builds BASE/VERSION/ID/messages */
		if (strlen(c->wa_base) + strlen(c->wa_version) +
		        strlen(c->wa_phone_number_id) + 11 >=
		    WA_URL_MAX) {
			conf_error_key(errs, map, "whatsapp.phone_number_id",
			               "whatsapp: base_url, api_version and "
			               "phone_number_id make a URL longer than "
			               "%d bytes",
			               WA_URL_MAX - 1);
			rc = KASIR_ECONFIG;
		}
	}
	/* A provider call must end well before the lease does, or another
	 * worker would reclaim a job that is still being sent. */
	max_timeout = c->smtp_timeout_ms > c->wa_timeout_ms ? c->smtp_timeout_ms
	                                                    : c->wa_timeout_ms;
	if (max_timeout * 2 > c->lease_ms) {
		conf_error_key(errs, map, "jobs.lease",
		               "jobs.lease must be at least twice the longest "
		               "provider timeout (%lld ms)",
		               (long long)max_timeout);
		rc = KASIR_ECONFIG;
	}
	return rc;
}

int64_t
notify_retry_delay(const struct duration_list *schedule, int attempts,
                   int jitter_pct, double r)
{
	int64_t d, span;

	if (attempts < 1 || (size_t)attempts > schedule->n)
		return -1;
	d = schedule->ms[attempts - 1];
	span = d * jitter_pct / 100;
	if (r < 0)
		r = 0;
	if (r >= 1)
		r = 0.999999;
	/* uniform in [d - span, d + span] */
	return d - span + (int64_t)((double)(2 * span) * r);
}

int
phone_normalize(const char *in, char *out, size_t len)
{
	char d[20];
	size_t n = 0;
	const char *p = in;

	if (in == NULL)
		return -EINVAL;
	while (*p == ' ')
		p++;
	if (*p == '+')
		p++;
	for (; *p; p++) {
		if (*p >= '0' && *p <= '9') {
			if (n >= 16)
				return -EINVAL;
			d[n++] = *p;
		} else if (*p != ' ' && *p != '-' && *p != '(' && *p != ')' &&
		           *p != '.') {
			return -EINVAL;
		}
	}
	d[n] = '\0';
	if (n > 0 && d[0] == '0') {
		/* Indonesian national format 08xx -> 628xx */
		if (n + 1 > 16)
			return -EINVAL;
		memmove(d + 2, d + 1, n);
		d[0] = '6';
		d[1] = '2';
		n++;
	}
	if (n < 8 || n > 15 || n + 1 > len)
		return -EINVAL;
	memcpy(out, d, n + 1);
	return 0;
}
