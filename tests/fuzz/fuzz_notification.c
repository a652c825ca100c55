/*
 * fuzz_notification.c - libFuzzer target for kasir-ingest's notification
 * parser / validator / signature check, its status table and its header
 * parsers (services/ingest/notification.c, status_consistency.c,
 * source.c).  Built only with -DKASIR_FUZZ=ON and clang
 * (tests/fuzz/CMakeLists.txt); seeded with tests/data/midtrans/notifications.
 *
 * Besides "no crash, no leak, no UB" it checks the parser's promises: an
 * accepted body has a valid order_id and a 128-hex signature_key, and a
 * refused one has a known reason code and hands nothing out.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "ingest.h"
#include "notification.h"
#include "util.h"

#define DOCS_KEY "askvnoibnosifnboseofinbofinfgbiufglnbfg"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct notif_key keys[] = {
	    {.id = "a", .secret = "0123456789abcdef", .secret_len = 16},
	    {.id = "docs",
	     .secret = DOCS_KEY,
	     .secret_len = sizeof(DOCS_KEY) - 1},
	};
	struct notification n = {0};
	struct notif_reject why = {0};
	char *copy, out[64];
	size_t idx;
	int r;

	if (size > 128 * 1024)
		return 0;
	/* The body exactly as bytes: not NUL-terminated on purpose (a heap
	 * copy of exactly size bytes, so ASan sees any overread). */
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	r = notification_parse(copy, size, &n, &why);
	if (r == 0) {
		if (!order_id_valid(n.order_id, NOTIF_ORDER_ID_MAX) ||
		    strlen(n.signature_key) != NOTIF_SIGNATURE_HEXLEN ||
		    n.status_code == NULL || n.gross_amount == NULL ||
		    n.transaction_status == NULL)
			abort();
		r = notification_verify(&n, keys, 2, &idx);
		if (r != 0 && r != KASIR_ESIG)
			abort();
		/* the status table: accept, or refuse with its own code */
		r = notification_check_status(&n, &why);
		if (r != 0 && (r != KASIR_EREJECT ||
		               why.code != NOTIF_INCONSISTENT_STATUS))
			abort();
		/* what the committer builds for the stream must print */
		char *txt = cJSON_PrintUnformatted(n.obj);
		free(txt);
		notification_fini(&n);
	} else {
		if (r != KASIR_EREJECT && r != -ENOMEM)
			abort();
		if (n.obj != NULL ||
		    strcmp(notif_error_code(why.code), "invalid") == 0)
			abort();
	}
	free(copy);

	/* Header parsers take NUL-terminated strings. */
	copy = malloc(size + 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	(void)notif_content_type_ok(copy);
	ingest_source_addr(NULL, "127.0.0.1", copy, copy, out, sizeof(out));
	{
		struct ingest_cidr c;
		struct ingest_proxies px = {.items = &c, .count = 1};

		if (ingest_cidr_parse("127.0.0.0/8", &c) == 0)
			ingest_source_addr(&px, "127.0.0.1", copy, copy, out,
			                   sizeof(out));
		(void)ingest_cidr_parse(copy, &c);
	}
	free(copy);
	return 0;
}
