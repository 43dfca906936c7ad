#include <malloc.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "secmem.h"

/* explicit_bzero, not OPENSSL_cleanse: both survive the optimiser, but
 * OpenSSL's is a loop of 8-byte stores, five times slower on the 16 KiB
 * record buffers OpenSSL frees after each record (SSL_MODE_RELEASE_BUFFERS)
 * than glibc's memset. */
void secmem_wipe(void *p, size_t n)
{
	explicit_bzero(p, n);
}

/* In front of each secmem block; the union keeps the block after it
 * aligned as malloc's own. */
union secmem_hdr {
	max_align_t align;
	size_t size;
};

void *secmem_malloc(size_t n)
{
	if (n > SIZE_MAX - sizeof(union secmem_hdr))
		return NULL;
	union secmem_hdr *h = malloc(sizeof(*h) + n);
	if (h == NULL)
		return NULL;
	h->size = n;
	return h + 1;
}

void secmem_free(void *p)
{
	if (p == NULL)
		return;
	union secmem_hdr *h = (union secmem_hdr *)p - 1;
	secmem_wipe(p, h->size);
	free(h);
}

/* Never libc's realloc: when it moves a block, the old copy is freed
 * unscrubbed. */
void *secmem_realloc(void *p, size_t n)
{
	if (p == NULL)
		return secmem_malloc(n);
	union secmem_hdr *h = (union secmem_hdr *)p - 1;
	if (n <= h->size) {
		/* shrinking keeps the block: only the tail is no longer used */
		secmem_wipe((char *)p + n, h->size - n);
		h->size = n;
		return p;
	}
	void *q = secmem_malloc(n);
	if (q == NULL)
		return NULL;
	memcpy(q, p, h->size);
	secmem_free(p);
	return q;
}

/*
 * OpenSSL's hooks keep no header: a block that crosses between OpenSSL and
 * plain malloc/free (allocated by a library OpenSSL calls, or freed by a
 * caller with free) must still be handled right, so a block's size is
 * asked of malloc itself. malloc_usable_size is at least what was asked
 * for; ASan and valgrind answer exactly that. Zero-sized requests return
 * NULL, as OpenSSL's own CRYPTO_malloc does.
 */
static void *secmem_ossl_malloc(size_t n, const char *file, int line)
{
	(void)file, (void)line;
	return n == 0 ? NULL : malloc(n);
}

static void secmem_ossl_free(void *p, const char *file, int line)
{
	(void)file, (void)line;
	if (p == NULL)
		return;
	secmem_wipe(p, malloc_usable_size(p));
	free(p);
}

static void *secmem_ossl_realloc(void *p, size_t n, const char *file, int line)
{
	if (p == NULL)
		return secmem_ossl_malloc(n, file, line);
	if (n == 0) {
		secmem_ossl_free(p, file, line);
		return NULL;
	}
	size_t old = malloc_usable_size(p);
	void *q = malloc(n);
	if (q == NULL)
		return NULL;
	memcpy(q, p, old < n ? old : n);
	secmem_ossl_free(p, file, line);
	return q;
}

int secmem_init(void)
{
	return CRYPTO_set_mem_functions(secmem_ossl_malloc, secmem_ossl_realloc, secmem_ossl_free)
	           ? 0
	           : -1;
}
