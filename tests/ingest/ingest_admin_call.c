/*
 * ingest_admin_call - test helper: sends one admin socket request and
 * prints the reply (kasirctl does this for operators; the integration
 * tests use this small tool so they do not depend on kasirctl).
 *
 *   ingest_admin_call URL CMD [ARGS_JSON]
 *   -> prints the reply object on stdout; exit 0 when it arrived, 1 if not
 */
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "admin_socket.h"
#include "err.h"

int
main(int argc, char **argv)
{
	cJSON *req, *args, *reply = NULL;
	char *txt;
	int r;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: %s URL CMD [ARGS_JSON]\n", argv[0]);
		return 2;
	}
	args = argc == 4 ? cJSON_Parse(argv[3]) : cJSON_CreateObject();
	req = cJSON_CreateObject();
	if (args == NULL || req == NULL) {
		fprintf(stderr, "bad ARGS_JSON\n");
		return 2;
	}
	cJSON_AddNumberToObject(req, "v", ADMIN_PROTO_VERSION);
	cJSON_AddStringToObject(req, "cmd", argv[2]);
	cJSON_AddItemToObject(req, "args", args);
	cJSON_AddStringToObject(req, "actor", "ingest-test");
	r = admin_call(argv[1], req, 10000, &reply);
	cJSON_Delete(req);
	if (r < 0) {
		fprintf(stderr, "admin_call %s: %s\n", argv[1],
		        kasir_strerror(r));
		return 1;
	}
	txt = cJSON_PrintUnformatted(reply);
	printf("%s\n", txt != NULL ? txt : "null");
	free(txt);
	cJSON_Delete(reply);
	return 0;
}
