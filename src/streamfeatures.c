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
	streamfeatures_free_buf(f->kept);
	streamfeatures_free_buf(f->sasl2_kept);
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

int streamfeatures_parse(struct streamfeatures *f, const struct xml_elem *e)
{
	streamfeatures_free(f);
	f->kept = calloc(1, sizeof(*f->kept));
	f->sasl2_kept = calloc(1, sizeof(*f->sasl2_kept));
	if (f->kept == NULL || f->sasl2_kept == NULL)
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
			for (const struct xml_elem *k = c->children; k != NULL; k = k->next)
				if (!xml_is(k, XML_NS_SASL2, "mechanism") &&
				    xml_write(f->sasl2_kept, k, XML_NS_SASL2) < 0)
					return -1;
		} else if (xml_is(c, NS_IQ_AUTH, "auth")) {
			f->iq_auth = true;
		} else if (xml_write(f->kept, c, STREAMFEATURES_NO_NS) < 0) {
			return -1;
		}
	}
	return 0;
}

int streamfeatures_write(struct buf *out, const char *prefix, enum streamfeatures_starttls starttls,
                         const char *const *mechs, size_t nmechs, const char *const *sasl2_mechs,
                         size_t nsasl2, bool others, const struct streamfeatures *f)
{
	const char *sep = prefix[0] ? ":" : "";
	int rc = 0;
	if (prefix[0])
		rc |= buf_addf(out, "<%s:features>", prefix);
	else
		rc |= buf_adds(out, "<features xmlns='" XML_NS_STREAMS "'>");
	if (starttls == SF_STARTTLS_REQUIRED)
		rc |= buf_adds(out, "<starttls xmlns='" XML_NS_TLS "'><required/></starttls>");
	else if (starttls == SF_STARTTLS_OFFERED)
		rc |= buf_adds(out, "<starttls xmlns='" XML_NS_TLS "'/>");
	if (nmechs > 0) {
		rc |= buf_adds(out, "<mechanisms xmlns='" XML_NS_SASL "'>");
		for (size_t i = 0; i < nmechs; i++)
			rc |= buf_addf(out, "<mechanism>%s</mechanism>", mechs[i]);
		rc |= buf_adds(out, "</mechanisms>");
	}
	if (nsasl2 > 0) {
		rc |= buf_adds(out, "<authentication xmlns='" XML_NS_SASL2 "'>");
		for (size_t i = 0; i < nsasl2; i++)
			rc |= buf_addf(out, "<mechanism>%s</mechanism>", sasl2_mechs[i]);
		if (f != NULL && f->sasl2_kept != NULL)
			rc |= buf_add(out, buf_head(f->sasl2_kept), f->sasl2_kept->len);
		rc |= buf_adds(out, "</authentication>");
	}
	if (others && f != NULL && f->kept != NULL)
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
