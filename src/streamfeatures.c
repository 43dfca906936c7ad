#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "streamfeatures.h"
#include "xml.h"

#define NS_COMPRESS "http://jabber.org/features/compress"
#define NS_SASL_CB "urn:xmpp:sasl-cb:0"
#define NS_IQ_AUTH "http://jabber.org/features/iq-auth"
/* Kept children are written where the default namespace may be
 * jabber:client or the streams namespace (features written unprefixed):
 * compared with this impossible URI, each declares its own. */
#define STREAMFEATURES_NO_NS "\x01"

static void streamfeatures_free_buf(struct buf *b)
{
	if (b != NULL) {
		buf_free(b);
		free(b);
	}
}

void streamfeatures_free(struct streamfeatures *f)
{
	for (size_t i = 0; i < f->nmechs; i++)
		free(f->mechs[i]);
	for (size_t i = 0; i < f->nsasl2_mechs; i++)
		free(f->sasl2_mechs[i]);
	for (size_t i = 0; i < f->nfast_mechs; i++)
		free(f->fast_mechs[i]);
	for (size_t i = 0; i < f->ninline; i++)
		free(f->inline_names[i]);
	streamfeatures_free_buf(f->kept);
	streamfeatures_free_buf(f->sasl2_kept);
	streamfeatures_free_buf(f->inline_kept);
	memset(f, 0, sizeof(*f));
}

/* A SASL mechanism name (RFC 4422 3.1): 1-20 of A-Z 0-9 - _. Lower case
 * is accepted and upper-cased: some servers write it so. */
static char *streamfeatures_mech_name(const char *s, size_t len)
{
	while (len > 0 && isspace((unsigned char)*s))
		s++, len--;
	while (len > 0 && isspace((unsigned char)s[len - 1]))
		len--;
	if (len == 0 || len > MAX_MECH_NAME)
		return NULL;
	char *r = malloc(len + 1);
	if (r == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)toupper((unsigned char)s[i]);
		if (!(isupper(c) || isdigit(c) || c == '-' || c == '_')) {
			free(r);
			return NULL;
		}
		r[i] = (char)c;
	}
	r[len] = '\0';
	return r;
}

static bool streamfeatures_listed(char *const *list, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], name) == 0)
			return true;
	return false;
}

/* Collects the <mechanism> children of e (SASL1 or SASL2) into list, the
 * one list of that kind with its own truncated flag. Junk names are not
 * offered on; a name already listed is not listed again (repeated
 * elements would otherwise fill the list with one name and cut the
 * others); past MAX_MECHANISMS distinct names the rest are cut. */
static void streamfeatures_mechs(const struct xml_elem *e, const char *ns, char **list, size_t *n,
                                 bool *truncated)
{
	for (const struct xml_elem *m = e->children; m != NULL; m = m->next) {
		if (!xml_is(m, ns, "mechanism"))
			continue;
		char *name = streamfeatures_mech_name(m->text ? m->text : "", m->textlen);
		if (name == NULL)
			continue;
		if (streamfeatures_listed(list, *n, name)) {
			free(name);
			continue;
		}
		if (*n == MAX_MECHANISMS) {
			*truncated = true;
			free(name);
			continue;
		}
		list[(*n)++] = name;
	}
}

/* FAST in any version (urn:xmpp:fast:N). Only version 0 inside SASL2's
 * <inline> is carried, rebuilt; any other, or anywhere else, is not passed
 * on: its mechanisms and tls-0rtt would reach the client unfiltered. */
static bool streamfeatures_is_fast_ns(const struct xml_elem *k)
{
	return strncmp(k->ns, "urn:xmpp:fast:", 14) == 0;
}

/* The log's name for an inline feature: the XEPs' short names for those
 * the proxy knows, else the element's local name (cut, and only name
 * characters: it is the server's text). Each name is listed once. */
static int streamfeatures_inline_name(struct streamfeatures *f, const struct xml_elem *k)
{
	const char *name = xml_is(k, XML_NS_BIND2, "bind")           ? "bind2"
	                   : strncmp(k->ns, "urn:xmpp:sm:", 12) == 0 ? "sm"
	                   : xml_is(k, XML_NS_FAST, "fast")          ? "fast"
	                   : streamfeatures_is_fast_ns(k)            ? "fast_unsupported"
	                                                             : k->name;
	size_t n = strnlen(name, MAX_INLINE_NAME);
	char *copy = malloc(n + 1);
	if (copy == NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		copy[i] = isalnum((unsigned char)name[i]) || name[i] == '-' || name[i] == '_'
		              ? name[i]
		              : '_';
	copy[n] = '\0';
	if (f->ninline == MAX_INLINE || streamfeatures_listed(f->inline_names, f->ninline, copy)) {
		free(copy);
		return 0;
	}
	f->inline_names[f->ninline++] = copy;
	return 0;
}

/* SASL2's <inline>: each child named for the log; FAST's mechanisms are
 * read like the others (its attributes, such as tls-0rtt, are not kept:
 * the client's TLS ends at the proxy), the other children kept whole. */
static int streamfeatures_inline(struct streamfeatures *f, const struct xml_elem *in)
{
	f->sasl2_inline = true;
	for (const struct xml_elem *k = in->children; k != NULL; k = k->next) {
		if (streamfeatures_inline_name(f, k) < 0)
			return -1;
		if (xml_is(k, XML_NS_FAST, "fast")) {
			f->fast = true;
			streamfeatures_mechs(k, XML_NS_FAST, f->fast_mechs, &f->nfast_mechs,
			                     &f->fast_truncated);
		} else if (streamfeatures_is_fast_ns(k)) {
			continue; /* another FAST version: not carried */
		} else if (xml_write(f->inline_kept, k, XML_NS_SASL2) < 0) {
			return -1;
		}
	}
	return 0;
}

int streamfeatures_parse(struct streamfeatures *f, const struct xml_elem *e)
{
	streamfeatures_free(f);
	f->kept = calloc(1, sizeof(*f->kept));
	f->sasl2_kept = calloc(1, sizeof(*f->sasl2_kept));
	f->inline_kept = calloc(1, sizeof(*f->inline_kept));
	if (f->kept == NULL || f->sasl2_kept == NULL || f->inline_kept == NULL)
		return -1;
	for (const struct xml_elem *c = e->children; c != NULL; c = c->next) {
		if (xml_is(c, XML_NS_TLS, "starttls")) {
			f->starttls = xml_child(c, XML_NS_TLS, "required") != NULL
			                  ? SF_STARTTLS_REQUIRED
			                  : SF_STARTTLS_OFFERED;
		} else if (xml_is(c, XML_NS_SASL, "mechanisms")) {
			streamfeatures_mechs(c, XML_NS_SASL, f->mechs, &f->nmechs,
			                     &f->mechs_truncated);
		} else if (xml_is(c, NS_COMPRESS, "compression")) {
			f->compression = true;
		} else if (xml_is(c, NS_SASL_CB, "sasl-channel-binding")) {
			f->channel_binding = true;
		} else if (xml_is(c, XML_NS_SASL2, "authentication")) {
			f->sasl2 = true;
			streamfeatures_mechs(c, XML_NS_SASL2, f->sasl2_mechs, &f->nsasl2_mechs,
			                     &f->sasl2_truncated);
			for (const struct xml_elem *k = c->children; k != NULL; k = k->next) {
				if (xml_is(k, XML_NS_SASL2, "mechanism") ||
				    streamfeatures_is_fast_ns(k))
					continue; /* FAST is carried only rebuilt, inline */
				if (xml_is(k, XML_NS_SASL2, "inline")
				        ? streamfeatures_inline(f, k) < 0
				        : xml_write(f->sasl2_kept, k, XML_NS_SASL2) < 0)
					return -1;
			}
		} else if (xml_is(c, NS_IQ_AUTH, "auth")) {
			f->iq_auth = true;
		} else if (streamfeatures_is_fast_ns(c)) {
			continue; /* FAST is carried only rebuilt, inline in SASL2 */
		} else if (xml_write(f->kept, c, STREAMFEATURES_NO_NS) < 0) {
			return -1;
		}
	}
	return 0;
}

static int streamfeatures_write_list(struct buf *out, const char *const *list, size_t n)
{
	int rc = 0;
	for (size_t i = 0; i < n; i++)
		rc |= buf_addf(out, "<mechanism>%s</mechanism>", list[i]);
	return rc;
}

/* SASL2's <authentication>: its mechanisms, the inline features kept with
 * FAST's mechanisms as offered, its other children. */
static int streamfeatures_write_sasl2(struct buf *out, const struct streamfeatures_offer *o,
                                      const struct streamfeatures *f)
{
	int rc = buf_adds(out, "<authentication xmlns='" XML_NS_SASL2 "'>");
	rc |= streamfeatures_write_list(out, o->sasl2, o->nsasl2);
	bool inline_kept = f != NULL && f->inline_kept != NULL && f->inline_kept->len > 0;
	if (f != NULL && f->sasl2_inline && (inline_kept || o->nfast > 0)) {
		rc |= buf_adds(out, "<inline>");
		if (inline_kept)
			rc |= buf_add(out, buf_head(f->inline_kept), f->inline_kept->len);
		if (o->nfast > 0) {
			rc |= buf_adds(out, "<fast xmlns='" XML_NS_FAST "'>");
			rc |= streamfeatures_write_list(out, o->fast, o->nfast);
			rc |= buf_adds(out, "</fast>");
		}
		rc |= buf_adds(out, "</inline>");
	}
	if (f != NULL && f->sasl2_kept != NULL)
		rc |= buf_add(out, buf_head(f->sasl2_kept), f->sasl2_kept->len);
	rc |= buf_adds(out, "</authentication>");
	return rc;
}

int streamfeatures_write(struct buf *out, const char *prefix, const struct streamfeatures_offer *o,
                         const struct streamfeatures *f)
{
	const char *sep = prefix[0] ? ":" : "";
	int rc = 0;
	if (prefix[0])
		rc |= buf_addf(out, "<%s:features>", prefix);
	else
		rc |= buf_adds(out, "<features xmlns='" XML_NS_STREAMS "'>");
	if (o->starttls == SF_STARTTLS_REQUIRED)
		rc |= buf_adds(out, "<starttls xmlns='" XML_NS_TLS "'><required/></starttls>");
	else if (o->starttls == SF_STARTTLS_OFFERED)
		rc |= buf_adds(out, "<starttls xmlns='" XML_NS_TLS "'/>");
	if (o->nmechs > 0) {
		rc |= buf_adds(out, "<mechanisms xmlns='" XML_NS_SASL "'>");
		rc |= streamfeatures_write_list(out, o->mechs, o->nmechs);
		rc |= buf_adds(out, "</mechanisms>");
	}
	if (o->nsasl2 > 0)
		rc |= streamfeatures_write_sasl2(out, o, f);
	if (o->others && f != NULL && f->kept != NULL)
		rc |= buf_add(out, buf_head(f->kept), f->kept->len);
	rc |= buf_addf(out, "</%s%sfeatures>", prefix, sep);
	return rc ? -1 : 0;
}

bool streamfeatures_has_sasl2(const struct streamfeatures *f, const char *mech)
{
	for (size_t i = 0; i < f->nsasl2_mechs; i++)
		if (strcmp(f->sasl2_mechs[i], mech) == 0)
			return true;
	return false;
}

bool streamfeatures_has_fast(const struct streamfeatures *f, const char *mech)
{
	return streamfeatures_listed(f->fast_mechs, f->nfast_mechs, mech);
}

const char *streamfeatures_starttls_name(enum streamfeatures_starttls s)
{
	switch (s) {
	case SF_STARTTLS_OFFERED:
		return "offered";
	case SF_STARTTLS_REQUIRED:
		return "required";
	default:
		return "none";
	}
}
