/*
 * http.c - HTTP listener on GNU libmicrohttpd 0.9.75 with kasir's limits.
 *
 * We open the listening socket ourselves (so "host:port", "[v6]:port" and
 * ":port" parse the same everywhere and port 0 can be read back), then hand
 * it to MHD running its own epoll thread(s).  Each request gets one struct
 * req_ctx, allocated at the first callback and freed in the
 * request-completed callback: that is the single lifetime of everything
 * transient for the request.  The body is accumulated into the context up
 * to body_max; a larger declared Content-Length is answered 413 before any
 * body byte is read; a chunked body growing past the cap is never passed
 * to the handler: the rest is drained (at most HTTP_DRAIN_MAX more bytes,
 * else the connection is closed) and answered 413.
 *
 * Deferred requests: the handler calls http_defer(), which suspends the
 * MHD connection; http_pending_complete() (any thread) stores the response
 * and resumes it; MHD then calls the access handler again on its own
 * thread, which queues the stored response.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "err.h"
#include "http.h"
#include "log.h"
#include "util.h"

#define HTTP_DEFAULT_MAX_CONN  1000
#define HTTP_DEFAULT_PER_IP    100
#define HTTP_DEFAULT_TIMEOUT_S 10
#define HTTP_DEFAULT_BODY_MAX  (64 * 1024)
#define HTTP_DEFAULT_THREADS   2
#define HTTP_MAX_THREADS       64
#define HTTP_CONN_MEMORY_LIMIT (32 * 1024) /* per connection: headers */
#define HTTP_LISTEN_BACKLOG    128
#define HTTP_STOP_DRAIN_MS     2000 /* wait for 503s of pending requests */
/* A chunked body that crossed the cap is read and dropped up to this many
 * more bytes so the client can get its 413; beyond it we hang up. */
#define HTTP_DRAIN_MAX (1024 * 1024)

struct req_ctx;

/* The deferred half of a request; lives inside its req_ctx. */
struct http_pending {
	struct req_ctx *ctx;
	struct http_pending *prev, *next; /* server's list of open deferrals */
	bool completed;                   /* response stored, resume issued */
	struct http_response resp;        /* the stored response */
};

struct req_ctx {
	struct http_server *srv;
	struct http_request req;
	char *body;
	size_t body_len, body_cap;
	size_t discarded; /* bytes dropped after the cap was crossed */
	bool too_big;     /* cap crossed; answer 413 */
	bool answered;    /* a response has been queued */
	bool deferred;    /* http_defer() succeeded */
	bool must_close;  /* answer with Connection: close (bad framing) */
	struct http_pending pending;
};

struct http_server {
	struct MHD_Daemon *mhd;
	http_handler_fn handler;
	void *arg;
	size_t body_max;
	char name[32];
	int lsock;
	int port;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct http_pending *pending; /* deferred, not yet completed */
	unsigned deferred_live;       /* deferred contexts not yet freed */
	bool stopping;
	void (*free_arg)(void *arg); /* run at the end of stop */
};

static const struct {
	const char *name, *value;
} security_headers[] = {
    {"X-Content-Type-Options", "nosniff"},
    {"Cache-Control", "no-store"},
    {"X-Frame-Options", "DENY"},
    {"Referrer-Policy", "no-referrer"},
    {"Content-Security-Policy", "default-src 'none'"},
};

const char *
http_header(const struct http_request *req, const char *name)
{
	if (req == NULL || req->conn == NULL || name == NULL)
		return NULL;
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *
http_query(const struct http_request *req, const char *name)
{
	if (req == NULL || req->conn == NULL || name == NULL)
		return NULL;
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND,
	                                   name);
}

struct query_scan {
	char *name; /* out: first offending argument */
	size_t len;
	bool bad;
};

static enum MHD_Result
query_arg_check(void *cls, enum MHD_ValueKind kind, const char *key,
                size_t key_size, const char *value, size_t value_size)
{
	struct query_scan *q = cls;
	const char *parts[2] = {key, value};
	size_t sizes[2] = {key_size, value != NULL ? value_size : 0};

	(void)kind;
	for (int i = 0; i < 2; i++)
		for (size_t k = 0; k < sizes[i]; k++) {
			unsigned char c = (unsigned char)parts[i][k];
			if (c < 0x20 || c == 0x7f) {
				snprintf(q->name, q->len, "%.*s",
				         (int)(key_size < 64 ? key_size : 64),
				         key);
				q->bad = true;
				return MHD_NO;
			}
		}
	return MHD_YES;
}

bool
http_query_has_control(const struct http_request *req, char *ret_name,
                       size_t len)
{
	struct query_scan q = {.name = ret_name, .len = len};

	if (req == NULL || req->conn == NULL || ret_name == NULL || len == 0)
		return false;
	MHD_get_connection_values_n(req->conn, MHD_GET_ARGUMENT_KIND,
	                            query_arg_check, &q);
	return q.bad;
}

static void
response_clear(struct http_response *resp)
{
	free(resp->body);
	memset(resp, 0, sizeof(*resp));
}

static int
response_set(struct http_response *resp, int status, const char *ctype,
             const char *body, size_t len)
{
	char *copy = malloc(len + 1);

	if (copy == NULL)
		return -ENOMEM;
	memcpy(copy, body, len);
	copy[len] = '\0';
	free(resp->body);
	resp->body = copy;
	resp->body_len = len;
	resp->status = status;
	resp->content_type = ctype;
	return 0;
}

int
http_json(struct http_response *resp, int status, const struct cJSON *json)
{
	char *text;
	int rc;

	if (resp == NULL || json == NULL)
		return -EINVAL;
	text = cJSON_PrintUnformatted(json);
	if (text == NULL)
		return -ENOMEM;
	rc = response_set(resp, status, "application/json", text, strlen(text));
	cJSON_free(text);
	return rc;
}

int
http_error(struct http_response *resp, int status, const char *code,
           const char *message)
{
	cJSON *root, *err;
	int rc = -ENOMEM;

	if (resp == NULL)
		return -EINVAL;
	root = cJSON_CreateObject();
	if (root == NULL)
		return -ENOMEM;
	err = cJSON_AddObjectToObject(root, "error");
	if (err == NULL ||
	    cJSON_AddStringToObject(err, "code", code ? code : "error") ==
	        NULL ||
	    cJSON_AddStringToObject(err, "message", message ? message : "") ==
	        NULL)
		goto out;
	rc = http_json(resp, status, root);
out:
	cJSON_Delete(root);
	return rc;
}

int
http_text(struct http_response *resp, int status, const char *ctype,
          const char *text)
{
	if (resp == NULL || text == NULL)
		return -EINVAL;
	return response_set(resp, status,
	                    ctype ? ctype : "text/plain; charset=utf-8", text,
	                    strlen(text));
}

void
http_add_header(struct http_response *resp, const char *name, const char *fmt,
                ...)
{
	va_list ap;

	if (resp == NULL || name == NULL ||
	    resp->nheaders >= HTTP_MAX_EXTRA_HEADERS)
		return;
	va_start(ap, fmt);
	vsnprintf(resp->headers[resp->nheaders].value,
	          sizeof(resp->headers[0].value), fmt, ap);
	va_end(ap);
	resp->headers[resp->nheaders].name = name;
	resp->nheaders++;
}

/* A static 500 body for when even building an error fails. */
static const char fallback_500[] =
    "{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}";

/*
 * Turns resp into an MHD response and queues it.  resp->body is taken over
 * (freed by MHD or here).  Status codes outside 1xx/2xx/4xx/5xx (redirects
 * included: we never redirect) become 500.
 */
static enum MHD_Result
queue(struct req_ctx *ctx, struct MHD_Connection *conn,
      struct http_response *resp)
{
	struct MHD_Response *r;
	enum MHD_Result ok;
	int status = resp->status;

	if (status < 200 || status > 599 || (status >= 300 && status < 400)) {
		log_debug("http %s: handler status %d for %s replaced by 500",
		          ctx->srv->name, status, ctx->req.path);
		response_clear(resp);
		status = 500;
	}
	if (status == 500 && resp->body == NULL)
		r = MHD_create_response_from_buffer(
		    sizeof(fallback_500) - 1, (void *)(uintptr_t)fallback_500,
		    MHD_RESPMEM_PERSISTENT);
	else if (resp->body == NULL)
		r = MHD_create_response_from_buffer(0, (void *)(uintptr_t) "",
		                                    MHD_RESPMEM_PERSISTENT);
	else
		r = MHD_create_response_from_buffer(resp->body_len, resp->body,
		                                    MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		response_clear(resp);
		return MHD_NO;
	}
	resp->body = NULL; /* MHD owns it now */
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
	                        resp->content_type ? resp->content_type
	                                           : "application/json");
	for (size_t i = 0;
	     i < sizeof(security_headers) / sizeof(security_headers[0]); i++)
		MHD_add_response_header(r, security_headers[i].name,
		                        security_headers[i].value);
	if (ctx->must_close)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
	for (int i = 0; i < resp->nheaders && i < HTTP_MAX_EXTRA_HEADERS; i++) {
		const char *n = resp->headers[i].name;
		if (n == NULL || strcasecmp(n, "Location") == 0)
			continue;
		MHD_add_response_header(r, n, resp->headers[i].value);
	}
	ok = MHD_queue_response(conn, (unsigned)status, r);
	MHD_destroy_response(r);
	response_clear(resp);
	if (ok == MHD_YES)
		ctx->answered = true;
	return ok;
}

static enum MHD_Result
queue_error(struct req_ctx *ctx, struct MHD_Connection *conn, int status,
            const char *code, const char *message)
{
	struct http_response resp;

	memset(&resp, 0, sizeof(resp));
	if (http_error(&resp, status, code, message) < 0)
		resp.status = 500;
	return queue(ctx, conn, &resp);
}

static void
client_ip(struct MHD_Connection *conn, char *buf, size_t len)
{
	const union MHD_ConnectionInfo *ci;

	snprintf(buf, len, "unknown");
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci == NULL || ci->client_addr == NULL)
		return;
	socklen_t sl = ci->client_addr->sa_family == AF_INET6
	                   ? sizeof(struct sockaddr_in6)
	                   : sizeof(struct sockaddr_in);
	if (getnameinfo(ci->client_addr, sl, buf, (socklen_t)len, NULL, 0,
	                NI_NUMERICHOST) != 0)
		snprintf(buf, len, "unknown");
}

/* What the request's headers say about its body length. */
struct framing {
	unsigned content_lengths; /* Content-Length headers seen */
	bool content_length_bad;  /* one of them is not 1*DIGIT or too big */
	bool transfer_encoding;   /* any Transfer-Encoding header */
	bool coding_unknown;      /* one that is not exactly "chunked" */
	bool name_bad;            /* a header name that is not a token */
};

/* RFC 9110 8.6: Content-Length = 1*DIGIT; more than 18 digits would not
 * fit the size we compare with anyway. */
static bool
content_length_valid(const char *v)
{
	size_t n = strlen(v);

	return n > 0 && n <= 18 && strspn(v, "0123456789") == n;
}

static enum MHD_Result
framing_header(void *cls, enum MHD_ValueKind kind, const char *key,
               const char *value)
{
	struct framing *f = cls;

	(void)kind;
	/* "Content-Length : 5" reaches us as the name "Content-Length ",
	 * "Transfer-Encoding\v: chunked" as one ending in a vertical tab
	 * (RFC 9112 5.1: whitespace before the colon is refused; RFC 9110
	 * 5.1: a name is a token) */
	if (key[strspn(key, "!#$%&'*+-.^_`|~0123456789"
	                    "abcdefghijklmnopqrstuvwxyz"
	                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ")] != '\0')
		f->name_bad = true;
	/* a folded line ("Transfer-Encoding:" CRLF " chunked", obs-fold,
	 * RFC 9112 5.2) reaches us from libmicrohttpd 0.9.75 as the name
	 * "Transfer-Encodingchunked" with an empty value: a framing header
	 * we would not count (an attack, 2026-12-07) */
	if ((strncasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING,
	                 strlen(MHD_HTTP_HEADER_TRANSFER_ENCODING)) == 0 &&
	     strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) != 0) ||
	    (strncasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH,
	                 strlen(MHD_HTTP_HEADER_CONTENT_LENGTH)) == 0 &&
	     strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) != 0))
		f->name_bad = true;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		f->content_lengths++;
		if (value == NULL || !content_length_valid(value))
			f->content_length_bad = true;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		f->transfer_encoding = true;
		if (value == NULL || strcasecmp(value, "chunked") != 0)
			f->coding_unknown = true;
	}
	return MHD_YES;
}

/*
 * RFC 9112 6.3: a request whose body length is ambiguous (Content-Length
 * with Transfer-Encoding, several Content-Length headers, even equal
 * ones, or one that is not a plain number, a header name with whitespace
 * before its colon, a transfer coding other than chunked) is refused and
 * the connection closed, so that nothing behind it is read as a second
 * request (request smuggling through a proxy that frames it the other
 * way).
 * libmicrohttpd 0.9.75 uses the first Content-Length or the chunked
 * coding and would go on.  NULL when the framing is sound, else why not.
 */
static const char *
framing_refusal(struct MHD_Connection *conn)
{
	struct framing f = {0};

	MHD_get_connection_values(conn, MHD_HEADER_KIND, framing_header, &f);
	if (f.name_bad)
		return "a header name that is not a token (whitespace, "
		       "a control character, a folded framing header)";
	if (f.transfer_encoding && f.content_lengths > 0)
		return "both Content-Length and Transfer-Encoding";
	if (f.content_lengths > 1)
		return "more than one Content-Length";
	if (f.content_length_bad)
		return "Content-Length is not a number";
	/* a coding other than chunked alone (xchunked, "chunked,
	 * identity") has no length we could read: libmicrohttpd waited for
	 * the idle timeout without an answer */
	if (f.coding_unknown)
		return "Transfer-Encoding other than chunked";
	return NULL;
}

/* Appends a body chunk; false when the cap is crossed. */
static bool
body_append(struct req_ctx *ctx, const char *data, size_t len)
{
	size_t max = ctx->srv->body_max;

	if (len > max || ctx->body_len > max - len)
		return false;
	if (ctx->body_len + len + 1 > ctx->body_cap) {
		size_t ncap = ctx->body_cap ? ctx->body_cap : 1024;
		while (ncap < ctx->body_len + len + 1)
			ncap *= 2;
		if (ncap > max + 1)
			ncap = max + 1;
		char *nb = realloc(ctx->body, ncap);
		if (nb == NULL)
			return false;
		ctx->body = nb;
		ctx->body_cap = ncap;
	}
	memcpy(ctx->body + ctx->body_len, data, len);
	ctx->body_len += len;
	ctx->body[ctx->body_len] = '\0';
	return true;
}

static enum MHD_Result
dispatch(struct req_ctx *ctx, struct MHD_Connection *conn)
{
	struct http_server *srv = ctx->srv;
	struct http_response resp;
	int rc;

	ctx->req.body = ctx->body != NULL ? ctx->body : "";
	ctx->req.body_len = ctx->body_len;
	memset(&resp, 0, sizeof(resp));
	rc = srv->handler(srv->arg, &ctx->req, &resp);
	if (ctx->deferred) {
		/* the pending handle owns the answer now */
		if (rc != HTTP_DEFERRED)
			log_debug(
			    "http %s: handler deferred %s but returned %d",
			    srv->name, ctx->req.path, rc);
		response_clear(&resp);
		return MHD_YES;
	}
	if (rc < 0 || rc == HTTP_DEFERRED) {
		log_debug("http %s: handler failed for %s %s: %s", srv->name,
		          ctx->req.method, ctx->req.path,
		          rc < 0 ? kasir_strerror(rc)
		                 : "deferred without defer");
		response_clear(&resp);
		return queue_error(ctx, conn, 500, "internal",
		                   "internal error");
	}
	return queue(ctx, conn, &resp);
}

/*
 * The request's path as sent, before libmicrohttpd decodes it: a control
 * character written as %00..%1F or %7F would be decoded into the path we
 * are given, and "%00" ends that C string ("/v1/orders/ID%00/../x" read
 * as "/v1/orders/ID": an outside attack, 2026-12-07).  Such a request is
 * marked here (the value becomes the connection's con_cls) and refused
 * in access_cb.  The query is left to http_query_has_control(), which
 * sees each value with its length.
 */
static char path_control_mark;

static void *
uri_log_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
	(void)cls;
	(void)conn;
	for (const char *p = uri; *p != '\0' && *p != '?'; p++) {
		int hi, lo, v;

		/* sent raw (a NUL ends this string: libmicrohttpd hands
		 * us no length; a front such as nginx refuses it) */
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return &path_control_mark;

		if (*p != '%' || (hi = hex_digit(p[1])) < 0 ||
		    (lo = hex_digit(p[2])) < 0)
			continue;
		v = hi * 16 + lo;
		if (v < 0x20 || v == 0x7f)
			return &path_control_mark;
	}
	return NULL;
}

static enum MHD_Result
access_cb(void *cls, struct MHD_Connection *conn, const char *url,
          const char *method, const char *version, const char *upload_data,
          size_t *upload_data_size, void **con_cls)
{
	struct http_server *srv = cls;
	struct req_ctx *ctx = *con_cls;

	(void)version;
	if (ctx == NULL || (void *)ctx == (void *)&path_control_mark) {
		bool path_control = ctx != NULL;
		const char *cl, *why;

		ctx = calloc(1, sizeof(*ctx));
		if (ctx == NULL)
			return MHD_NO;
		ctx->srv = srv;
		ctx->req.method = method;
		ctx->req.path = url;
		ctx->req.body = "";
		ctx->req.conn = conn;
		ctx->req.server_priv = ctx;
		ctx->pending.ctx = ctx;
		client_ip(conn, ctx->req.client_ip, sizeof(ctx->req.client_ip));
		*con_cls = ctx;

		if ((why = framing_refusal(conn)) != NULL) {
			ctx->must_close = true;
			return queue_error(ctx, conn, 400, "bad_framing", why);
		}
		if (path_control)
			return queue_error(ctx, conn, 400, "invalid_path",
			                   "control character in the path");
		cl = MHD_lookup_connection_value(
		    conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl != NULL) {
			char *end;
			errno = 0;
			unsigned long long n = strtoull(cl, &end, 10);
			if (errno != 0 || end == cl || n > srv->body_max) {
				ctx->too_big = true;
				return queue_error(ctx, conn, 413, "too_large",
				                   "request body too large");
			}
		}
		return MHD_YES;
	}

	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		if (ctx->answered || ctx->too_big) {
			/* draining a body we already refused; bounded */
			ctx->discarded += n;
			if (ctx->discarded > HTTP_DRAIN_MAX)
				return MHD_NO; /* close the connection */
			return MHD_YES;
		}
		if (!body_append(ctx, upload_data, n)) {
			ctx->too_big = true;
			ctx->discarded = n;
			/* MHD 0.9.75 cannot queue a response in the middle
			 * of an upload: drain (bounded) and answer 413 when
			 * the body ends */
		}
		return MHD_YES;
	}

	/* the whole request is here (or we were resumed) */
	if (ctx->answered)
		return MHD_YES;
	if (ctx->too_big)
		return queue_error(ctx, conn, 413, "too_large",
		                   "request body too large");
	if (ctx->deferred) {
		struct http_response resp;
		bool done;

		pthread_mutex_lock(&srv->lock);
		done = ctx->pending.completed;
		if (done) {
			resp = ctx->pending.resp;
			memset(&ctx->pending.resp, 0,
			       sizeof(ctx->pending.resp));
		}
		pthread_mutex_unlock(&srv->lock);
		if (!done)
			return MHD_YES; /* spurious wake-up */
		return queue(ctx, conn, &resp);
	}
	return dispatch(ctx, conn);
}

static void
completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
	struct http_server *srv = cls;
	struct req_ctx *ctx = *con_cls;

	(void)conn;
	(void)toe;
	if (ctx == NULL || (void *)ctx == (void *)&path_control_mark)
		return; /* the connection ended before access_cb saw it */
	*con_cls = NULL;
	if (ctx->deferred) {
		pthread_mutex_lock(&srv->lock);
		if (!ctx->pending.completed) {
			/* cannot happen while suspended; be safe */
			struct http_pending *p = &ctx->pending;
			if (p->prev)
				p->prev->next = p->next;
			else
				srv->pending = p->next;
			if (p->next)
				p->next->prev = p->prev;
		}
		response_clear(&ctx->pending.resp);
		srv->deferred_live--;
		pthread_cond_broadcast(&srv->cond);
		pthread_mutex_unlock(&srv->lock);
	}
	free(ctx->body);
	free(ctx);
}

int
http_defer(const struct http_request *req, struct http_pending **ret)
{
	struct req_ctx *ctx;
	struct http_server *srv;

	if (req == NULL || req->server_priv == NULL || ret == NULL)
		return -EINVAL;
	ctx = req->server_priv;
	srv = ctx->srv;
	if (ctx->deferred)
		return -EALREADY;
	pthread_mutex_lock(&srv->lock);
	if (srv->stopping) {
		pthread_mutex_unlock(&srv->lock);
		return -ESHUTDOWN;
	}
	MHD_suspend_connection(ctx->req.conn);
	ctx->deferred = true;
	ctx->pending.completed = false;
	ctx->pending.prev = NULL;
	ctx->pending.next = srv->pending;
	if (srv->pending)
		srv->pending->prev = &ctx->pending;
	srv->pending = &ctx->pending;
	srv->deferred_live++;
	pthread_mutex_unlock(&srv->lock);
	*ret = &ctx->pending;
	return 0;
}

/* Called with srv->lock held. */
static void
pending_complete_locked(struct http_server *srv, struct http_pending *p,
                        struct http_response *resp)
{
	if (p->completed) {
		response_clear(resp);
		return;
	}
	p->completed = true;
	p->resp = *resp;
	memset(resp, 0, sizeof(*resp));
	if (p->prev)
		p->prev->next = p->next;
	else
		srv->pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	p->prev = p->next = NULL;
	MHD_resume_connection(p->ctx->req.conn);
}

void
http_pending_complete(struct http_pending *p, struct http_response *resp)
{
	struct http_server *srv;

	if (p == NULL || resp == NULL)
		return;
	srv = p->ctx->srv;
	pthread_mutex_lock(&srv->lock);
	pending_complete_locked(srv, p, resp);
	pthread_mutex_unlock(&srv->lock);
}

/* MHD's own diagnostics go to the debug log only. */
static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	struct http_server *srv = cls;
	char buf[256];
	size_t n;

	vsnprintf(buf, sizeof(buf), fmt, ap);
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	log_debug("http %s: mhd: %s", srv->name, buf);
}

/*
 * Parses "host:port", "[v6]:port" or ":port" (all addresses).  host is
 * written empty for ":port".
 */
static int
parse_listen(const char *addr, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon;
	size_t n;

	if (addr == NULL || addr[0] == '\0')
		return -EINVAL;
	if (addr[0] == '[') {
		const char *rb = strchr(addr, ']');
		if (rb == NULL || rb[1] != ':')
			return -EINVAL;
		n = (size_t)(rb - addr - 1);
		colon = rb + 1;
		if (n == 0 || n >= hlen)
			return -EINVAL;
		memcpy(host, addr + 1, n);
		host[n] = '\0';
	} else {
		colon = strrchr(addr, ':');
		if (colon == NULL)
			return -EINVAL;
		n = (size_t)(colon - addr);
		if (n >= hlen || memchr(addr, ':', n) != NULL)
			return -EINVAL;
		memcpy(host, addr, n);
		host[n] = '\0';
	}
	n = strlen(colon + 1);
	if (n == 0 || n >= plen || strspn(colon + 1, "0123456789") != n ||
	    strtoul(colon + 1, NULL, 10) > 65535)
		return -EINVAL;
	memcpy(port, colon + 1, n + 1);
	return 0;
}

bool
http_listen_valid(const char *addr)
{
	char host[256], port[8];

	return parse_listen(addr, host, sizeof(host), port, sizeof(port)) == 0;
}

static int
open_listener(const char *addr, int *ret_fd, int *ret_port)
{
	char host[256], port[8];
	struct addrinfo hints, *res = NULL, *ai;
	int fd = -1, rc, err = -EADDRNOTAVAIL;

	if ((rc = parse_listen(addr, host, sizeof(host), port, sizeof(port))) <
	    0)
		return rc;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0)
		return -EADDRNOTAVAIL;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		int one = 1, zero = 0;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		            ai->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6 && host[0] == '\0')
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero,
			           sizeof(zero));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, HTTP_LISTEN_BACKLOG) == 0)
			break;
		err = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return err;

	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	if (ss.ss_family == AF_INET6)
		*ret_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else
		*ret_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	*ret_fd = fd;
	return 0;
}

int
http_server_start(const struct http_server_conf *conf, http_handler_fn handler,
                  void *arg, struct http_server **ret)
{
	struct http_server *srv;
	unsigned max_conn, per_ip, timeout, threads, flags;
	int rc;

	if (conf == NULL || handler == NULL || ret == NULL)
		return -EINVAL;
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return -ENOMEM;
	srv->handler = handler;
	srv->arg = arg;
	srv->lsock = -1;
	srv->body_max = conf->body_max ? conf->body_max : HTTP_DEFAULT_BODY_MAX;
	snprintf(srv->name, sizeof(srv->name), "%s",
	         conf->name ? conf->name : "http");
	pthread_mutex_init(&srv->lock, NULL);
	if (cond_init_monotonic(&srv->cond) < 0) {
		pthread_mutex_destroy(&srv->lock);
		free(srv);
		return -ENOMEM;
	}

	max_conn = conf->max_connections ? conf->max_connections
	                                 : HTTP_DEFAULT_MAX_CONN;
	per_ip = conf->per_ip_connections ? conf->per_ip_connections
	                                  : HTTP_DEFAULT_PER_IP;
	timeout = conf->timeout_s ? conf->timeout_s : HTTP_DEFAULT_TIMEOUT_S;
	threads = conf->threads ? conf->threads : HTTP_DEFAULT_THREADS;
	if (threads > HTTP_MAX_THREADS)
		threads = HTTP_MAX_THREADS;

	if ((rc = open_listener(conf->listen, &srv->lsock, &srv->port)) < 0)
		goto fail;

	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
	        MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG;
	srv->mhd = MHD_start_daemon(
	    flags, 0, NULL, NULL, access_cb, srv, MHD_OPTION_LISTEN_SOCKET,
	    (MHD_socket)srv->lsock, MHD_OPTION_CONNECTION_TIMEOUT, timeout,
	    MHD_OPTION_CONNECTION_LIMIT, max_conn,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY_LIMIT,
	    MHD_OPTION_NOTIFY_COMPLETED, completed_cb, srv,
	    MHD_OPTION_URI_LOG_CALLBACK, uri_log_cb, srv,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, srv,
	    MHD_OPTION_THREAD_POOL_SIZE, threads > 1 ? threads : 0,
	    MHD_OPTION_END);
	if (srv->mhd == NULL) {
		rc = -EIO;
		goto fail;
	}
	*ret = srv;
	return 0;
fail:
	if (srv->lsock >= 0)
		close(srv->lsock);
	pthread_cond_destroy(&srv->cond);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
	return rc;
}

void
http_server_free_arg_on_stop(struct http_server *srv, void (*fn)(void *arg))
{
	if (srv != NULL)
		srv->free_arg = fn;
}

int
http_server_port(const struct http_server *srv)
{
	return srv != NULL ? srv->port : -1;
}

void
http_server_stop(struct http_server *srv)
{
	struct timespec deadline;

	if (srv == NULL)
		return;
	/* stop accepting; MHD no longer owns (or closes) the listen socket */
	if (MHD_quiesce_daemon(srv->mhd) == MHD_INVALID_SOCKET) {
		log_debug("http %s: quiesce failed", srv->name);
		srv->lsock = -1; /* MHD_stop_daemon closes it */
	}
	pthread_mutex_lock(&srv->lock);
	srv->stopping = true;
	while (srv->pending != NULL) {
		struct http_response resp;
		memset(&resp, 0, sizeof(resp));
		if (http_error(&resp, 503, "unavailable", "server stopping") <
		    0)
			resp.status = 503;
		pending_complete_locked(srv, srv->pending, &resp);
	}
	/* let the 503s go out before tearing the connections down */
	deadline_after_ms(CLOCK_MONOTONIC, HTTP_STOP_DRAIN_MS, &deadline);
	while (srv->deferred_live > 0) {
		if (pthread_cond_timedwait(&srv->cond, &srv->lock, &deadline) ==
		    ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&srv->lock);
	MHD_stop_daemon(srv->mhd);
	if (srv->lsock >= 0)
		close(srv->lsock);
	if (srv->free_arg != NULL)
		srv->free_arg(srv->arg);
	pthread_cond_destroy(&srv->cond);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}
