/*
 * libkasir_nng_guard.so - LD_PRELOAD checker for the shutdown rule of
 * common/stream/transport.c (stream_aio_recvmsg()): a socket is never
 * nng_close()d while another thread has a receive or send pending on it.
 *
 * Why: in libnng 1.5.2 the timer thread ("nng:aio:expire") calls a
 * timed-out operation's cancel function with the socket's protocol state
 * (e.g. pull0_cancel(aio, pull0_sock)) outside any lock nng_close()
 * waits for.  Closing a socket under a blocked nng_recvmsg() can therefore
 * make that thread lock the destroyed mutex: "panic: pthread_mutex_lock:
 * Invalid argument", SIGABRT.  The crash needs the timeout to fire inside
 * a window of microseconds, so a stress test sees it rarely; this guard
 * sees the pattern that causes it every time.
 *
 * It interposes the blocking calls (nng_recvmsg, nng_sendmsg, nng_recv,
 * nng_send: pending while inside the call) and the aio calls
 * (nng_recv_aio / nng_send_aio: pending from the call until nng_aio_wait()
 * or nng_aio_free() of that aio returns) and counts pending operations
 * per socket id.  nng_close() of a socket with a pending operation prints
 * "nng-guard: VIOLATION ..." on stderr and aborts (SIGABRT, like the
 * real panic), so the daemon's exit status shows it.
 *
 * Bounds: NNG_GUARD_SLOTS sockets and aios tracked at once; beyond that
 * the guard says so on stderr once and stops checking (never a false
 * violation).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <nng/nng.h>

#define NNG_GUARD_SLOTS 256

struct sock_slot {
	uint32_t id; /* 0: free */
	int pending;
};

struct aio_slot {
	const nng_aio *aio; /* NULL: free */
	uint32_t id;
};

static pthread_mutex_t guard_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sock_slot socks[NNG_GUARD_SLOTS];
static struct aio_slot aios[NNG_GUARD_SLOTS];
static bool overflowed; /* under guard_mu */

/* Looks up the real libnng function once. */
static void *
real(const char *name)
{
	void *fn = dlsym(RTLD_NEXT, name);

	if (fn == NULL) {
		fprintf(stderr, "nng-guard: %s not found: %s\n", name,
		        dlerror());
		abort();
	}
	return fn;
}

typedef int (*recvmsg_fn)(nng_socket, nng_msg **, int);
typedef int (*sendmsg_fn)(nng_socket, nng_msg *, int);
typedef int (*recv_fn)(nng_socket, void *, size_t *, int);
typedef int (*send_fn)(nng_socket, void *, size_t, int);
typedef void (*sock_aio_fn)(nng_socket, nng_aio *);
typedef void (*aio_fn)(nng_aio *);
typedef int (*close_fn)(nng_socket);

/* type real_name = the real function (looked up once per call site) */
#define REAL(type, name)                                                       \
	static type real_##name##_cache;                                       \
	type real_##name =                                                     \
	    __atomic_load_n(&real_##name##_cache, __ATOMIC_ACQUIRE);           \
	if (real_##name == NULL) {                                             \
		real_##name = (type)real(#name);                               \
		__atomic_store_n(&real_##name##_cache, real_##name,            \
		                 __ATOMIC_RELEASE);                            \
	}

static void
overflow_locked(void)
{
	if (!overflowed)
		fprintf(stderr,
		        "nng-guard: more than %d sockets or aios in "
		        "use: no longer checking\n",
		        NNG_GUARD_SLOTS);
	overflowed = true;
}

/* Adds delta to the pending count of socket id. */
static void
sock_pending(uint32_t id, int delta)
{
	struct sock_slot *freeslot = NULL;

	pthread_mutex_lock(&guard_mu);
	for (int i = 0; i < NNG_GUARD_SLOTS; i++) {
		if (socks[i].id == id) {
			socks[i].pending += delta;
			if (socks[i].pending <= 0)
				socks[i].id = 0;
			pthread_mutex_unlock(&guard_mu);
			return;
		}
		if (socks[i].id == 0 && freeslot == NULL)
			freeslot = &socks[i];
	}
	if (delta > 0 && freeslot != NULL) {
		freeslot->id = id;
		freeslot->pending = delta;
	} else if (delta > 0) {
		overflow_locked();
	}
	pthread_mutex_unlock(&guard_mu);
}

static void
aio_started(const nng_aio *aio, uint32_t id)
{
	bool stored = false;

	pthread_mutex_lock(&guard_mu);
	for (int i = 0; i < NNG_GUARD_SLOTS && !stored; i++) {
		if (aios[i].aio == NULL) {
			aios[i].aio = aio;
			aios[i].id = id;
			stored = true;
		}
	}
	if (!stored)
		overflow_locked();
	pthread_mutex_unlock(&guard_mu);
	if (stored)
		sock_pending(id, 1);
}

/* The operation on aio is over (waited for, or the aio freed). */
static void
aio_done(const nng_aio *aio)
{
	uint32_t id = 0;

	pthread_mutex_lock(&guard_mu);
	for (int i = 0; i < NNG_GUARD_SLOTS; i++) {
		if (aios[i].aio == aio) {
			id = aios[i].id;
			aios[i].aio = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&guard_mu);
	if (id != 0)
		sock_pending(id, -1);
}

/* One line in the daemon's log, so a test knows the guard is loaded. */
__attribute__((constructor)) static void
guard_banner(void)
{
	fprintf(stderr, "nng-guard: active in pid %ld\n", (long)getpid());
}

int
nng_recvmsg(nng_socket s, nng_msg **msgp, int flags)
{
	int rv;

	REAL(recvmsg_fn, nng_recvmsg);
	sock_pending(s.id, 1);
	rv = real_nng_recvmsg(s, msgp, flags);
	sock_pending(s.id, -1);
	return rv;
}

int
nng_sendmsg(nng_socket s, nng_msg *msg, int flags)
{
	int rv;

	REAL(sendmsg_fn, nng_sendmsg);
	sock_pending(s.id, 1);
	rv = real_nng_sendmsg(s, msg, flags);
	sock_pending(s.id, -1);
	return rv;
}

int
nng_recv(nng_socket s, void *buf, size_t *szp, int flags)
{
	int rv;

	REAL(recv_fn, nng_recv);
	sock_pending(s.id, 1);
	rv = real_nng_recv(s, buf, szp, flags);
	sock_pending(s.id, -1);
	return rv;
}

int
nng_send(nng_socket s, void *buf, size_t len, int flags)
{
	int rv;

	REAL(send_fn, nng_send);
	sock_pending(s.id, 1);
	rv = real_nng_send(s, buf, len, flags);
	sock_pending(s.id, -1);
	return rv;
}

void
nng_recv_aio(nng_socket s, nng_aio *aio)
{
	REAL(sock_aio_fn, nng_recv_aio);
	aio_started(aio, s.id);
	real_nng_recv_aio(s, aio);
}

void
nng_send_aio(nng_socket s, nng_aio *aio)
{
	REAL(sock_aio_fn, nng_send_aio);
	aio_started(aio, s.id);
	real_nng_send_aio(s, aio);
}

void
nng_aio_wait(nng_aio *aio)
{
	REAL(aio_fn, nng_aio_wait);
	real_nng_aio_wait(aio);
	aio_done(aio);
}

void
nng_aio_free(nng_aio *aio)
{
	REAL(aio_fn, nng_aio_free);
	aio_done(aio); /* before the address can be reused */
	real_nng_aio_free(aio);
}

int
nng_close(nng_socket s)
{
	int pending = 0;

	REAL(close_fn, nng_close);
	pthread_mutex_lock(&guard_mu);
	for (int i = 0; i < NNG_GUARD_SLOTS; i++)
		if (socks[i].id == s.id && socks[i].id != 0)
			pending = socks[i].pending;
	pthread_mutex_unlock(&guard_mu);
	if (pending > 0) {
		fprintf(stderr,
		        "nng-guard: VIOLATION: nng_close(socket %u) while a "
		        "receive/send is pending on it in another thread "
		        "(%d nng call(s) in flight; libnng 1.5.2 may then "
		        "panic: pthread_mutex_lock: Invalid argument)\n",
		        (unsigned)s.id, pending);
		abort();
	}
	return real_nng_close(s);
}
