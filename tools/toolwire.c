/* The benchmark tools' shared wire helpers (toolwire.h). */
#include "toolwire.h"

#include <openssl/evp.h>
#include <string.h>

size_t toolwire_b64_enc(char *dst, size_t cap, const unsigned char *src, size_t n)
{
	if ((n + 2) / 3 * 4 + 1 > cap)
		return 0;
	return (size_t)EVP_EncodeBlock((unsigned char *)dst, src, (int)n);
}

int toolwire_b64_dec(unsigned char *dst, size_t cap, const char *src, size_t n)
{
	if (n % 4 || n / 4 * 3 + 1 > cap)
		return -1;
	int len = EVP_DecodeBlock(dst, (const unsigned char *)src, (int)n);
	if (len < 0)
		return -1;
	while (n > 0 && src[n - 1] == '=') {
		len--;
		n--;
	}
	dst[len] = 0;
	return len;
}

const char *toolwire_scram_attr(const char *msg, char k, size_t *len)
{
	for (const char *p = msg; *p;) {
		if (p[0] == k && p[1] == '=') {
			const char *e = strchr(p, ',');
			*len = e ? (size_t)(e - p - 2) : strlen(p + 2);
			return p + 2;
		}
		const char *e = strchr(p, ',');
		if (!e)
			break;
		p = e + 1;
	}
	return NULL;
}
