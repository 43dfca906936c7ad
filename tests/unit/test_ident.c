/*
 * Known answers for ident.c: every spelling of "mallory" and "lab.test"
 * that a nodeprep server (Prosody 0.12) takes for the plain name folds to
 * it; every input a server could not compare unambiguously is refused;
 * patterns fold so that fnmatch compares them with folded identities.
 * Visible characters are written as themselves, invisible ones as \u.
 */
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

#include "ident.h"
#include "t.h"

/* A known answer: in folds to want, or is refused when want is NULL. */
struct kat {
	const char *name;
	const char *in;
	const char *want;
};

static void run(const char *what, int (*fold)(const char *, char *, size_t), const struct kat *k,
                size_t n)
{
	char out[IDENT_PATTERN_MAX], name[160];
	for (size_t i = 0; i < n; i++) {
		int rc = fold(k[i].in, out, sizeof(out));
		snprintf(name, sizeof(name), "%s: %s", what, k[i].name);
		if (k[i].want == NULL)
			T_CHECK(rc == -1 && out[0] == '\0', name);
		else
			T_CHECK(rc == 0 && strcmp(out, k[i].want) == 0, name);
	}
}

static const struct kat users[] = {
    {"plain", "mallory", "mallory"},
    {"empty folds to empty", "", ""},
    {"upper case", "MALLORY", "mallory"},
    {"circled m (U+24DC)", "ⓜallory", "mallory"},
    {"mathematical bold", "𝐦𝐚𝐥𝐥𝐨𝐫𝐲", "mallory"},
    {"fullwidth", "ｍａｌｌｏｒｙ", "mallory"},
    {"fullwidth upper case", "ＭＡＬＬＯＲＹ", "mallory"},
    {"soft hyphen", "mal\u00ADlory", "mallory"},
    {"zero-width space", "mal\u200Blory", "mallory"},
    {"zero-width non-joiner", "mal\u200Clory", "mallory"},
    {"zero-width joiner", "mal\u200Dlory", "mallory"},
    {"word joiner", "mallory\u2060", "mallory"},
    {"byte order mark", "\uFEFFmallory", "mallory"},
    {"variation selector", "mallo\uFE0Fry", "mallory"},
    {"Mongolian todo soft hyphen (nodeprep B.1, not ignorable)", "mal\u1806lory", "mallory"},
    /* Prosody refuses a bidi mark and keeps a Hangul filler; dropping both
     * joins spellings, which a deny rule errs toward */
    {"left-to-right mark", "mal\u200Elory", "mallory"},
    {"Hangul filler", "mal\u3164lory", "mallory"},
    {"all at once", "Ｍ\u00AD𝐚ⓛ\u200Bｌory", "mallory"},
    {"long s (U+017F)", "\u017Fam", "sam"},
    {"Kelvin sign (U+212A)", "\u212Aate", "kate"},
    /* full case folding, as nodeprep's B.2: sharp s becomes "ss" */
    {"sharp s", "stra\u00DFe", "strasse"},
    {"capital sharp s (U+1E9E)", "STRA\u1E9EE", "strasse"},
    {"final sigma", "\u03A3\u03C2", "\u03C3\u03C3"},
    {"composed from e + acute", "jose\u0301", "jos\u00E9"},
    {"capital E acute", "JOS\u00C9", "jos\u00E9"},
    {"Angstrom sign", "\u212B", "\u00E5"},
    {"ligature fi", "\uFB01", "fi"},
    {"square aparto (U+3300, 3 -> 12 bytes)", "\u3300", "アパート"},
    {"glob characters pass", "[mM]al*?\\", "[mm]al*?\\"},
    {"private use is a character like any other", "\uE000", "\uE000"},
    /* invalid UTF-8 */
    {"overlong '/' (C0 AF)", "\xC0\xAF", NULL},
    {"overlong 'm' (C1 AD)", "\xC1\xAD", NULL},
    {"overlong 3-byte '/'", "\xE0\x80\xAF", NULL},
    {"overlong 4-byte", "\xF0\x80\x80\xAF", NULL},
    {"lone continuation", "mal\x80lory", NULL},
    {"lone continuation at the end", "mallory\xBF", NULL},
    {"truncated sequence", "mal\xE2\x82", NULL},
    {"high surrogate in UTF-8", "\xED\xA0\x80", NULL},
    {"low surrogate in UTF-8", "mal\xED\xBF\xBFlory", NULL},
    {"beyond U+10FFFF", "\xF4\x90\x80\x80", NULL},
    {"byte FF", "\xFF", NULL},
    {"byte FE", "mal\xFElory", NULL},
    /* controls */
    {"tab", "mal\tlory", NULL},
    {"newline", "mallory\n", NULL},
    {"U+0001", "\x01", NULL},
    {"U+001F", "mal\x1Flory", NULL},
    {"DEL", "mallory\x7F", NULL},
    {"C1 NEL (U+0085)", "mal\xC2\x85lory", NULL},
    {"C1 U+009F", "\xC2\x9F", NULL},
    /* nodeprep's prohibited ASCII and spaces */
    {"space", "mal lory", NULL},
    {"double quote", "mal\"lory", NULL},
    {"ampersand", "mal&lory", NULL},
    {"apostrophe", "mal'lory", NULL},
    {"slash", "mallory/res", NULL},
    {"colon", "mal:lory", NULL},
    {"less than", "<mallory", NULL},
    {"greater than", "mallory>", NULL},
    {"at sign", "mallory@lab.test", NULL},
    {"fullwidth at sign folds to '@'", "mallory＠lab.test", NULL},
    {"fullwidth solidus folds to '/'", "mallory／x", NULL},
    {"no-break space folds to a space", "mal\u00A0lory", NULL},
    {"ideographic space", "mal\u3000lory", NULL},
    {"ogham space mark (Zs, no fold)", "mal\u1680lory", NULL},
    {"line separator", "mal\u2028lory", NULL},
    {"paragraph separator", "mal\u2029lory", NULL},
    {"Arabic ligature folds to words and spaces", "\uFDFA", NULL},
    /* unassigned */
    {"unassigned U+0378", "mal\u0378lory", NULL},
    {"unassigned in plane 5", "\U00050000", NULL},
    {"noncharacter U+FFFF", "mallory\uFFFF", NULL},
    {"unassigned tag-range U+E0080 (not silently ignored)", "mal\U000E0080lory", NULL},
};

static const struct kat domains[] = {
    {"plain", "lab.test", "lab.test"},
    {"fullwidth", "ｌａｂ.test", "lab.test"},
    {"upper case", "LAB.test", "lab.test"},
    {"trailing dot", "lab.test.", "lab.test"},
    {"fullwidth upper case and trailing dot", "ＬＡＢ.ＴＥＳＴ.", "lab.test"},
    {"ideographic full stop", "lab\u3002test", "lab.test"},
    {"U-label to A-label", "bücher.de", "xn--bcher-kva.de"},
    {"upper-case U-label", "BÜCHER.de", "xn--bcher-kva.de"},
    {"upper-case A-label", "XN--BCHER-KVA.DE", "xn--bcher-kva.de"},
    /* transitional, as Prosody's nameprep: faß.de is served as fass.de */
    {"sharp s", "faß.de", "fass.de"},
    {"IDNA2008 A-label of faß.de", "xn--fa-hia.de", "fass.de"},
    {"final sigma", "\u03C2.gr", "xn--4xa.gr"},
    {"A-label of final sigma", "xn--3xa.gr", "xn--4xa.gr"},
    {"zero-width joiner", "a\u200Db.de", "ab.de"},
    {"fullwidth A-label", "ｘｎ－－ｂｃｈｅｒ－ｋｖａ.de", "xn--bcher-kva.de"},
    {"soft hyphen vanishes", "l\u00ADab.test", "lab.test"},
    {"single label", "localhost", "localhost"},
    {"ASCII with leading hyphen unchanged", "-lab.test", "-lab.test"},
    {"ASCII with -- unchanged", "AB--c.test", "ab--c.test"},
    {"underscore unchanged", "_xmpp.Lab.test", "_xmpp.lab.test"},
    {"IPv4 address", "127.0.0.1", "127.0.0.1"},
    {"IPv6 literal", "[::1]", "[::1]"},
    {"IPv6 literal, long form", "[0:0:0:0:0:0:0:1]", "[::1]"},
    {"IPv6 literal, upper case", "[2001:DB8::A]", "[2001:db8::a]"},
    {"63-byte label", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test",
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test"},
    {"empty", "", NULL},
    {"root only", ".", NULL},
    {"two dots", "..", NULL},
    {"empty label", "lab..test", NULL},
    {"two trailing dots", "lab.test..", NULL},
    {"leading dot", ".lab.test", NULL},
    {"64-byte label", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test",
     NULL},
    {"space", "lab test", NULL},
    {"slash", "lab.test/res", NULL},
    {"at sign", "mallory@lab.test", NULL},
    {"fullwidth at sign", "mallory＠lab.test", NULL},
    {"control", "lab\x01.test", NULL},
    {"invalid punycode", "xn--zz.test", NULL},
    {"hyphen rule in an IDN", "-bücher.de", NULL},
    {"overlong UTF-8",
     "lab\xC0\xAE"
     "test",
     NULL},
    {"lone continuation",
     "l\x80"
     "ab.test",
     NULL},
    {"surrogate in UTF-8", "\xED\xA0\x80.test", NULL},
    {"IPv6 literal unclosed", "[::1", NULL},
    {"IPv6 literal not an address", "[lab.test]", NULL},
    {"IPv6 literal empty", "[]", NULL},
    {"IPv6 zone id", "[fe80::1%eth0]", NULL},
};

static const struct kat patterns[] = {
    {"any user at a domain", "*@lab.test", "*@lab.test"},
    {"fullwidth domain", "*@ＬＡＢ.test", "*@lab.test"},
    {"upper-case domain, trailing dot", "*@LAB.TEST.", "*@lab.test"},
    {"IDN domain", "*@bücher.de", "*@xn--bcher-kva.de"},
    {"user prefix", "mal*", "mal*"},
    {"upper-case user prefix", "MAL*", "mal*"},
    {"fullwidth user prefix", "ｍａｌ*", "mal*"},
    {"bracket expression", "[mM]allory", "[mm]allory"},
    {"fullwidth in a bracket expression", "[ｍＭ]allory", "[mm]allory"},
    {"user and domain", "ＭＡＬＬＯＲＹ@ｌａｂ.test", "mallory@lab.test"},
    {"glob label kept, others folded", "*@*.ＬＡＢ.test", "*@*.lab.test"},
    {"glob label beside an IDN label", "*@*.bücher.de", "*@*.xn--bcher-kva.de"},
    {"glob top-level label", "*@LAB.*", "*@lab.*"},
    {"bracket expression in the domain", "*@[ab].test", "*@[ab].test"},
    {"IPv6 literal escaped", "*@[0::1]", "*@\\[::1\\]"},
    {"empty user", "@lab.test", "@lab.test"},
    {"empty", "", ""},
    {"empty domain", "mallory@", NULL},
    {"user with '@'", "a@b@lab.test", NULL},
    {"user with a space", "mal lory", NULL},
    {"invalid domain", "*@lab..test", NULL},
    {"glob over a Unicode label", "*@bü*.de", NULL},
    {"invalid UTF-8", "mal\xC0\xAF*", NULL},
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Outputs that do not fit are refused, and out is left "". */
static void test_fit(void)
{
	char out[IDENT_PATTERN_MAX], big[IDENT_USER_MAX + 2];

	T_CHECK(ident_fold_user("mallory", out, 7) == -1 && out[0] == '\0',
	        "fit: user needs 8 bytes, has 7");
	T_CHECK(ident_fold_user("mallory", out, 8) == 0 && strcmp(out, "mallory") == 0,
	        "fit: user needs 8 bytes, has 8");
	T_CHECK(ident_fold_user("\u3300", out, 12) == -1 && out[0] == '\0',
	        "fit: U+3300 (3 bytes) folds to 12, has 12");
	T_CHECK(ident_fold_user("\u3300", out, 13) == 0, "fit: U+3300 folded in 13 bytes");
	T_CHECK(ident_fold_user("", out, 1) == 0 && out[0] == '\0', "fit: empty user in 1 byte");
	T_CHECK(ident_fold_user("", out, 0) == -1, "fit: user into 0 bytes");
	T_CHECK(ident_fold_domain("lab.test", out, 8) == -1 && out[0] == '\0',
	        "fit: domain needs 9 bytes, has 8");
	T_CHECK(ident_fold_domain("ｌａｂ.test", out, 9) == 0 && strcmp(out, "lab.test") == 0,
	        "fit: fullwidth domain in 9 bytes");
	T_CHECK(ident_fold_domain("[::1]", out, 5) == -1, "fit: IPv6 literal needs 6 bytes");
	T_CHECK(ident_fold_domain("lab.test", out, 0) == -1, "fit: domain into 0 bytes");
	T_CHECK(ident_fold_pattern("*@lab.test", out, 10) == -1 && out[0] == '\0',
	        "fit: pattern needs 11 bytes, has 10");
	T_CHECK(ident_fold_pattern("*@lab.test", out, 11) == 0, "fit: pattern in 11 bytes");
	T_CHECK(ident_fold_pattern("mal*", out, 4) == -1, "fit: user pattern needs 5 bytes");
	T_CHECK(ident_fold_pattern("*@*.lab.test", out, 12) == -1,
	        "fit: glob domain pattern needs 13 bytes");

	memset(big, 'a', IDENT_USER_MAX - 1);
	big[IDENT_USER_MAX - 1] = '\0';
	T_CHECK(ident_fold_user(big, out, IDENT_USER_MAX) == 0, "fit: 1023-byte localpart");
	big[IDENT_USER_MAX - 1] = 'a';
	big[IDENT_USER_MAX] = '\0';
	T_CHECK(ident_fold_user(big, out, IDENT_USER_MAX) == -1, "fit: 1024-byte localpart");

	/* 127 labels "a." and "b": 255 bytes, two past DNS's 253 */
	char dom[300] = "";
	for (int i = 0; i < 126; i++)
		strcat(dom, "a.");
	strcat(dom, "b");
	T_CHECK(ident_fold_domain(dom, out, sizeof(out)) == 0, "fit: 253-byte domain");
	strcat(dom, ".c");
	T_CHECK(ident_fold_domain(dom, out, sizeof(out)) == -1, "fit: 255-byte domain");
}

/* A fold is a fixed point: folding the folded form changes nothing, for
 * every code point alone (so a rule written in folded form and an identity
 * typed in it compare as the server would). */
static void test_fixed_point(void)
{
	char in[8], once[IDENT_USER_MAX], twice[IDENT_USER_MAX];
	long folded = 0, moved = 0;
	for (unsigned long cp = 0x20; cp <= 0x10FFFF; cp++) {
		if (cp >= 0xD800 && cp <= 0xDFFF)
			continue;
		/* UTF-8 by hand: the test must not trust the code under test */
		size_t n = 0;
		if (cp < 0x80) {
			in[n++] = (char)cp;
		} else if (cp < 0x800) {
			in[n++] = (char)(0xC0 | cp >> 6);
			in[n++] = (char)(0x80 | (cp & 0x3F));
		} else if (cp < 0x10000) {
			in[n++] = (char)(0xE0 | cp >> 12);
			in[n++] = (char)(0x80 | (cp >> 6 & 0x3F));
			in[n++] = (char)(0x80 | (cp & 0x3F));
		} else {
			in[n++] = (char)(0xF0 | cp >> 18);
			in[n++] = (char)(0x80 | (cp >> 12 & 0x3F));
			in[n++] = (char)(0x80 | (cp >> 6 & 0x3F));
			in[n++] = (char)(0x80 | (cp & 0x3F));
		}
		in[n] = '\0';
		if (ident_fold_user(in, once, sizeof(once)) < 0)
			continue;
		folded++;
		if (ident_fold_user(once, twice, sizeof(twice)) < 0 || strcmp(once, twice) != 0)
			moved++;
	}
	T_CHECK(folded > 100000 && moved == 0,
	        "fixed point: every code point's fold folds to itself");
}

/* The point of it all: a rule and an identity, both folded, meet in
 * fnmatch the way policy.c calls it. */
static int matches(const char *pattern, const char *user, const char *domain)
{
	char p[IDENT_PATTERN_MAX], u[IDENT_USER_MAX], d[IDENT_DOMAIN_MAX];
	char full[IDENT_USER_MAX + IDENT_DOMAIN_MAX];
	if (ident_fold_pattern(pattern, p, sizeof(p)) < 0 ||
	    ident_fold_user(user, u, sizeof(u)) < 0 || ident_fold_domain(domain, d, sizeof(d)) < 0)
		return -1;
	snprintf(full, sizeof(full), "%s@%s", u, d);
	return fnmatch(p, u, FNM_CASEFOLD) == 0 || fnmatch(p, full, FNM_CASEFOLD) == 0;
}

static void test_match(void)
{
	static const char *const mallory[] = {
	    "mallory",        "MALLORY",       "ⓜallory",       "𝐦𝐚𝐥𝐥𝐨𝐫𝐲",
	    "ｍａｌｌｏｒｙ", "mal\u00ADlory", "mal\u200Blory", "mal\u200Dlory",
	};
	char name[128];
	for (size_t i = 0; i < N(mallory); i++) {
		snprintf(name, sizeof(name), "match: \"mallory\" denies spelling %zu", i);
		T_CHECK(matches("mallory", mallory[i], "lab.test") == 1, name);
		snprintf(name, sizeof(name), "match: \"[mM]allory\" denies spelling %zu", i);
		T_CHECK(matches("[mM]allory", mallory[i], "lab.test") == 1, name);
		snprintf(name, sizeof(name), "match: \"mal*\" denies spelling %zu", i);
		T_CHECK(matches("mal*", mallory[i], "lab.test") == 1, name);
	}
	T_CHECK(matches("*@lab.test", "alice", "ｌａｂ.test") == 1, "match: *@lab.test, fullwidth");
	T_CHECK(matches("*@lab.test", "alice", "LAB.test") == 1, "match: *@lab.test, upper case");
	T_CHECK(matches("*@lab.test", "alice", "lab.test.") == 1,
	        "match: *@lab.test, trailing dot");
	T_CHECK(matches("*@ＬＡＢ.test", "alice", "lab.test") == 1, "match: *@ＬＡＢ.test, plain");
	T_CHECK(matches("*@*.bücher.de", "alice", "xmpp.BÜCHER.de") == 1, "match: IDN glob");
	T_CHECK(matches("*@[::1]", "alice", "[0::1]") == 1, "match: IPv6 literal");
	T_CHECK(matches("*@fass.de", "alice", "faß.de") == 1, "match: *@fass.de, sharp s");
	T_CHECK(matches("*@faß.de", "alice", "xn--fa-hia.de") == 1, "match: *@faß.de, A-label");
	T_CHECK(matches("*@lab.test", "alice", "other.test") == 0, "match: other domain");
	T_CHECK(matches("mallory", "mallorz", "lab.test") == 0, "match: other user");
	T_CHECK(matches("mallory", "mal lory", "lab.test") == -1, "match: a space is refused");
}

int main(void)
{
	run("user", ident_fold_user, users, N(users));
	run("domain", ident_fold_domain, domains, N(domains));
	run("pattern", ident_fold_pattern, patterns, N(patterns));
	test_fit();
	test_fixed_point();
	test_match();
	T_DONE();
}
