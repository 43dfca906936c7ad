/* Known answers for the plain-text scan (src/xmltext.c): every byte value
 * alone, and runs ended at every offset (both the 16- and the 8-byte steps
 * and the byte-at-a-time tail). */
#include <stdio.h>
#include <string.h>

#include "../../src/xmltext.h"
#include "t.h"

static size_t slow_run(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && xmltext_plain((unsigned char)p[i]))
		i++;
	return i;
}

int main(void)
{
	/* the byte classes */
	int wrong = 0;
	for (int c = 0; c < 256; c++) {
		bool want = c >= 0x20 && c < 0x80 && c != '<' && c != '&' && c != ']';
		if (xmltext_plain((unsigned char)c) != want)
			wrong++;
	}
	T_CHECK(wrong == 0, "xmltext_plain: exactly 0x20-0x7F less < & ]");
	T_CHECK(xmltext_plain('>') && xmltext_plain(0x7F) && xmltext_plain(' '),
	        "xmltext_plain: '>', DEL and space are plain");
	T_CHECK(!xmltext_plain('\t') && !xmltext_plain('\n') && !xmltext_plain('\r') &&
	            !xmltext_plain(0xC3),
	        "xmltext_plain: tab, line ends and UTF-8 bytes are not");

	/* one bad byte of every value at every offset of a 70-byte run */
	char buf[80];
	int bad = 0;
	for (int c = 0; c < 256; c++) {
		if (xmltext_plain((unsigned char)c))
			continue;
		for (size_t at = 0; at < 70; at++) {
			memset(buf, 'x', sizeof(buf));
			buf[at] = (char)c;
			for (size_t n = 0; n <= 70; n += 7)
				if (xmltext_plain_run(buf, n) != slow_run(buf, n))
					bad++;
			if (xmltext_plain_run(buf, 70) != at)
				bad++;
		}
	}
	T_CHECK(bad == 0, "xmltext_plain_run: stops at the first non-plain byte, any value, any offset");
	memset(buf, 'y', sizeof(buf));
	T_CHECK(xmltext_plain_run(buf, 0) == 0 && xmltext_plain_run(buf, 80) == 80 &&
	            xmltext_plain_run(buf, 13) == 13,
	        "xmltext_plain_run: all plain is all of it");

	/* next_run: the first run at least min long; '>' and names are plain,
	 * so the runs are "a>xx" at 1, "b>xxxxxxxx" at 6, "/b>x..." (23) at 17 */
	const char *s = "<a>xx<b>xxxxxxxx</b>xxxxxxxxxxxxxxxxxxxx";
	size_t n = strlen(s);
	T_CHECK(xmltext_next_run(s, n, 8) == 6, "xmltext_next_run: the first run of 8");
	T_CHECK(xmltext_next_run(s, n, 11) == 17, "xmltext_next_run: a shorter run is passed by");
	T_CHECK(xmltext_next_run(s, n, 24) == n, "xmltext_next_run: none long enough: n");
	T_CHECK(xmltext_next_run(s, n, 2) == 1, "xmltext_next_run: a run right after one byte");
	T_CHECK(xmltext_next_run("<<<<", 4, 1) == 4, "xmltext_next_run: no plain byte: n");
	T_CHECK(xmltext_next_run("", 0, 1) == 0, "xmltext_next_run: empty");
	T_DONE();
}
