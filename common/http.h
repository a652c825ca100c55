/*
 * http.h - HTTP listener on GNU libmicrohttpd with the limits kasir needs.
 *
 * Every server gets: a connection timeout, a global and a per-IP
 * connection limit, a hard body cap enforced while reading (a declared
 * Content-Length above the cap is refused before any body byte is read;
 * a chunked body is cut at the cap: never buffered beyond it nor passed to
 * the handler, the rest drained up to 1 MiB, beyond that the connection is
 * closed) answered 413 with a JSON error, baseline
 * security headers on every response (X-Content-Type-Options: nosniff,
 * Cache-Control: no-store, X-Frame-Options: DENY, Referrer-Policy:
 * no-referrer, Content-Security-Policy: default-src 'none'), and never a
 * redirect.  A request whose body length is ambiguous (Content-Length with
 * Transfer-Encoding, several Content-Length headers) is answered 400
 * "bad_framing" and its connection closed before any handler runs (RFC
 * 9112 6.3: no request smuggling).  libmicrohttpd's own error pages (400
 * for a malformed Content-Length, 413, 431, 505) are written before any
 * callback of ours and carry none of these headers (docs/operations.md).
 * MHD runs its own polling thread(s); handlers run on them.
 *
 * Lifetime: everything in struct http_request belongs to the server and is
 * valid until the handler returns, or, for a deferred request, until
 * http_pending_complete() is called for it.
 */
#ifndef KASIR_HTTP_H
#define KASIR_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;
struct MHD_Connection;
struct http_server;
struct http_pending;

struct http_request {
	const char *method; /* "GET", "POST", ... */
	const char *path;   /* URL path without the query string */
	const char *body;   /* NUL-terminated copy; may be "" */
	size_t body_len;
	char client_ip[64];          /* textual peer address */
	struct MHD_Connection *conn; /* for http_header()/http_query() */
	void *server_priv;           /* internal */
};

/* Request header / query argument lookup; NULL when absent. */
const char *http_header(const struct http_request *req, const char *name);
const char *http_query(const struct http_request *req, const char *name);

/* True when a query argument (name or decoded value, "%00" included) has
 * a control character (below 0x20 or 0x7f): http_query() would show it
 * cut at a NUL.  The argument's name is then in ret_name. */
bool http_query_has_control(const struct http_request *req, char *ret_name,
                            size_t len);

#define HTTP_MAX_EXTRA_HEADERS 4
struct http_response {
	int status;
	char *body; /* malloc'd; the server frees it */
	size_t body_len;
	const char *content_type; /* static string; default application/json */
	struct {
		const char *name; /* static */
		char value[64];
	} headers[HTTP_MAX_EXTRA_HEADERS];
	int nheaders;
};

/* Return value of a handler that called http_defer(). */
#define HTTP_DEFERRED 1

/* Handler: fill resp and return 0, or return HTTP_DEFERRED after
 * http_defer().  Any negative return becomes a 500 JSON error. */
typedef int (*http_handler_fn)(void *arg, const struct http_request *req,
                               struct http_response *resp);

struct http_server_conf {
	const char *listen;       /* "127.0.0.1:8080", "[::1]:8080", ":8080" */
	unsigned max_connections; /* default 1000 */
	unsigned per_ip_connections; /* default 100 */
	unsigned timeout_s; /* idle/slow connection timeout, default 10 */
	size_t body_max;    /* default 64 KiB */
	unsigned threads;   /* MHD thread pool size, default 2 */
	const char *name;   /* for log lines ("ingest", "admin") */
};

/* True when addr is a listen address http_server_start() can use the form
 * of: "host:port", "[v6]:port" or ":port" (all addresses).  The config
 * checks it before a start (base_conf_check_listen). */
bool http_listen_valid(const char *addr);

/* Starts listening.  On success *ret owns the listener; stop with
 * http_server_stop().  -EADDRINUSE etc. when the bind fails. */
int http_server_start(const struct http_server_conf *conf,
                      http_handler_fn handler, void *arg,
                      struct http_server **ret);
/* Stops accepting, completes nothing further, frees everything.  Deferred
 * requests not yet completed are answered 503.  NULL is fine. */
void http_server_stop(struct http_server *srv);
/* For wrappers that own the handler's arg (admin_http): fn(arg) runs at
 * the end of http_server_stop(), after the last handler call. */
void http_server_free_arg_on_stop(struct http_server *srv,
                                  void (*fn)(void *arg));
/* The port actually bound (useful with port 0 in tests). */
int http_server_port(const struct http_server *srv);

/* Suspends the connection of req so the answer can be given later from any
 * thread.  The handler then returns HTTP_DEFERRED.  On success *ret is the
 * handle to complete exactly once. */
int http_defer(const struct http_request *req, struct http_pending **ret);
/* Sends resp (its body is taken over) for a deferred request and resumes
 * the connection.  Thread-safe. */
void http_pending_complete(struct http_pending *p, struct http_response *resp);

/* Response builders.  They take over nothing and copy what they need.
 * json is printed unformatted; status and the code go into
 * {"error":{"code":code,"message":message}} for http_error(). */
int http_json(struct http_response *resp, int status, const struct cJSON *json);
int http_error(struct http_response *resp, int status, const char *code,
               const char *message);
int http_text(struct http_response *resp, int status, const char *ctype,
              const char *text);
void http_add_header(struct http_response *resp, const char *name,
                     const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
