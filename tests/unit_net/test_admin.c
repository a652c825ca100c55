/*
 * test_admin.c - common/admin_socket.c over tcp:// and ipc://.
 */
#include <errno.h>
#include <grp.h>
#include <sys/wait.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "admin_socket.h"
#include "err.h"
#include "../unit/testutil.h"

static int calls;
static int refusals;           /* refused() calls */
static char last_refusal[128]; /* "cmd code" of the last one */

/* The daemon's side of a refusal made before the handler. */
static void
refused(void *arg, const struct admin_request *req, const char *code)
{
	(void)arg;
	refusals++;
	snprintf(last_refusal, sizeof(last_refusal), "%s %s", req->cmd, code);
}

static const char *const role_names[] = {"none", "support", "engineer"};

/* Echoes what the socket told it about the request and the peer. */
static int
handler(void *arg, const struct admin_request *req, cJSON **ret_result,
        char *err_code, size_t code_len, char *err_msg, size_t msg_len)
{
	cJSON *r;

	(void)arg;
	calls++;
	if (strcmp(req->cmd, "test.fail") == 0) {
		snprintf(err_code, code_len, "order_not_found");
		snprintf(err_msg, msg_len, "no order X");
		return KASIR_ENOTFOUND;
	}
	if (strcmp(req->cmd, "test.fail_plain") == 0)
		return KASIR_EPERM;
	r = cJSON_CreateObject();
	cJSON_AddStringToObject(r, "cmd", req->cmd);
	cJSON_AddStringToObject(r, "user", req->peer.user);
	cJSON_AddStringToObject(r, "role", role_names[req->peer.role]);
	cJSON_AddStringToObject(r, "reason", req->reason ? req->reason : "-");
	cJSON_AddItemToObject(r, "args", cJSON_Duplicate(req->args, 1));
	*ret_result = r;
	return 0;
}

/* What the test daemon registers; anything else never reaches handler(). */
#define SUPPORT(n)                                                             \
	{                                                                      \
		.name = (n), .min_role = ADMIN_ROLE_SUPPORT,                   \
		.handler = handler                                             \
	}
static const struct admin_command commands[] = {
    SUPPORT("order.show"),
    SUPPORT("x"),
    SUPPORT("test.fail"),
    SUPPORT("test.fail_plain"),
    SUPPORT("who"),
    {.name = "test.engineer",
     .min_role = ADMIN_ROLE_ENGINEER,
     .handler = handler,
     .audited = true},
    {.name = "test.engineer_quiet",
     .min_role = ADMIN_ROLE_ENGINEER,
     .handler = handler},
    {.name = NULL}};
#define NCOMMANDS 7

static cJSON *
call(const char *url, const char *json)
{
	cJSON *req = cJSON_Parse(json), *reply = NULL;

	assert_non_null(req);
	int rc = admin_call(url, req, 5000, &reply);
	if (rc != 0)
		fprintf(stderr, "admin_call %s: %d for %.60s\n", url, rc, json);
	assert_int_equal(rc, 0);
	cJSON_Delete(req);
	return reply;
}

static const char *
str_at(const cJSON *o, const char *a, const char *b)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
	if (b != NULL)
		x = cJSON_GetObjectItemCaseSensitive(x, b);
	return cJSON_IsString(x) ? x->valuestring : NULL;
}

static bool
ok_of(const cJSON *o)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ok"));
}

static void
round_trips(const char *url, const char *want_user, const char *want_role)
{
	cJSON *r;
	char *big;
	size_t n = 100 * 1024;

	r = call(url,
	         "{\"v\":1,\"cmd\":\"order.show\",\"args\":{\"id\":\"A1\"},"
	         "\"reason\":\"check\",\"actor\":\"alice\"}");
	assert_true(ok_of(r));
	assert_int_equal(cJSON_GetObjectItem(r, "v")->valueint, 1);
	assert_string_equal(str_at(r, "result", "cmd"), "order.show");
	assert_string_equal(str_at(r, "result", "user"), want_user);
	assert_string_equal(str_at(r, "result", "role"), want_role);
	assert_string_equal(str_at(r, "result", "reason"), "check");
	assert_string_equal(
	    str_at(cJSON_GetObjectItem(r, "result"), "args", "id"), "A1");
	cJSON_Delete(r);

	/* args absent: the handler sees an empty object */
	r = call(url, "{\"v\":1,\"cmd\":\"x\"}");
	assert_true(ok_of(r));
	assert_true(cJSON_IsObject(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(r, "result"), "args")));
	cJSON_Delete(r);

	r = call(url, "{\"v\":1,\"cmd\":\"test.fail\"}");
	assert_false(ok_of(r));
	assert_string_equal(str_at(r, "error", "code"), "order_not_found");
	assert_string_equal(str_at(r, "error", "message"), "no order X");
	cJSON_Delete(r);

	r = call(url, "{\"v\":1,\"cmd\":\"test.fail_plain\"}");
	assert_false(ok_of(r));
	assert_string_equal(str_at(r, "error", "code"), "role_required");
	cJSON_Delete(r);

	/* wrong or missing version: refused before the handler */
	int before = calls;
	r = call(url, "{\"v\":2,\"cmd\":\"order.show\"}");
	assert_false(ok_of(r));
	assert_string_equal(str_at(r, "error", "code"), "bad_version");
	cJSON_Delete(r);
	r = call(url, "{\"cmd\":\"order.show\"}");
	assert_string_equal(str_at(r, "error", "code"), "bad_version");
	cJSON_Delete(r);
	r = call(url, "{\"v\":1}");
	assert_string_equal(str_at(r, "error", "code"), "bad_request");
	cJSON_Delete(r);
	assert_int_equal(calls, before);

	/* oversized: refused with too_big, handler not called */
	big = malloc(n + 64);
	snprintf(big, n + 64, "{\"v\":1,\"cmd\":\"x\",\"args\":{\"pad\":\"");
	size_t l = strlen(big);
	memset(big + l, 'p', n);
	strcpy(big + l + n, "\"}}");
	r = call(url, big);
	assert_false(ok_of(r));
	assert_string_equal(str_at(r, "error", "code"), "too_big");
	cJSON_Delete(r);
	free(big);
	assert_int_equal(calls, before);
}

/* The two gates in common code: role none is refused for every command
 * (registered, built-in or unknown) and an unregistered name is answered
 * "unknown_command"; neither reaches the handler.  admin.commands lists
 * the registered names. */
static void
gates(const char *url)
{
	static const char *const probes[] = {"order.show", "x", "who",
	                                     "admin.commands", "no.such"};
	char json[256];
	int before = calls, before_refusals = refusals;
	cJSON *r, *list;

	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		snprintf(json, sizeof(json),
		         "{\"v\":1,\"cmd\":\"%s\",\"as_role\":\"none\"}",
		         probes[i]);
		r = call(url, json);
		assert_false(ok_of(r));
		assert_string_equal(str_at(r, "error", "code"),
		                    "role_required");
		cJSON_Delete(r);
	}
	assert_int_equal(refusals, before_refusals + 5);
	assert_string_equal(last_refusal, "no.such role_required");
	r = call(url, "{\"v\":1,\"cmd\":\"no.such\"}");
	assert_false(ok_of(r));
	assert_string_equal(str_at(r, "error", "code"), "unknown_command");
	cJSON_Delete(r);
	assert_string_equal(last_refusal, "no.such unknown_command");
	assert_int_equal(calls, before);

	/* a command name outside [A-Za-z0-9._-]: bad_request, nothing told */
	r = call(url, "{\"v\":1,\"cmd\":\"x\\n\",\"as_role\":\"none\"}");
	assert_string_equal(str_at(r, "error", "code"), "bad_request");
	cJSON_Delete(r);
	r = call(url, "{\"v\":1,\"cmd\":\"order show\"}");
	assert_string_equal(str_at(r, "error", "code"), "bad_request");
	cJSON_Delete(r);
	assert_int_equal(refusals, before_refusals + 6);
	assert_int_equal(calls, before);

	r = call(url, "{\"v\":1,\"cmd\":\"admin.commands\"}");
	assert_true(ok_of(r));
	list =
	    cJSON_GetObjectItem(cJSON_GetObjectItem(r, "result"), "commands");
	assert_int_equal(cJSON_GetArraySize(list), NCOMMANDS);
	for (int i = 0; i < NCOMMANDS; i++)
		assert_string_equal(cJSON_GetArrayItem(list, i)->valuestring,
		                    commands[i].name);
	list = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "result"), "table");
	assert_int_equal(cJSON_GetArraySize(list), NCOMMANDS);
	assert_string_equal(
	    str_at(cJSON_GetArrayItem(list, 5), "min_role", NULL), "engineer");
	assert_true(cJSON_IsTrue(
	    cJSON_GetObjectItem(cJSON_GetArrayItem(list, 5), "audited")));
	assert_string_equal(
	    str_at(cJSON_GetArrayItem(list, 0), "min_role", NULL), "support");
	cJSON_Delete(r);
	assert_int_equal(calls, before);

	/* below a command's minimum role: role_required before the handler
	 * (the audit row of an audited command's refusal needs a database:
	 * hostile_admin_roles finds it with audit.list) */
	before_refusals = refusals;
	r = call(url, "{\"v\":1,\"cmd\":\"test.engineer\","
	              "\"as_role\":\"support\"}");
	assert_false(ok_of(r));
	assert_string_equal(str_at(r, "error", "code"), "role_required");
	cJSON_Delete(r);
	assert_int_equal(refusals, before_refusals + 1);
	assert_string_equal(last_refusal, "test.engineer role_required");
	r = call(url, "{\"v\":1,\"cmd\":\"test.engineer_quiet\","
	              "\"as_role\":\"support\"}");
	assert_string_equal(str_at(r, "error", "code"), "role_required");
	cJSON_Delete(r);
	assert_int_equal(refusals, before_refusals + 2);
	assert_int_equal(calls, before);

	/* a registered command with as_role support still runs */
	r = call(url, "{\"v\":1,\"cmd\":\"who\",\"as_role\":\"support\"}");
	assert_true(ok_of(r));
	cJSON_Delete(r);
	assert_int_equal(calls, before + 1);
}

static void
test_no_table(void **state)
{
	struct admin_socket_conf conf = {.url = "tcp://127.0.0.1:1"};
	struct admin_socket *s = NULL;

	(void)state;
	assert_int_equal(admin_socket_start(&conf, NULL, &s), -EINVAL);
	assert_null(s);
}

static void
test_tcp(void **state)
{
	struct admin_socket_conf conf = {.url = "tcp://127.0.0.1:0",
	                                 .commands = commands,
	                                 .refused = refused};
	struct admin_socket *s;
	char url[64];
	int port = 0;

	(void)state;
	/* nng's tcp listener cannot report port 0 through this API: pick a
	 * free port */
	for (int i = 0; i < 20; i++) {
		port = 20000 + (int)(getpid() % 20000) + i;
		snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
		conf.url = url;
		if (admin_socket_start(&conf, NULL, &s) == 0)
			break;
		s = NULL;
	}
	assert_non_null(s);
	round_trips(url, "alice", "support");
	gates(url);
	admin_socket_stop(s);
	/* nobody answers now */
	{
		cJSON *req = cJSON_Parse("{\"v\":1,\"cmd\":\"x\"}"), *rep;
		int rc = admin_call(url, req, 500, &rep);
		assert_true(rc == -ECONNREFUSED || rc == -ETIMEDOUT);
		cJSON_Delete(req);
	}
}

static void
test_ipc(void **state)
{
	struct admin_socket_conf conf = {.mode = "0660",
	                                 .engineer_group = "root",
	                                 .support_group = NULL,
	                                 .commands = commands};
	struct admin_socket *s;
	char dir[64], url[128], path[100];
	struct stat sb;
	int fd;

	(void)state;
	tu_mkdtemp(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/admin.sock", dir);
	snprintf(url, sizeof(url), "ipc://%s", path);

	/* a stale socket file (nobody listening) is replaced */
	{
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)),
		                 0);
		close(fd);
	}
	conf.url = url;
	assert_int_equal(admin_socket_start(&conf, NULL, &s), 0);
	assert_int_equal(stat(path, &sb), 0);
	assert_true(S_ISSOCK(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0660);

	/* a second daemon on the same live socket is refused */
	{
		struct admin_socket *s2 = NULL;
		assert_int_equal(admin_socket_start(&conf, NULL, &s2),
		                 -EADDRINUSE);
	}
	if (getuid() == 0) {
		/* identity from the socket, not from "actor" */
		round_trips(url, "root", "engineer");
	} else {
		fprintf(stderr, "not root: ipc role mapping for root not "
		                "checked\n");
	}
	admin_socket_stop(s);
	tu_rmrf(dir);
}

/* Child side (re-executed test binary; nng is not fork-safe): drops to
 * nobody:nogroup, calls url, prints the role reported or "refused". */
static int
child_call(const char *url)
{
	cJSON *req, *rep = NULL;
	const char *role = "refused";

	if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
		return 3;
	req = cJSON_Parse("{\"v\":1,\"cmd\":\"who\",\"actor\":\"root\"}");
	if (admin_call(url, req, 2000, &rep) == 0) {
		const char *u = str_at(rep, "result", "user");
		const char *code = str_at(rep, "error", "code");
		role = str_at(rep, "result", "role");
		if (code != NULL)
			role = code; /* refused by the daemon */
		else if (u == NULL || strcmp(u, "nobody") != 0)
			role = "wrong-user";
	}
	printf("%s", role ? role : "no-role");
	fflush(stdout);
	cJSON_Delete(rep);
	cJSON_Delete(req);
	return 0;
}

/* Runs one admin_call as nobody:nogroup; the role the daemon reported
 * ("none", "support", "engineer") or "refused" into out. */
static void
call_as_nobody(const char *url, char *out, size_t len)
{
	int pipefd[2], st;
	pid_t pid;
	ssize_t n;

	assert_int_equal(pipe(pipefd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pipefd[1], 1);
		close(pipefd[0]);
		execl("/proc/self/exe", "unit_net_admin", "--call-as-nobody",
		      url, (char *)NULL);
		_exit(5);
	}
	close(pipefd[1]);
	n = read(pipefd[0], out, len - 1);
	out[n > 0 ? n : 0] = '\0';
	close(pipefd[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* roles from unix groups; the socket mode keeps others out */
static void
test_ipc_roles(void **state)
{
	struct admin_socket_conf conf = {.mode = "0666",
	                                 .engineer_group = "root",
	                                 .support_group = "nogroup",
	                                 .commands = commands};
	struct admin_socket *s;
	char dir[64], url[128], role[32];

	(void)state;
	if (getuid() != 0 || getgrnam("nogroup") == NULL) {
		fprintf(stderr, "needs root and group nogroup: skipped\n");
		skip();
	}
	tu_mkdtemp(dir, sizeof(dir));
	chmod(dir, 0755);
	snprintf(url, sizeof(url), "ipc://%s/a.sock", dir);
	conf.url = url;

	assert_int_equal(admin_socket_start(&conf, NULL, &s), 0);
	call_as_nobody(url, role, sizeof(role));
	assert_string_equal(role, "support"); /* nogroup member, not "actor" */
	admin_socket_stop(s);

	/* in neither group: role none, refused before the handler */
	conf.support_group = NULL;
	assert_int_equal(admin_socket_start(&conf, NULL, &s), 0);
	int before = calls;
	call_as_nobody(url, role, sizeof(role));
	assert_string_equal(role, "role_required");
	assert_int_equal(calls, before);
	admin_socket_stop(s);

	/* 0600: nobody cannot even connect */
	conf.mode = "0600";
	conf.support_group = "nogroup";
	assert_int_equal(admin_socket_start(&conf, NULL, &s), 0);
	call_as_nobody(url, role, sizeof(role));
	assert_string_equal(role, "refused");
	admin_socket_stop(s);
	tu_rmrf(dir);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_no_table),
	    cmocka_unit_test(test_tcp),
	    cmocka_unit_test(test_ipc),
	    cmocka_unit_test(test_ipc_roles),
	};
	if (argc == 3 && strcmp(argv[1], "--call-as-nobody") == 0)
		return child_call(argv[2]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
