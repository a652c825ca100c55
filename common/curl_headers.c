/*
 * curl_headers.c - see curl_headers.h.
 */
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "curl_headers.h"

bool
curl_headers_add(struct curl_slist **list, const char *header)
{
	struct curl_slist *l = curl_slist_append(*list, header);

	if (l == NULL)
		return false;
	*list = l;
	return true;
}

void
curl_headers_free(struct curl_slist *list)
{
	for (struct curl_slist *h = list; h != NULL; h = h->next)
		OPENSSL_cleanse(h->data, strlen(h->data));
	curl_slist_free_all(list);
}
