/*
 * kasir-loadgen - an open-loop (and closed-loop) HTTP load generator for
 * the kasir benchmarks (bench/a-ingest).
 *
 * Open loop (--rate R): request i is due at t0 + i/R whatever happened to
 * the ones before it, and its latency is measured from that intended
 * time, not from when a connection was free to send it.  A slow answer
 * therefore shows in the latency of every request queued behind it: no
 * coordinated omission (the wrk2 idea; wrk2 is not in Debian).  Requests
 * go out over K keep-alive connections; a due request waits for the next
 * free one.
 *
 * Closed loop (no --rate): each of the K connections sends its next
 * request as soon as the previous answer is in, for the maximum rate;
 * latency is from the actual send.
 *
 * Bodies come pre-generated from a file, one per line; request i sends
 * line (offset + i) mod lines.  --sources N adds X-Forwarded-For with one
 * of N addresses of 10.0.0.0/8 per request (the server must trust the
 * generator's address as its proxy), as many clients behind nginx.
 * Several --url spread the connections over several servers
 * (connection c talks to url c mod n).
 *
 * Output: one JSON line on stdout (report.c), with t0 on the wall clock
 * (t0_unix_ms) so that a caller can match request i to its due time.  Exit 0
 * when the run happened (whatever the answers), 2 on bad usage, 1 on a local
 * failure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "http1.h"
#include "report.h"

#define MAX_URLS        16
#define MAX_CONNECTIONS 4096
#define MAX_BODY        (64 * 1024)
#define OUT_CAP         (MAX_BODY + 1024)
#define IN_CAP          (64 * 1024 + 16)
#define RECONNECT_NS    (50 * 1000000ULL)

struct target {
	struct sockaddr_in addr;
	char host_port[80]; /* Host: header */
	char path[256];
};

struct body {
	const char *p;
	size_t len;
};

enum conn_state {
	CONN_DOWN,       /* no socket; reconnect at retry_at */
	CONN_CONNECTING, /* non-blocking connect in progress */
	CONN_IDLE,       /* connected, nothing in flight */
	CONN_BUSY,       /* a request written (maybe partly), answer awaited */
};

struct conn {
	int fd;
	enum conn_state state;
	const struct target *target;
	uint64_t start_ns; /* latency origin of the request in flight */
	uint64_t sent_ns;  /* when it was handed to the socket (timeouts) */
	uint64_t retry_at; /* CONN_DOWN: when to try connecting again */
	char out[OUT_CAP];
	size_t out_len, out_off;
	char in[IN_CAP];
	size_t in_len;
};

struct run {
	struct target targets[MAX_URLS];
	unsigned ntargets;
	struct body *bodies;
	size_t nbodies;
	unsigned nconn;
	struct conn *conns;
	double rate;         /* open loop: requests per second; 0: closed */
	double duration_s;   /* schedule (open) or sending (closed) length */
	uint64_t offset;     /* first body line */
	uint64_t sources;    /* distinct X-Forwarded-For addresses; 0: none */
	uint64_t timeout_ns; /* per request */
	uint64_t drain_ns;   /* after the schedule, for the backlog */
	int ep, tfd;
	uint64_t t0, end;
	uint64_t scheduled; /* open loop: requests in the schedule */
	uint64_t next;      /* index of the next request to send */
	uint64_t inflight;
	unsigned rr; /* connection where dispatch() starts looking */
	uint64_t last_answer_ns;
	struct report rep;
};

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t
intended_ns(const struct run *r, uint64_t i)
{
	return r->t0 + (uint64_t)((double)i * 1e9 / r->rate);
}

/* Parses http://A.B.C.D:PORT/path into t; 0 or -EINVAL. */
static int
target_parse(const char *url, struct target *t)
{
	char host[64];
	const char *p, *slash, *colon;
	unsigned long port;
	char *end;

	if (strncmp(url, "http://", 7) != 0)
		return -EINVAL;
	p = url + 7;
	slash = strchr(p, '/');
	colon = strchr(p, ':');
	if (slash == NULL || colon == NULL || colon > slash ||
	    (size_t)(colon - p) >= sizeof(host) ||
	    strlen(slash) >= sizeof(t->path))
		return -EINVAL;
	memcpy(host, p, (size_t)(colon - p));
	host[colon - p] = '\0';
	port = strtoul(colon + 1, &end, 10);
	if (end != slash || port == 0 || port > 65535)
		return -EINVAL;
	memset(&t->addr, 0, sizeof(t->addr));
	t->addr.sin_family = AF_INET;
	t->addr.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &t->addr.sin_addr) != 1)
		return -EINVAL;
	snprintf(t->host_port, sizeof(t->host_port), "%s:%lu", host, port);
	memcpy(t->path, slash, strlen(slash) + 1);
	return 0;
}

/* Reads the body file into one buffer split at newlines; on success the
 * run owns *ret_buf (freed at exit). */
static int
bodies_load(struct run *r, const char *path, char **ret_buf)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	char *buf = NULL;
	size_t n = 0, cap = 0;

	if (f == NULL || fstat(fileno(f), &st) != 0)
		goto fail;
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL ||
	    fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
		goto fail;
	buf[st.st_size] = '\0';
	fclose(f);
	f = NULL;
	for (char *p = buf; *p != '\0';) {
		char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (len > 0) {
			if (len > MAX_BODY) {
				fprintf(stderr,
				        "kasir-loadgen: %s: line %zu "
				        "longer than %d bytes\n",
				        path, n + 1, MAX_BODY);
				goto fail;
			}
			if (n == cap) {
				cap = cap ? cap * 2 : 4096;
				struct body *b =
				    realloc(r->bodies, cap * sizeof(*b));
				if (b == NULL)
					goto fail;
				r->bodies = b;
			}
			r->bodies[n].p = p;
			r->bodies[n].len = len;
			n++;
		}
		if (nl == NULL)
			break;
		*nl = '\0';
		p = nl + 1;
	}
	if (n == 0) {
		fprintf(stderr, "kasir-loadgen: %s: no bodies\n", path);
		goto fail;
	}
	r->nbodies = n;
	*ret_buf = buf;
	return 0;
fail:
	if (errno != 0 && n == 0)
		fprintf(stderr, "kasir-loadgen: %s: %s\n", path,
		        strerror(errno));
	if (f != NULL)
		fclose(f);
	free(buf);
	return -EINVAL;
}

static void
conn_close(struct run *r, struct conn *c, uint64_t now)
{
	if (c->fd >= 0) {
		epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	if (c->state == CONN_BUSY)
		r->inflight--;
	c->fd = -1;
	c->state = CONN_DOWN;
	c->retry_at = now;
	c->in_len = c->out_len = c->out_off = 0;
}

static int
conn_watch(struct run *r, struct conn *c, bool out)
{
	struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0),
	                         .data.ptr = c};
	return epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Starts a non-blocking connect; failures count and retry later. */
static void
conn_open(struct run *r, struct conn *c, uint64_t now)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
	int one = 1;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		goto fail;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (const struct sockaddr *)&c->target->addr,
	            sizeof(c->target->addr)) != 0 &&
	    errno != EINPROGRESS)
		goto fail;
	if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
		goto fail;
	c->state = CONN_CONNECTING;
	return;
fail:
	r->rep.err_connect++;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = CONN_DOWN;
	c->retry_at = now + RECONNECT_NS;
}

/* Writes what is left of the request; a short write waits for EPOLLOUT. */
static void
conn_flush(struct run *r, struct conn *c, uint64_t now)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off,
		                 c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			conn_watch(r, c, true);
			return;
		}
		if (n <= 0) {
			r->rep.err_io++;
			conn_close(r, c, now);
			return;
		}
		c->out_off += (size_t)n;
	}
	conn_watch(r, c, false);
}

/* Sends request i on idle connection c; start is its latency origin. */
static void
conn_send(struct run *r, struct conn *c, uint64_t i, uint64_t start,
          uint64_t now)
{
	uint64_t j = r->offset + i;
	const struct body *b = &r->bodies[j % r->nbodies];
	char src[32];
	int n;

	if (j >= r->nbodies)
		r->rep.reused++;
	if (r->sources > 0) {
		uint64_t a = j % r->sources + 1;
		snprintf(src, sizeof(src), "10.%u.%u.%u",
		         (unsigned)(a >> 16 & 255), (unsigned)(a >> 8 & 255),
		         (unsigned)(a & 255));
	}
	n = http1_request(c->out, sizeof(c->out), c->target->host_port,
	                  c->target->path, r->sources > 0 ? src : NULL, b->p,
	                  b->len);
	if (n < 0) { /* bodies are bounded by MAX_BODY: cannot happen */
		fprintf(stderr, "kasir-loadgen: request too large\n");
		exit(1);
	}
	c->out_len = (size_t)n;
	c->out_off = 0;
	c->in_len = 0;
	c->start_ns = start;
	c->sent_ns = now;
	c->state = CONN_BUSY;
	r->inflight++;
	r->rep.sent++;
	conn_flush(r, c, now);
}

/* Reads what the server sent; a whole answer frees the connection. */
static void
conn_read(struct run *r, struct conn *c)
{
	for (;;) {
		struct http1_response resp;
		ssize_t n;
		uint64_t now;
		int pr;

		if (c->in_len == sizeof(c->in)) {
			r->rep.err_proto++;
			conn_close(r, c, now_ns());
			return;
		}
		n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len,
		         0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		now = now_ns();
		if (n <= 0) {
			if (c->state == CONN_BUSY)
				r->rep.err_io++;
			conn_close(r, c, now);
			return;
		}
		c->in_len += (size_t)n;
		if (c->state != CONN_BUSY) { /* bytes nobody asked for */
			r->rep.err_proto++;
			conn_close(r, c, now);
			return;
		}
		pr = http1_response_parse(c->in, c->in_len, &resp);
		if (pr == 0)
			continue;
		if (pr < 0) {
			r->rep.err_proto++;
			conn_close(r, c, now);
			return;
		}
		if (report_answer(&r->rep, resp.status, now - c->start_ns,
		                  c->start_ns > r->t0 ? c->start_ns - r->t0
		                                      : 0) != 0) {
			fprintf(stderr, "kasir-loadgen: out of memory\n");
			exit(1);
		}
		r->last_answer_ns = now;
		r->inflight--;
		c->state = CONN_IDLE;
		if (!resp.keep_alive || resp.length != c->in_len) {
			/* closing, or bytes beyond the answer: start afresh */
			if (resp.length != c->in_len)
				r->rep.err_proto++;
			conn_close(r, c, now);
		}
		c->in_len = 0;
		return;
	}
}

static void
conn_event(struct run *r, struct conn *c, uint32_t events)
{
	uint64_t now = now_ns();

	if (c->state == CONN_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
		    err != 0) {
			r->rep.err_connect++;
			conn_close(r, c, now);
			c->retry_at = now + RECONNECT_NS;
			return;
		}
		if (events & (EPOLLOUT | EPOLLIN)) {
			c->state = CONN_IDLE;
			conn_watch(r, c, false);
		}
		return;
	}
	if ((events & EPOLLOUT) && c->state == CONN_BUSY)
		conn_flush(r, c, now);
	if (c->fd >= 0 && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		conn_read(r, c);
}

/* Connections down since their retry time are opened again; busy ones
 * past the timeout are closed and counted. */
static void
conns_maintain(struct run *r, uint64_t now)
{
	for (unsigned k = 0; k < r->nconn; k++) {
		struct conn *c = &r->conns[k];
		if (c->state == CONN_DOWN && now >= c->retry_at)
			conn_open(r, c, now);
		else if (c->state == CONN_BUSY &&
		         now - c->sent_ns > r->timeout_ns) {
			r->rep.err_timeout++;
			conn_close(r, c, now);
		}
	}
}

/* Hands due requests (open) or the next ones (closed) to idle
 * connections.  Returns whether an idle connection is left over. */
static bool
dispatch(struct run *r, uint64_t now)
{
	uint64_t limit;

	if (r->rate > 0) {
		uint64_t due =
		    now < r->t0
		        ? 0
		        : (uint64_t)((double)(now - r->t0) * r->rate / 1e9) + 1;
		limit = due < r->scheduled ? due : r->scheduled;
	} else {
		limit = now < r->end ? UINT64_MAX : r->next;
	}
	/* round-robin from where the last pass stopped, so that idle
	 * connections (and the servers behind them) share the load */
	for (unsigned n = 0; n < r->nconn; n++) {
		struct conn *c = &r->conns[(r->rr + n) % r->nconn];
		if (c->state != CONN_IDLE)
			continue;
		if (r->next >= limit) {
			r->rr = (r->rr + n) % r->nconn;
			return true;
		}
		conn_send(r, c, r->next,
		          r->rate > 0 ? intended_ns(r, r->next) : now, now);
		r->next++;
	}
	r->rr = (r->rr + 1) % r->nconn;
	return false;
}

static void
timer_arm(struct run *r, uint64_t at)
{
	struct itimerspec its = {0};

	its.it_value.tv_sec = (time_t)(at / 1000000000ULL);
	its.it_value.tv_nsec = (long)(at % 1000000000ULL);
	if (at == 0)
		its.it_value.tv_nsec = 0; /* disarm */
	timerfd_settime(r->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Opens every connection and waits (at most 10 s) until all are up. */
static int
connect_all(struct run *r)
{
	uint64_t deadline = now_ns() + 10000000000ULL;
	struct epoll_event evs[64];

	for (;;) {
		unsigned up = 0;
		uint64_t now = now_ns();
		conns_maintain(r, now);
		for (unsigned k = 0; k < r->nconn; k++)
			up += r->conns[k].state == CONN_IDLE;
		if (up == r->nconn)
			return 0;
		if (now > deadline) {
			fprintf(stderr,
			        "kasir-loadgen: %u of %u connections up "
			        "after 10 s\n",
			        up, r->nconn);
			return -ETIMEDOUT;
		}
		int n = epoll_wait(r->ep, evs, 64, 50);
		for (int e = 0; e < n; e++)
			if (evs[e].data.ptr != NULL)
				conn_event(r, evs[e].data.ptr, evs[e].events);
	}
}

static void
run_loop(struct run *r)
{
	struct epoll_event evs[256];

	for (;;) {
		uint64_t now = now_ns(), wake;
		bool idle;

		conns_maintain(r, now);
		idle = dispatch(r, now);
		if (r->rate > 0) {
			if (r->next >= r->scheduled && r->inflight == 0)
				break;
			if (now > r->end + r->drain_ns) {
				r->rep.unsent = r->scheduled - r->next;
				r->rep.err_timeout += r->inflight;
				break;
			}
			wake = idle && r->next < r->scheduled
			           ? intended_ns(r, r->next)
			           : 0;
		} else {
			if (now >= r->end && r->inflight == 0)
				break;
			if (now > r->end + r->timeout_ns) {
				r->rep.err_timeout += r->inflight;
				break;
			}
			wake = now < r->end ? r->end : 0;
		}
		timer_arm(r, wake);
		/* 20 ms: timeouts and reconnects are looked at that often */
		int n = epoll_wait(r->ep, evs, 256, 20);
		for (int e = 0; e < n; e++) {
			if (evs[e].data.ptr == NULL) {
				uint64_t exp;
				if (read(r->tfd, &exp, sizeof(exp)) < 0 &&
				    errno != EAGAIN)
					perror("kasir-loadgen: timerfd");
				continue;
			}
			conn_event(r, evs[e].data.ptr, evs[e].events);
		}
	}
}

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: kasir-loadgen --url http://IP:PORT/path [--url ...]\n"
	        "         --bodies FILE [--connections K] [--duration S]\n"
	        "         [--rate R] [--offset N] [--sources N]\n"
	        "         [--timeout S] [--drain S]\n"
	        "  --rate R     open loop: R requests/s on a fixed schedule,\n"
	        "               latency from each intended send time;\n"
	        "               without it: closed loop, as fast as K\n"
	        "               connections go\n"
	        "  --bodies     one request body per line; request i sends\n"
	        "               line (offset + i) mod lines\n"
	        "  --sources N  X-Forwarded-For: one of N 10/8 addresses\n"
	        "  --timeout S  per request (15); --drain S: open loop,\n"
	        "               time after the schedule for the backlog\n"
	        "               (the timeout)\n"
	        "Prints one JSON line: counts, status classes, rate,\n"
	        "latency p50/p90/p99/p99.9/max.\n");
}

static int
parse_double(const char *s, double min, double max, double *ret)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end != '\0' || !(v >= min && v <= max))
		return -EINVAL;
	*ret = v;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"url", required_argument, NULL, 'u'},
	    {"bodies", required_argument, NULL, 'b'},
	    {"connections", required_argument, NULL, 'c'},
	    {"duration", required_argument, NULL, 'd'},
	    {"rate", required_argument, NULL, 'r'},
	    {"offset", required_argument, NULL, 'o'},
	    {"sources", required_argument, NULL, 's'},
	    {"timeout", required_argument, NULL, 't'},
	    {"drain", required_argument, NULL, 'D'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct run *r = calloc(1, sizeof(*r));
	const char *bodies_path = NULL;
	char *bodies_buf = NULL;
	double v, timeout_s = 15, drain_s = -1;
	int opt;

	if (r == NULL)
		return 1;
	r->nconn = 32;
	r->duration_s = 10;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'u':
			if (r->ntargets == MAX_URLS ||
			    target_parse(optarg, &r->targets[r->ntargets]) !=
			        0) {
				fprintf(stderr,
				        "kasir-loadgen: bad --url %s (at most "
				        "%d of http://IPv4:PORT/path)\n",
				        optarg, MAX_URLS);
				return 2;
			}
			r->ntargets++;
			break;
		case 'b':
			bodies_path = optarg;
			break;
		case 'c':
			if (parse_double(optarg, 1, MAX_CONNECTIONS, &v) != 0)
				goto bad;
			r->nconn = (unsigned)v;
			break;
		case 'd':
			if (parse_double(optarg, 0.1, 3600, &r->duration_s) !=
			    0)
				goto bad;
			break;
		case 'r':
			if (parse_double(optarg, 1, 1e7, &r->rate) != 0)
				goto bad;
			break;
		case 'o':
			if (parse_double(optarg, 0, 1e15, &v) != 0)
				goto bad;
			r->offset = (uint64_t)v;
			break;
		case 's':
			if (parse_double(optarg, 0, 1 << 24, &v) != 0)
				goto bad;
			r->sources = (uint64_t)v;
			break;
		case 't':
			if (parse_double(optarg, 0.01, 600, &timeout_s) != 0)
				goto bad;
			break;
		case 'D':
			if (parse_double(optarg, 0, 600, &drain_s) != 0)
				goto bad;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (optind != argc || r->ntargets == 0 || bodies_path == NULL)
		goto bad;
	r->timeout_ns = (uint64_t)(timeout_s * 1e9);
	r->drain_ns = (uint64_t)((drain_s >= 0 ? drain_s : timeout_s) * 1e9);
	if (bodies_load(r, bodies_path, &bodies_buf) != 0)
		return 1;
	r->conns = calloc(r->nconn, sizeof(*r->conns));
	r->ep = epoll_create1(EPOLL_CLOEXEC);
	r->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (r->conns == NULL || r->ep < 0 || r->tfd < 0) {
		perror("kasir-loadgen");
		return 1;
	}
	struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
	if (epoll_ctl(r->ep, EPOLL_CTL_ADD, r->tfd, &tev) != 0) {
		perror("kasir-loadgen: epoll");
		return 1;
	}
	for (unsigned k = 0; k < r->nconn; k++) {
		r->conns[k].fd = -1;
		r->conns[k].state = CONN_DOWN;
		r->conns[k].target = &r->targets[k % r->ntargets];
	}
	if (connect_all(r) != 0)
		return 1;
	r->t0 = now_ns();
	{
		struct timespec rt;

		clock_gettime(CLOCK_REALTIME, &rt);
		r->rep.t0_unix_ns = (int64_t)rt.tv_sec * 1000000000 +
		                    rt.tv_nsec - (int64_t)(now_ns() - r->t0);
	}
	r->end = r->t0 + (uint64_t)(r->duration_s * 1e9);
	r->scheduled =
	    r->rate > 0 ? (uint64_t)llround(r->rate * r->duration_s) : 0;
	run_loop(r);
	report_print(
	    &r->rep, r->rate > 0 ? "open" : "closed", r->rate, r->nconn,
	    r->duration_s, r->rate > 0 ? r->scheduled : r->rep.sent,
	    (r->last_answer_ns > r->t0 ? r->last_answer_ns : r->t0) - r->t0);
	for (unsigned k = 0; k < r->nconn; k++)
		if (r->conns[k].fd >= 0)
			close(r->conns[k].fd);
	report_free(&r->rep);
	free(r->conns);
	free(r->bodies);
	free(bodies_buf);
	free(r);
	return 0;
bad:
	usage(stderr);
	return 2;
}
