/*
 * admin_call.c - sends one admin request (JSON on the command line) to a
 * daemon's admin socket and prints the reply: the integration tests of
 * kasir-order, kasir-notifier and kasir-reconciler use it so they do not
 * depend on kasirctl.  Built once, as <build>/tests/admin-call.
 *
 *   admin-call URL '{"v":1,"cmd":"status","args":{}}'
 * Exit: 0 reply printed (ok true or false), 2 no answer / bad input.
 */
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "admin_socket.h"
#include "err.h"

int
main(int argc, char **argv)
{
	cJSON *req, *reply = NULL;
	char *text;
	int r;

	if (argc != 3) {
		fprintf(stderr, "usage: %s URL JSON\n", argv[0]);
		return 2;
	}
	req = cJSON_Parse(argv[2]);
	if (req == NULL) {
		fprintf(stderr, "request is not JSON\n");
		return 2;
	}
	r = admin_call(argv[1], req, 15000, &reply);
	cJSON_Delete(req);
	if (r < 0) {
		fprintf(stderr, "no answer: %s\n", kasir_strerror(r));
		return 2;
	}
	text = cJSON_PrintUnformatted(reply);
	printf("%s\n", text ? text : "null");
	free(text);
	cJSON_Delete(reply);
	return 0;
}
