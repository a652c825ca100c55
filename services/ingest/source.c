/*
 * source.c - which address a notification is attributed to.
 *
 * The TCP peer, unless that peer is one of ingest.trusted_proxies (the
 * reverse proxy terminating TLS), then the LAST X-Forwarded-For entry (the
 * one the proxy itself appended; earlier ones are whatever the client
 * claimed) or, without that header, X-Real-IP.  A header value that is not
 * a valid address is ignored and the peer is used.
 */
#include <arpa/inet.h>
#include <string.h>

#include "ingest.h"
#include "util.h"

/* Parses text into family + 16 bytes; IPv4-mapped IPv6 becomes IPv4. */
static bool
addr_parse(const char *s, int *ret_family, uint8_t addr[16])
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
	                                   0, 0, 0, 0, 0xff, 0xff};
	uint8_t a6[16];

	if (inet_pton(AF_INET, s, addr) == 1) {
		*ret_family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, s, a6) != 1)
		return false;
	if (memcmp(a6, mapped, sizeof(mapped)) == 0) {
		memcpy(addr, a6 + 12, 4);
		*ret_family = AF_INET;
	} else {
		memcpy(addr, a6, 16);
		*ret_family = AF_INET6;
	}
	return true;
}

static bool
cidr_contains(const struct ingest_cidr *c, int family, const uint8_t *addr)
{
	unsigned full, rest;

	if (c->family != family)
		return false;
	full = c->prefix / 8;
	rest = c->prefix % 8;
	if (memcmp(c->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (c->addr[full] & mask) == (addr[full] & mask);
}

bool
ingest_addr_trusted(const struct ingest_proxies *trusted, const char *addr)
{
	uint8_t a[16];
	int family;

	if (trusted == NULL || trusted->count == 0 || addr == NULL ||
	    !addr_parse(addr, &family, a))
		return false;
	for (size_t i = 0; i < trusted->count; i++)
		if (cidr_contains(&trusted->items[i], family, a))
			return true;
	return false;
}

/* Normalised text of a valid address into out; false when s is not one. */
static bool
addr_normalise(const char *s, char *out, size_t out_len)
{
	char buf[INET6_ADDRSTRLEN];
	uint8_t a[16];
	int family;

	if (!addr_parse(s, &family, a) ||
	    inet_ntop(family, a, buf, sizeof(buf)) == NULL)
		return false;
	kasir_strlcpy(out, buf, out_len);
	return true;
}

/* The last comma-separated entry of an X-Forwarded-For value, trimmed,
 * into buf; false when empty or too long to be an address. */
static bool
xff_last(const char *xff, char *buf, size_t len)
{
	const char *start = strrchr(xff, ',');
	const char *end;
	size_t n;

	start = start != NULL ? start + 1 : xff;
	while (*start == ' ' || *start == '\t')
		start++;
	end = start + strlen(start);
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	n = (size_t)(end - start);
	if (n == 0 || n >= len)
		return false;
	memcpy(buf, start, n);
	buf[n] = '\0';
	return true;
}

void
ingest_source_addr(const struct ingest_proxies *trusted, const char *peer,
                   const char *xff, const char *xreal, char *out,
                   size_t out_len)
{
	char buf[INET6_ADDRSTRLEN + 1];

	if (ingest_addr_trusted(trusted, peer)) {
		if (xff != NULL && xff_last(xff, buf, sizeof(buf)) &&
		    addr_normalise(buf, out, out_len))
			return;
		if (xff == NULL && xreal != NULL &&
		    xff_last(xreal, buf, sizeof(buf)) &&
		    addr_normalise(buf, out, out_len))
			return;
	}
	/* MHD always gives an IP peer; "0.0.0.0" only marks "unknown" so
	 * the inet column never refuses a row. */
	if (peer == NULL || !addr_normalise(peer, out, out_len))
		kasir_strlcpy(out, "0.0.0.0", out_len);
}
