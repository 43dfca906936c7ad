/*
 * Identity folding for policy rules. A server compares accounts after
 * preparing them (nodeprep, RFC 3920; PRECIS, RFC 8265) and virtual hosts
 * after IDNA, so many spellings reach one account; a rule compared with the
 * raw bytes can be walked around with any of them. The Unicode data comes
 * from utf8proc and libidn2, which track Unicode releases: tables of our
 * own would be a partial copy that falls behind.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idn2.h>
#include <utf8proc.h>

#include "ident.h"

/* NFKC + full case folding + default ignorables removed: nodeprep's B.1
 * (mapped to nothing), B.2 (case folding) and NFKC in one pass. Full case
 * folding turns "ß" into "ss", as nodeprep's B.2 does and Prosody compares;
 * PRECIS lower-cases instead and keeps "ß", so a PRECIS server holds
 * "straße" and "strasse" apart where this fold joins them: a deny rule
 * then errs toward matching. STABLE: Unicode's versioning stability rules
 * are kept, as utf8proc's own NFKC_Casefold does. One pass is a fixed
 * point: utf8proc case-folds inside the recursive decomposition, and a
 * sweep of every code point, alone and beside combining marks, found no
 * input whose fold folds again to something else. Checked against
 * Prosody 0.12's nodeprep code point by code point, the one difference
 * left is five CJK compatibility ideographs (U+2F868, 2F874, 2F91F, 2F95F,
 * 2F9BF) whose decomposition Unicode corrected after 3.2, the version
 * stringprep is frozen at; current Unicode, as a PRECIS server, wins. */
#define IDENT_USER_FOLD                                                                            \
	(UTF8PROC_COMPAT | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD | UTF8PROC_IGNORE | UTF8PROC_STABLE)

/* RFC 3454 B.1 maps U+1806 MONGOLIAN TODO SOFT HYPHEN to nothing, and
 * Prosody's nodeprep reads "mal\u1806lory" as "mallory"; Unicode does not
 * list it as default-ignorable, so IGNORE would keep it. It becomes a soft
 * hyphen, which IGNORE drops. The only code point of B.1 that IGNORE
 * misses; called by utf8proc for each input code point. */
static utf8proc_int32_t ident_nodeprep_b1(utf8proc_int32_t cp, void *data)
{
	(void)data;
	return cp == 0x1806 ? 0x00AD : cp;
}

/* Longest DNS label (RFC 1035 §2.3.4). */
#define IDENT_LABEL_MAX 63

/* Characters an fnmatch pattern gives a meaning to. */
static bool ident_is_glob(char c)
{
	return c == '*' || c == '?' || c == '[' || c == ']' || c == '\\';
}

static bool ident_has_glob(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (ident_is_glob(s[i]))
			return true;
	return false;
}

/* Copies len bytes and a NUL into out; -1 (out "") when they do not fit. */
static int ident_put(char *out, size_t outlen, const char *s, size_t len)
{
	if (len >= outlen) {
		out[0] = '\0';
		return -1;
	}
	memcpy(out, s, len);
	out[len] = '\0';
	return 0;
}

/* Whether the input code point cp keeps a name from being compared:
 * unassigned ones get a meaning (and a folding) in a later Unicode
 * version, and both nodeprep and PRECIS refuse controls. */
static bool ident_refused_input(utf8proc_int32_t cp)
{
	utf8proc_category_t cat = utf8proc_category(cp);
	return cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_CC;
}

/* Whether the folded code point cp is refused: nodeprep prohibits spaces
 * and line separators (stringprep C.1, C.2) and, in its own table (RFC
 * 3920 A.5), the ASCII that delimits a JID or breaks XML. Checked after
 * folding, because NFKC makes "＠" an '@' and U+00A0 a space. */
static bool ident_refused_output(utf8proc_int32_t cp)
{
	if (cp < 0x80 && cp != 0 && strchr("\"&'/:<>@", (int)cp) != NULL)
		return true;
	utf8proc_category_t cat = utf8proc_category(cp);
	return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
	       cat == UTF8PROC_CATEGORY_ZP || cat == UTF8PROC_CATEGORY_CC;
}

/* Walks len bytes of UTF-8 and asks refused() about each code point.
 * Returns 0, or -1 at the first invalid sequence (utf8proc_iterate
 * refuses overlong forms, surrogates and values past U+10FFFF) or refused
 * code point. */
static int ident_scan(const unsigned char *s, size_t len, bool (*refused)(utf8proc_int32_t))
{
	size_t i = 0;
	while (i < len) {
		utf8proc_int32_t cp;
		utf8proc_ssize_t n = utf8proc_iterate(s + i, (utf8proc_ssize_t)(len - i), &cp);
		if (n <= 0 || refused(cp))
			return -1;
		i += (size_t)n;
	}
	return 0;
}

int ident_fold_user(const char *in, char *out, size_t outlen)
{
	if (outlen == 0)
		return -1;
	out[0] = '\0';
	const unsigned char *s = (const unsigned char *)in;
	size_t len = strlen(in);
	if (ident_scan(s, len, ident_refused_input) < 0)
		return -1;

	utf8proc_uint8_t *folded = NULL;
	utf8proc_ssize_t n = utf8proc_map_custom(s, (utf8proc_ssize_t)len, &folded, IDENT_USER_FOLD,
	                                         ident_nodeprep_b1, NULL);
	if (n < 0)
		return -1;
	int rc = ident_scan(folded, (size_t)n, ident_refused_output);
	if (rc == 0)
		rc = ident_put(out, outlen, (const char *)folded, (size_t)n);
	free(folded);
	return rc;
}

/* Whether s is ASCII that IDNA would only lower-case: letters, digits,
 * '-', '_' and '.', and no label that claims to be an A-label ("xn--"),
 * which libidn2 must check. */
static bool ident_is_plain_domain(const char *s)
{
	for (size_t i = 0; s[i]; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
		if ((i == 0 || s[i - 1] == '.') && strncasecmp(s + i, "xn--", 4) == 0)
			return false;
	}
	return true;
}

/* Lower-cases buf in place and checks it is a DNS name: labels of 1 to 63
 * letters, digits, '-' or '_', at most 253 bytes. libidn2 without STD3
 * rules passes other ASCII (space, '/', '@') through, which no host name
 * has and which would make a JID ambiguous. */
static int ident_check_dns(char *buf, size_t len)
{
	size_t label = 0;
	if (len == 0 || len > IDENT_DOMAIN_MAX - 3)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = buf[i];
		if (c >= 'A' && c <= 'Z')
			buf[i] = c = (char)(c - 'A' + 'a');
		if (c == '.') {
			if (label == 0)
				return -1;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return -1;
		if (++label > IDENT_LABEL_MAX)
			return -1;
	}
	return label == 0 ? -1 : 0;
}

/* An IPv6 literal "[...]" (RFC 7622 §3.2 allows an IP-literal domainpart)
 * in inet_ntop's text form, so "[0:0::1]" and "[::1]" compare equal.
 * Writes it without the brackets into addr (INET6_ADDRSTRLEN bytes). */
static int ident_fold_ipv6(const char *in, size_t len, char *addr)
{
	char inner[INET6_ADDRSTRLEN];
	struct in6_addr a;
	if (len < 3 || in[len - 1] != ']' || len - 2 >= sizeof(inner))
		return -1;
	memcpy(inner, in + 1, len - 2);
	inner[len - 2] = '\0';
	if (inet_pton(AF_INET6, inner, &a) != 1 ||
	    inet_ntop(AF_INET6, &a, addr, INET6_ADDRSTRLEN) == NULL)
		return -1;
	return 0;
}

/*
 * The ASCII form of a domain that is not plain ASCII, into buf (buflen
 * bytes). UTS #46 transitional mapping, which is what Prosody's nameprep
 * (IDNA2003) does: "faß.de" is "fass.de", final sigma is sigma, ZWJ and
 * ZWNJ vanish. Non-transitional (IDNA2008) mapping gives "faß.de" an
 * A-label of its own, and a rule for "*@fass.de" would miss a client
 * that Prosody serves as fass.de. A-labels are then decoded and mapped
 * again, so "xn--fa-hia.de", which an IDNA2008 server takes for "faß.de",
 * folds the same: between the two readings, the one that joins more.
 * The first pass maps first because only it reads fullwidth "ｘｎ－－".
 * Returns 0, or -1 when libidn2 refuses the name or it does not fit.
 */
static int ident_idna(const char *in, char *buf, size_t buflen)
{
	const int flags = IDN2_NFC_INPUT | IDN2_TRANSITIONAL;
	char *mapped = NULL, *unicode = NULL, *ascii = NULL;
	int rc = idn2_to_ascii_8z(in, &mapped, flags);
	if (rc == IDN2_OK)
		rc = idn2_to_unicode_8z8z(mapped, &unicode, 0);
	if (rc == IDN2_OK)
		rc = idn2_to_ascii_8z(unicode, &ascii, flags);
	int ret = rc == IDN2_OK ? ident_put(buf, buflen, ascii, strlen(ascii)) : -1;
	idn2_free(mapped);
	idn2_free(unicode);
	idn2_free(ascii);
	return ret;
}

int ident_fold_domain(const char *in, char *out, size_t outlen)
{
	if (outlen == 0)
		return -1;
	out[0] = '\0';
	size_t len = strlen(in);
	char buf[IDENT_DOMAIN_MAX];

	if (len > 0 && in[0] == '[') {
		char addr[INET6_ADDRSTRLEN];
		if (ident_fold_ipv6(in, len, addr) < 0)
			return -1;
		buf[0] = '[';
		strcpy(buf + 1, addr);
		strcat(buf, "]");
		return ident_put(out, outlen, buf, strlen(buf));
	}

	if (ident_is_plain_domain(in)) {
		if (ident_put(buf, sizeof(buf), in, len) < 0)
			return -1;
	} else {
		if (ident_idna(in, buf, sizeof(buf)) < 0)
			return -1;
		len = strlen(buf);
	}
	/* The root's empty label: "lab.test." is the host "lab.test". Only one:
	 * after that an empty label is an error. */
	if (len > 0 && buf[len - 1] == '.')
		buf[--len] = '\0';
	if (ident_check_dns(buf, len) < 0)
		return -1;
	return ident_put(out, outlen, buf, len);
}

/* Folds one label of a pattern's domain that holds glob characters, as a
 * user (the glob characters pass unchanged). It must fold to ASCII:
 * identity domains are compared as A-labels, which a glob over a label's
 * Unicode form could never match, and a rule that cannot match is a
 * mistake to report, not to keep. */
static int ident_fold_glob_label(const char *label, char *out, size_t outlen)
{
	if (ident_fold_user(label, out, outlen) < 0)
		return -1;
	for (const char *p = out; *p; p++)
		if ((unsigned char)*p >= 0x80) {
			out[0] = '\0';
			return -1;
		}
	return 0;
}

/* Folds a pattern's domain part d label by label into out, so that in
 * "*.ｌａｂ.test" the glob label stays a glob and the others become what
 * ident_fold_domain() makes of them. */
static int ident_fold_pattern_domain(const char *d, char *out, size_t outlen)
{
	size_t o = 0;
	out[0] = '\0';
	while (*d) {
		size_t n = strcspn(d, ".");
		char label[IDENT_DOMAIN_MAX], folded[IDENT_DOMAIN_MAX];
		if (ident_put(label, sizeof(label), d, n) < 0)
			return -1;
		int rc = ident_has_glob(label, n)
		             ? ident_fold_glob_label(label, folded, sizeof(folded))
		             : ident_fold_domain(label, folded, sizeof(folded));
		if (rc < 0)
			return -1;
		size_t f = strlen(folded);
		if (o + f + 1 >= outlen)
			return -1;
		memcpy(out + o, folded, f);
		o += f;
		d += n;
		/* a trailing dot ends the name, as in ident_fold_domain() */
		if (*d == '.' && *++d != '\0')
			out[o++] = '.';
	}
	out[o] = '\0';
	return o == 0 ? -1 : 0;
}

int ident_fold_pattern(const char *in, char *out, size_t outlen)
{
	if (outlen == 0)
		return -1;
	out[0] = '\0';
	const char *at = strrchr(in, '@');
	if (at == NULL)
		return ident_fold_user(in, out, outlen);

	char user[IDENT_PATTERN_MAX], fuser[IDENT_USER_MAX], fdomain[IDENT_PATTERN_MAX];
	if (ident_put(user, sizeof(user), in, (size_t)(at - in)) < 0 ||
	    ident_fold_user(user, fuser, sizeof(fuser)) < 0)
		return -1;

	const char *d = at + 1;
	size_t dlen = strlen(d);
	char addr[INET6_ADDRSTRLEN];
	if (d[0] == '[' && ident_fold_ipv6(d, dlen, addr) == 0) {
		/* "[::1]" is an address, not a bracket expression: escaped, so
		 * fnmatch compares the brackets as characters. */
		strcpy(fdomain, "\\[");
		strcat(fdomain, addr);
		strcat(fdomain, "\\]");
	} else if (!ident_has_glob(d, dlen)) {
		if (ident_fold_domain(d, fdomain, sizeof(fdomain)) < 0)
			return -1;
	} else if (ident_fold_pattern_domain(d, fdomain, sizeof(fdomain)) < 0) {
		return -1;
	}

	size_t u = strlen(fuser), n = strlen(fdomain);
	if (u + 1 + n >= outlen)
		return -1;
	memcpy(out, fuser, u);
	out[u] = '@';
	memcpy(out + u + 1, fdomain, n + 1);
	return 0;
}
