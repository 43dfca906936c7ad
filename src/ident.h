/*
 * XMPP identities folded the way servers compare them, so that a
 * users_deny/users_allow pattern and the identity a client sends are
 * compared in one spelling: the server's. Without this, "ｍａｌｌｏｒｙ" or
 * "MALLORY" reaches the same account as "mallory" while missing a
 * "mallory" rule.
 */
#ifndef XI_IDENT_H
#define XI_IDENT_H

#include <stddef.h>

/* A folded localpart and its NUL: RFC 7622 §3.3 caps the localpart at
 * 1023 bytes after preparation, so a longer fold is no account a server
 * would accept. */
#define IDENT_USER_MAX 1024
/* A folded domain and its NUL: a DNS name is at most 253 characters in
 * dotted form (RFC 1035 §2.3.4), and the fold is ASCII. */
#define IDENT_DOMAIN_MAX 256
/* A folded pattern: a user, "@" and a domain. */
#define IDENT_PATTERN_MAX (IDENT_USER_MAX + IDENT_DOMAIN_MAX)

/*
 * Folds a localpart/username the way a server compares accounts: NFKC,
 * full case folding ("ß" -> "ss"), default-ignorable code points and
 * nodeprep's other mapped-to-nothing U+1806 removed (what nodeprep, RFC
 * 3920, and PRECIS UsernameCaseMapped, RFC 8265, agree on for comparison;
 * utf8proc's NFKC_Casefold). in is NUL-terminated bytes from the wire;
 * the folded UTF-8 is written to out (outlen bytes, NUL-terminated). The
 * empty string folds to "".
 * Returns 0, or -1 when the input cannot be compared unambiguously: not
 * valid UTF-8 (overlong forms and encoded surrogates included), an
 * unassigned code point, a control character (Cc: C0, DEL, C1), a
 * separator (Z*: U+0020, other spaces, U+2028, U+2029) or one of
 * nodeprep's prohibited " & ' / : < > @ (checked after folding, so
 * fullwidth "＠" is caught too), or a result that does not fit in outlen.
 * out is "" after -1.
 */
int ident_fold_user(const char *in, char *out, size_t outlen);

/*
 * Folds a domain the way servers find the virtual host: IDNA with UTS #46
 * mapping (fullwidth "ｌａｂ.test" -> "lab.test", case folded), output as
 * lower-case ASCII with A-labels and one trailing dot removed. The mapping
 * is transitional, as Prosody's nameprep (IDNA2003): "faß.de" folds to
 * "fass.de", and so does its IDNA2008 A-label "xn--fa-hia.de". Plain ASCII
 * letters, digits, '-', '_' and '.' come out lower-cased and otherwise
 * unchanged. An IPv6 literal "[...]" comes out in inet_ntop's text form
 * (lower case, the longest zero run as "::").
 * Returns 0, or -1 when in is not a valid domain (empty, an empty or
 * over-long label, a character other than the above after mapping, an
 * IDNA violation) or the result does not fit in outlen. out is "" after
 * -1.
 */
int ident_fold_domain(const char *in, char *out, size_t outlen);

/*
 * Folds a users_allow/users_deny pattern (an fnmatch glob: * ? [ ] and \)
 * so that it matches identities folded by the functions above: the part
 * before the last '@' as a user (glob characters pass unchanged), the part
 * after it as a domain, label by label: a label without glob characters as
 * ident_fold_domain() does, one with them as a user that must stay ASCII
 * (identity domains are A-labels). A pattern without '@' is a user. An IPv6 literal domain is
 * written with its brackets escaped, so that fnmatch reads them as characters. Returns 0, or -1
 * when a part is refused by its fold or the result does not fit in outlen. out is "" after -1.
 */
int ident_fold_pattern(const char *in, char *out, size_t outlen);

#endif
