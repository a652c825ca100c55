/*
 * transport.c - the backbone's nng side: errors, signing and sending a
 * frame, blocking receive and send through a thread's own aio (and the
 * shutdown rule that goes with it); closes are bounded in
 * common/sock_close.c.
 */
#include <errno.h>
#include <stdlib.h>

#include "envelope.h"
#include "err.h"
#include "stream_impl.h"

int
stream_nng_err(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case NNG_ENOMEM:
		return -ENOMEM;
	case NNG_ETIMEDOUT:
		return -ETIMEDOUT;
	case NNG_ECLOSED:
		return -ECANCELED;
	case NNG_EAGAIN:
		return -EAGAIN;
	case NNG_EADDRINUSE:
		return -EADDRINUSE;
	case NNG_EADDRINVAL:
	case NNG_EINVAL:
		return -EINVAL;
	default:
		return KASIR_EPEER;
	}
}

/* Signs body into a frame and sends it on s with flags. */
int
stream_seal_and_send(const struct keyring *kr, nng_socket s, const char *body,
                     size_t body_len, int flags)
{
	char *frame = NULL;
	size_t len = 0;
	int rc;

	rc = envelope_seal(kr, body, body_len, &frame, &len);
	if (rc < 0)
		return rc;
	rc = stream_nng_err(nng_send(s, frame, len, flags));
	free(frame);
	return rc;
}

/*
 * Blocking receive / send through the calling thread's own aio, with the
 * socket's RECVTIMEO / SENDTIMEO.  Shutdown rule (libnng 1.5.2): a socket
 * is never closed while another thread has an operation pending on it.
 * nng's timer thread calls a timed-out operation's cancel function with
 * the socket's protocol state outside any lock nng_close() waits for, so
 * closing the socket under a blocked nng_recvmsg() lets that timer thread
 * lock a destroyed mutex ("panic: pthread_mutex_lock: Invalid argument",
 * SIGABRT).  The stopper therefore nng_aio_stop()s the aio (the pending
 * operation ends with NNG_ECANCELED and every later one fails at once),
 * joins the thread, nng_aio_free()s the aio (which waits for the timer
 * thread to be done with it) and only then closes the socket.  Returns an
 * nng error; on success *ret is the message (caller frees).
 */
static int
stream_aio_recvmsg_within(nng_socket s, nng_aio *aio, nng_duration timeout,
                          nng_msg **ret)
{
	int rv;

	nng_aio_set_timeout(aio, timeout);
	nng_recv_aio(s, aio);
	nng_aio_wait(aio);
	rv = nng_aio_result(aio);
	if (rv == 0) {
		*ret = nng_aio_get_msg(aio);
		nng_aio_set_msg(aio, NULL);
	}
	return rv;
}

int
stream_aio_recvmsg(nng_socket s, nng_aio *aio, nng_msg **ret)
{
	return stream_aio_recvmsg_within(s, aio, NNG_DURATION_DEFAULT, ret);
}

/* Non-blocking receive through aio: a message already queued, or
 * NNG_ETIMEDOUT at once. */
int
stream_aio_recvmsg_nowait(nng_socket s, nng_aio *aio, nng_msg **ret)
{
	return stream_aio_recvmsg_within(s, aio, NNG_DURATION_ZERO, ret);
}

/* Sends msg through aio; msg is consumed whatever the outcome. */
int
stream_aio_sendmsg(nng_socket s, nng_aio *aio, nng_msg *msg)
{
	int rv;

	nng_aio_set_timeout(aio, NNG_DURATION_DEFAULT);
	nng_aio_set_msg(aio, msg);
	nng_send_aio(s, aio);
	nng_aio_wait(aio);
	rv = nng_aio_result(aio);
	if (rv != 0) {
		nng_msg_free(nng_aio_get_msg(aio));
		nng_aio_set_msg(aio, NULL);
	}
	return rv;
}

/* True when an nng result means "the stopper stopped us". */
bool
stream_nng_stopped(int rv)
{
	return rv == NNG_ECANCELED || rv == NNG_ECLOSED;
}

/* An nng message holding a copy of frame, for an nng send: after a failed
 * send the caller frees it, after a successful one nng owns it.  libnng
 * 1.5.2 can lose a message it owns when its socket closes while the
 * message is still queued (fixed upstream after 1.5.2, nanomsg/nng pull
 * request #1643); tests/lsan.supp names this function, and nothing else
 * is allocated in it.  Never inlined, so that the name is in the stack. */
static __attribute__((noinline)) int
stream_msg_for_nng(const char *frame, size_t len, nng_msg **ret)
{
	nng_msg *msg = NULL;
	int rv;

	rv = nng_msg_alloc(&msg, 0);
	if (rv == 0)
		rv = nng_msg_append(msg, frame, len);
	if (rv != 0) {
		nng_msg_free(msg);
		return rv;
	}
	*ret = msg;
	return 0;
}

/* stream_seal_and_send() through aio (blocking, the socket's SENDTIMEO); a stop
 * (NNG_ECANCELED) is -ECANCELED like a closed socket. */
int
stream_seal_and_send_aio(const struct keyring *kr, nng_socket s, nng_aio *aio,
                         const char *body, size_t body_len)
{
	char *frame = NULL;
	size_t len = 0;
	nng_msg *msg = NULL;
	int rc, rv;

	rc = envelope_seal(kr, body, body_len, &frame, &len);
	if (rc < 0)
		return rc;
	rv = stream_msg_for_nng(frame, len, &msg);
	free(frame);
	if (rv != 0)
		return stream_nng_err(rv);
	rv = stream_aio_sendmsg(s, aio, msg);
	return stream_nng_stopped(rv) ? -ECANCELED : stream_nng_err(rv);
}
