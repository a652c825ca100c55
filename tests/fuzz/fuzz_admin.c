/*
 * fuzz_admin.c - libFuzzer target for the admin-request decoder
 * (common/admin_socket.c).  The decoder is not exported, so the input
 * goes the way an operator's request does: raw bytes sent over a real
 * nng req socket to an admin socket served in-process on inproc://
 * (which, like tcp://, takes the actor from the request and gives the
 * role "support").
 *
 * Promises checked on every input:
 *  - a reply always comes (no hang, no dropped request) and is a JSON
 *    object {"v":1,"ok":bool,...}; a refusal carries error.code and
 *    error.message strings;
 *  - the handler is called only for a JSON object with "v":1 and a
 *    non-empty "cmd" string of at most 64 bytes, with args an object
 *    (never NULL), the peer's role is never above "support" (as_role
 *    can only lower it) and never "none" (refused in common code), and
 *    the command is a registered one ("echo");
 *  - an input that is not a JSON object never reaches the handler.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "admin_socket.h"
#include "err.h"

#define FUZZ_ADMIN_URL     "inproc://kasir-fuzz-admin"
#define FUZZ_ADMIN_MAX     (64 * 1024 + 1024) /* a bit above the cap */
#define FUZZ_ADMIN_TIMEOUT 10000              /* ms: a hang is a bug */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static atomic_ulong handler_calls;

static int
handler(void *arg, const struct admin_request *req, cJSON **ret_result,
        char *err_code, size_t code_len, char *err_msg, size_t msg_len)
{
	(void)arg;
	atomic_fetch_add(&handler_calls, 1);
	if (req->cmd == NULL || req->cmd[0] == '\0' || strlen(req->cmd) > 64 ||
	    req->args == NULL || !cJSON_IsObject(req->args) ||
	    req->peer.role > ADMIN_ROLE_SUPPORT ||
	    req->peer.role == ADMIN_ROLE_NONE ||
	    strcmp(req->cmd, "echo") != 0 ||
	    memchr(req->peer.user, '\0', sizeof(req->peer.user)) == NULL)
		abort();
	(void)err_code;
	(void)code_len;
	(void)err_msg;
	(void)msg_len;
	cJSON *r = cJSON_Duplicate(req->args, true);
	if (r == NULL)
		return -ENOMEM;
	*ret_result = r;
	return 0;
}

static const struct admin_command fuzz_commands[] = {
    {.name = "echo", .min_role = ADMIN_ROLE_SUPPORT, .handler = handler},
    {.name = NULL}};

static nng_socket *
client(void)
{
	static struct admin_socket *srv;
	static nng_socket sock;
	static int ready;
	struct admin_socket_conf conf = {.url = FUZZ_ADMIN_URL,
	                                 .commands = fuzz_commands};

	if (ready)
		return &sock;
	if (admin_socket_start(&conf, NULL, &srv) < 0 ||
	    nng_req0_open(&sock) != 0 ||
	    nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, FUZZ_ADMIN_TIMEOUT) !=
	        0 ||
	    nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, FUZZ_ADMIN_TIMEOUT) !=
	        0 ||
	    nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME,
	                      NNG_DURATION_INFINITE) != 0 ||
	    nng_dial(sock, FUZZ_ADMIN_URL, NULL, 0) != 0)
		abort();
	ready = 1;
	return &sock;
}

/* True for a request of the built-in "admin.commands" (answered without
 * the handler). */
static bool
is_builtin(const uint8_t *data, size_t size)
{
	cJSON *in = cJSON_ParseWithLength((const char *)data, size);
	const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(in, "cmd");
	bool b = cJSON_IsString(cmd) &&
	         strcmp(cmd->valuestring, "admin.commands") == 0;

	cJSON_Delete(in);
	return b;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	nng_socket *s = client();
	unsigned long before = atomic_load(&handler_calls);
	const cJSON *v, *ok, *err, *code, *msg;
	cJSON *reply, *in;
	nng_msg *m = NULL;
	int rv;

	if (size > FUZZ_ADMIN_MAX)
		return 0;
	if ((rv = nng_send(*s, (void *)(uintptr_t)data, size, 0)) != 0 ||
	    (rv = nng_recvmsg(*s, &m, 0)) != 0) {
		fprintf(stderr, "fuzz_admin: no reply: %s\n", nng_strerror(rv));
		abort();
	}
	reply = cJSON_ParseWithLength(nng_msg_body(m), nng_msg_len(m));
	nng_msg_free(m);
	v = cJSON_GetObjectItemCaseSensitive(reply, "v");
	ok = cJSON_GetObjectItemCaseSensitive(reply, "ok");
	if (!cJSON_IsObject(reply) || !cJSON_IsNumber(v) ||
	    v->valuedouble != ADMIN_PROTO_VERSION || !cJSON_IsBool(ok))
		abort();
	if (cJSON_IsFalse(ok)) {
		err = cJSON_GetObjectItemCaseSensitive(reply, "error");
		code = cJSON_GetObjectItemCaseSensitive(err, "code");
		msg = cJSON_GetObjectItemCaseSensitive(err, "message");
		if (!cJSON_IsString(code) || code->valuestring[0] == '\0' ||
		    !cJSON_IsString(msg))
			abort();
	} else if (atomic_load(&handler_calls) == before &&
	           !is_builtin(data, size)) {
		abort(); /* "ok" without the handler having run */
	}

	/* Not a JSON object, or above the 64 KiB cap: refused before the
	 * handler. */
	in = cJSON_ParseWithLength((const char *)data, size);
	if ((!cJSON_IsObject(in) || size > 64 * 1024) &&
	    (atomic_load(&handler_calls) != before || cJSON_IsTrue(ok)))
		abort();
	cJSON_Delete(in);
	cJSON_Delete(reply);
	return 0;
}
