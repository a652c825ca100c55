/*
 * curl_headers.h - libcurl header lists that may hold a secret (an
 * Authorization header: the Midtrans server key, the WhatsApp token).
 *
 * libcurl copies each header into its list and frees the copies without
 * wiping them; every list here is built with curl_headers_add() (an
 * allocation failure keeps the list and says so) and ended with
 * curl_headers_free() (each copy wiped, then freed).
 */
#ifndef KASIR_CURL_HEADERS_H
#define KASIR_CURL_HEADERS_H

#include <stdbool.h>

struct curl_slist;

/* Appends a copy of header to *list; false when out of memory (*list is
 * kept as it was). */
bool curl_headers_add(struct curl_slist **list, const char *header);
/* Wipes every header of list, then frees it.  Accepts NULL. */
void curl_headers_free(struct curl_slist *list);

#endif
