/*
 * ratelimit.c - token buckets and a bounded per-key table (ratelimit.h).
 *
 * The per-key table is a chained hash table (SipHash-2-4 with a random key,
 * so remote peers choosing keys cannot force long chains) plus a doubly
 * linked LRU list.  Lookup, insert and eviction are O(1); memory is bounded
 * by max_keys entries.  One mutex guards the table.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "ratelimit.h"
#include "util.h"

#define RATELIMIT_KEY_MAX  64         /* longer keys are truncated */
#define RATELIMIT_KEYS_MAX (1u << 24) /* bound on max_keys itself */

/* Refills by elapsed time, then takes one token if there is one. */
static bool
bucket_take(double rate, double burst, double *tokens, int64_t *last_ms,
            int64_t now, int64_t *ret_wait_ms)
{
	if (now > *last_ms) {
		*tokens += (double)(now - *last_ms) * rate / 1000.0;
		if (*tokens > burst)
			*tokens = burst;
	}
	if (now > *last_ms)
		*last_ms = now;
	if (*tokens >= 1.0) {
		*tokens -= 1.0;
		return true;
	}
	if (ret_wait_ms != NULL) {
		double w = rate > 0 ? ceil((1.0 - *tokens) * 1000.0 / rate)
		                    : (double)INT64_MAX;
		*ret_wait_ms = w >= (double)INT64_MAX ? INT64_MAX : (int64_t)w;
		if (*ret_wait_ms < 1)
			*ret_wait_ms = 1;
	}
	return false;
}

void
tbucket_init(struct tbucket *b, double rate, double burst)
{
	b->rate = rate > 0 ? rate : 0;
	b->burst = burst >= 1 ? burst : 1;
	b->tokens = b->burst;
	b->last_ms = now_mono_ms();
	pthread_mutex_init(&b->lock, NULL);
}

bool
tbucket_take(struct tbucket *b, int64_t *ret_wait_ms)
{
	bool ok;

	pthread_mutex_lock(&b->lock);
	ok = bucket_take(b->rate, b->burst, &b->tokens, &b->last_ms,
	                 now_mono_ms(), ret_wait_ms);
	pthread_mutex_unlock(&b->lock);
	return ok;
}

struct rl_entry {
	struct rl_entry *hnext;               /* hash chain */
	struct rl_entry *lru_prev, *lru_next; /* most recent at head */
	uint64_t hash;
	double tokens;
	int64_t last_ms;
	char key[RATELIMIT_KEY_MAX + 1];
};

struct ratelimit_table {
	pthread_mutex_t lock;
	double rate, burst;
	unsigned max_keys, count;
	size_t nbuckets; /* power of two */
	struct rl_entry **buckets;
	struct rl_entry *lru_head, *lru_tail;
	uint64_t k0, k1; /* SipHash key */
};

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
	do {                                                                   \
		v0 += v1;                                                      \
		v1 = ROTL(v1, 13);                                             \
		v1 ^= v0;                                                      \
		v0 = ROTL(v0, 32);                                             \
		v2 += v3;                                                      \
		v3 = ROTL(v3, 16);                                             \
		v3 ^= v2;                                                      \
		v0 += v3;                                                      \
		v3 = ROTL(v3, 21);                                             \
		v3 ^= v0;                                                      \
		v2 += v1;                                                      \
		v1 = ROTL(v1, 17);                                             \
		v1 ^= v2;                                                      \
		v2 = ROTL(v2, 32);                                             \
	} while (0)

/* SipHash-2-4 of len bytes. */
static uint64_t
siphash(uint64_t k0, uint64_t k1, const uint8_t *in, size_t len)
{
	uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
	uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
	uint64_t v3 = 0x7465646279746573ULL ^ k1;
	uint64_t m, b = (uint64_t)len << 56;
	size_t i, tail = len & 7;

	for (i = 0; i + 8 <= len; i += 8) {
		m = 0;
		for (int k = 0; k < 8; k++)
			m |= (uint64_t)in[i + (size_t)k] << (8 * k);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	for (size_t k = 0; k < tail; k++)
		b |= (uint64_t)in[i + k] << (8 * k);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

int
ratelimit_table_new(double rate, double burst, unsigned max_keys,
                    struct ratelimit_table **ret)
{
	struct ratelimit_table *t;
	uint64_t key[2];

	if (!(rate > 0) || !(burst >= 1) || max_keys == 0 ||
	    max_keys > RATELIMIT_KEYS_MAX)
		return -EINVAL;
	if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key))
		return errno != 0 ? -errno : -EIO;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return -ENOMEM;
	t->nbuckets = 16;
	while (t->nbuckets < max_keys)
		t->nbuckets <<= 1;
	if ((t->buckets = calloc(t->nbuckets, sizeof(*t->buckets))) == NULL) {
		free(t);
		return -ENOMEM;
	}
	pthread_mutex_init(&t->lock, NULL);
	t->rate = rate;
	t->burst = burst;
	t->max_keys = max_keys;
	t->k0 = key[0];
	t->k1 = key[1];
	*ret = t;
	return 0;
}

void
ratelimit_table_free(struct ratelimit_table *t)
{
	struct rl_entry *e, *next;

	if (t == NULL)
		return;
	for (e = t->lru_head; e != NULL; e = next) {
		next = e->lru_next;
		free(e);
	}
	free(t->buckets);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

static void
lru_unlink(struct ratelimit_table *t, struct rl_entry *e)
{
	if (e->lru_prev != NULL)
		e->lru_prev->lru_next = e->lru_next;
	else
		t->lru_head = e->lru_next;
	if (e->lru_next != NULL)
		e->lru_next->lru_prev = e->lru_prev;
	else
		t->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void
lru_push_head(struct ratelimit_table *t, struct rl_entry *e)
{
	e->lru_prev = NULL;
	e->lru_next = t->lru_head;
	if (t->lru_head != NULL)
		t->lru_head->lru_prev = e;
	t->lru_head = e;
	if (t->lru_tail == NULL)
		t->lru_tail = e;
}

static void
hash_unlink(struct ratelimit_table *t, struct rl_entry *e)
{
	struct rl_entry **pp = &t->buckets[e->hash & (t->nbuckets - 1)];

	while (*pp != NULL && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp == e)
		*pp = e->hnext;
	e->hnext = NULL;
}

/* Finds key, or makes room (evicting the least recently used entry) and
 * inserts it with a full bucket.  NULL only when out of memory. */
static struct rl_entry *
table_get(struct ratelimit_table *t, const char *key, int64_t now)
{
	size_t len = strnlen(key, RATELIMIT_KEY_MAX);
	uint64_t h = siphash(t->k0, t->k1, (const uint8_t *)key, len);
	struct rl_entry **slot = &t->buckets[h & (t->nbuckets - 1)];
	struct rl_entry *e;

	for (e = *slot; e != NULL; e = e->hnext)
		if (e->hash == h && strncmp(e->key, key, len) == 0 &&
		    e->key[len] == '\0') {
			lru_unlink(t, e);
			lru_push_head(t, e);
			return e;
		}
	if (t->count >= t->max_keys) {
		e = t->lru_tail; /* reuse the evicted entry */
		lru_unlink(t, e);
		hash_unlink(t, e);
	} else {
		if ((e = malloc(sizeof(*e))) == NULL)
			return NULL;
		t->count++;
	}
	memset(e, 0, sizeof(*e));
	memcpy(e->key, key, len);
	e->key[len] = '\0';
	e->hash = h;
	e->tokens = t->burst;
	e->last_ms = now;
	e->hnext = *slot;
	*slot = e;
	lru_push_head(t, e);
	return e;
}

bool
ratelimit_take(struct ratelimit_table *t, const char *key, int64_t *ret_wait_ms)
{
	struct rl_entry *e;
	int64_t now = now_mono_ms();
	bool ok;

	pthread_mutex_lock(&t->lock);
	if ((e = table_get(t, key, now)) == NULL) {
		/* Out of memory: refuse (fail closed) and retry soon. */
		pthread_mutex_unlock(&t->lock);
		if (ret_wait_ms != NULL)
			*ret_wait_ms = 1000;
		return false;
	}
	ok = bucket_take(t->rate, t->burst, &e->tokens, &e->last_ms, now,
	                 ret_wait_ms);
	pthread_mutex_unlock(&t->lock);
	return ok;
}
