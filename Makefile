# xmpp-inspect: a plain GNU Makefile. `make` builds ./xmpp-inspect;
# `make test` and `make demo` install what is missing first (tools/deps).

CC ?= cc
PKGS := libssl libcrypto expat libutf8proc libidn2 hiredis
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lev

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wpointer-arith -Wcast-qual -Werror
HARDEN := -D_FORTIFY_SOURCE=2 -fstack-protector-strong
CFLAGS ?= -O2 -g
# Debian backported XML_SetReparseDeferralEnabled into Expat 2.5.0, so the
# version number does not tell: ask the compiler.
HAVE_REPARSE := $(shell printf '\043include <expat.h>\nint main(void){return XML_SetReparseDeferralEnabled(0, 0);}\n' | \
	$(CC) -x c - -o /dev/null -lexpat >/dev/null 2>&1 && echo -DXI_HAVE_REPARSE_DEFERRAL)
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(HARDEN) $(CFLAGS) $(PKG_CFLAGS) $(HAVE_REPARSE) -Isrc
LDLIBS := $(PKG_LIBS)

# BUILD selects a variant directory: build/release or build/asan.
BUILD ?= build/release
SRCS := $(wildcard src/*.c)
LIB_OBJS := $(patsubst src/%.c,$(BUILD)/%.o,$(filter-out src/main.c,$(SRCS)))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))

SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined

.PHONY: all test demo clean sanitize unit certs fuzz fuzz-campaign deps install uninstall tools
all: xmpp-inspect tools

# cp then rename: a running ./xmpp-inspect (a test, the demo) is replaced,
# not written into (which fails with "text file busy")
xmpp-inspect: $(BUILD)/xmpp-inspect
	cp $< $@.tmp && mv -f $@.tmp $@

$(BUILD)/xmpp-inspect: $(BUILD)/main.o $(BUILD)/libxi.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libxi.a: $(LIB_OBJS)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: src/%.c $(wildcard src/*.h) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libxi.a tests/unit/t.h | $(BUILD)
	@mkdir -p $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libxi.a $(LDLIBS)

# The login's unit test links its fake legs and session layer ahead of the
# archive, so leg.o and session.o are never taken from it.
LOGIN_HARNESS := tests/unit/login_harness.c tests/unit/login_harness.h
$(BUILD)/tests/test_login: tests/unit/test_login.c $(LOGIN_HARNESS) $(BUILD)/libxi.a \
		tests/unit/t.h | $(BUILD)
	@mkdir -p $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< tests/unit/login_harness.c $(BUILD)/libxi.a \
		$(LDLIBS)

$(BUILD):
	mkdir -p $@

# The benchmark's load generator and fast upstream (tools/bench): each one
# C file (plus their shared tools/toolwire.c) on OpenSSL and libev, not
# linked with the proxy's code.
TOOLS := $(BUILD)/tools/loadgen $(BUILD)/tools/fastupstream $(BUILD)/tools/relayfloor
TOOL_LIBS := $(shell pkg-config --libs libssl libcrypto 2>/dev/null) -lev
tools: $(TOOLS)

# What relaying a large stanza costs at least (tools/bench-relay's floor):
# Expat and the proxy's plain-text scan on their own.
$(BUILD)/tools/relayfloor: tools/relayfloor.c src/xmltext.c src/xmltext.h | $(BUILD)
	@mkdir -p $(BUILD)/tools
	$(CC) $(ALL_CFLAGS) -o $@ $< src/xmltext.c $(shell pkg-config --libs expat 2>/dev/null || echo -lexpat)

$(BUILD)/tools/%: tools/%.c tools/toolwire.c tools/toolwire.h | $(BUILD)
	@mkdir -p $(BUILD)/tools
	$(CC) $(ALL_CFLAGS) -Itools -o $@ $< tools/toolwire.c $(TOOL_LIBS)

unit: $(UNIT_BINS)

# The sanitizer variant: the daemon and the unit tests under ASan+UBSan.
sanitize:
	$(MAKE) BUILD=build/asan CFLAGS="$(SAN_FLAGS)" HARDEN= build/asan/xmpp-inspect unit

certs:
	$(MAKE) -C certs

deps:
	tools/deps

test: deps
	$(MAKE) all unit
	$(MAKE) sanitize
	$(MAKE) certs
	tests/run

demo: deps
	$(MAKE) all certs
	tools/demo

# make install [PREFIX=/usr/local] [DESTDIR=]: the proxy in sbin, the
# report as xmpp-inspect-report, the man pages, the systemd unit and the
# logrotate snippet if conf/ has them (the unit's /usr/local/... paths are
# rewritten to these directories), the fail2ban filter and jail (which
# ships off; see it), and conf/production.conf as the configuration if
# there is none yet. make uninstall removes all of it but the
# configuration. Nothing installed reads a file of this tree.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
SYSTEMDDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
INSTALL ?= install
CONF_DIR := $(SYSCONFDIR)/xmpp-inspect
SERVICE := conf/systemd/xmpp-inspect.service
LOGROTATE := conf/logrotate/xmpp-inspect
# every file install writes but the configuration (uninstall's list)
INSTALLED := $(SBINDIR)/xmpp-inspect $(BINDIR)/xmpp-inspect-report \
	$(MANDIR)/man8/xmpp-inspect.8 $(MANDIR)/man5/xmpp-inspect.conf.5 \
	$(MANDIR)/man1/xmpp-inspect-report.1 $(SYSTEMDDIR)/xmpp-inspect.service \
	$(SYSCONFDIR)/logrotate.d/xmpp-inspect $(SYSCONFDIR)/fail2ban/filter.d/xmpp-inspect.conf \
	$(SYSCONFDIR)/fail2ban/jail.d/xmpp-inspect.conf

install: all
	$(INSTALL) -d -m 755 "$(DESTDIR)$(SBINDIR)" "$(DESTDIR)$(BINDIR)" \
		"$(DESTDIR)$(MANDIR)/man1" "$(DESTDIR)$(MANDIR)/man5" "$(DESTDIR)$(MANDIR)/man8" \
		"$(DESTDIR)$(CONF_DIR)" "$(DESTDIR)$(SYSCONFDIR)/fail2ban/filter.d" \
		"$(DESTDIR)$(SYSCONFDIR)/fail2ban/jail.d"
	$(INSTALL) -m 755 xmpp-inspect "$(DESTDIR)$(SBINDIR)/xmpp-inspect"
	$(INSTALL) -m 755 tools/report "$(DESTDIR)$(BINDIR)/xmpp-inspect-report"
	$(INSTALL) -m 644 conf/man/xmpp-inspect.8 "$(DESTDIR)$(MANDIR)/man8/xmpp-inspect.8"
	$(INSTALL) -m 644 conf/man/xmpp-inspect.conf.5 "$(DESTDIR)$(MANDIR)/man5/xmpp-inspect.conf.5"
	$(INSTALL) -m 644 conf/man/xmpp-inspect-report.1 "$(DESTDIR)$(MANDIR)/man1/xmpp-inspect-report.1"
	$(INSTALL) -m 644 conf/fail2ban/filter.d/xmpp-inspect.conf \
		"$(DESTDIR)$(SYSCONFDIR)/fail2ban/filter.d/xmpp-inspect.conf"
	$(INSTALL) -m 644 conf/fail2ban/jail.d/xmpp-inspect.conf \
		"$(DESTDIR)$(SYSCONFDIR)/fail2ban/jail.d/xmpp-inspect.conf"
	if [ -f $(SERVICE) ]; then \
		$(INSTALL) -d -m 755 "$(DESTDIR)$(SYSTEMDDIR)" && \
		sed -e 's|/usr/local/sbin/|$(SBINDIR)/|g' -e 's|/usr/local/bin/|$(BINDIR)/|g' \
			-e 's|/usr/local/etc/|$(SYSCONFDIR)/|g' $(SERVICE) > "$(DESTDIR)$(SYSTEMDDIR)/xmpp-inspect.service" && \
		chmod 644 "$(DESTDIR)$(SYSTEMDDIR)/xmpp-inspect.service"; \
	else echo "no $(SERVICE): no systemd unit installed"; fi
	if [ -f $(LOGROTATE) ]; then \
		$(INSTALL) -d -m 755 "$(DESTDIR)$(SYSCONFDIR)/logrotate.d" && \
		$(INSTALL) -m 644 $(LOGROTATE) "$(DESTDIR)$(SYSCONFDIR)/logrotate.d/xmpp-inspect"; \
	else echo "no $(LOGROTATE): no logrotate snippet installed"; fi
	if [ -e "$(DESTDIR)$(CONF_DIR)/xmpp-inspect.conf" ] || [ -L "$(DESTDIR)$(CONF_DIR)/xmpp-inspect.conf" ]; then \
		echo "kept $(DESTDIR)$(CONF_DIR)/xmpp-inspect.conf (the new example is conf/production.conf)"; \
	else $(INSTALL) -m 644 conf/production.conf "$(DESTDIR)$(CONF_DIR)/xmpp-inspect.conf"; fi

uninstall:
	rm -f $(addprefix "$(DESTDIR),$(addsuffix ",$(INSTALLED)))
	@if [ -e "$(DESTDIR)$(CONF_DIR)/xmpp-inspect.conf" ]; then \
		echo "kept $(DESTDIR)$(CONF_DIR)/xmpp-inspect.conf (remove it by hand if it is no longer wanted)"; fi

FUZZ_SECONDS ?= 60
fuzz:
	tests/fuzz/run $(FUZZ_SECONDS)

# A long campaign, not part of `make test`: HOURS of fuzzing shared by the
# targets (fractional is fine), RUNS=N stops a target at N executions so
# the slow ones get the time left; REV=commit fuzzes that commit's src/.
HOURS ?= 1
RUNS ?= 0
fuzz-campaign: deps
	tests/fuzz/campaign --runs $(RUNS) $(if $(REV),--rev $(REV)) $(HOURS) $(TARGETS)

clean:
	rm -rf build xmpp-inspect
	$(MAKE) -C certs clean
