"""The integration cases: a real Prosody, a real client, the proxy between.

Each case is a function decorated with @case. It gets a Ctx that starts
what it asks for (a shared Prosody variant, its own proxy, clients) and
collects failed expectations; the runner tears everything down afterwards
and adds the checks every case gets:
  - the proxy exits 0 on SIGTERM, without a sanitizer report on stderr;
  - no password (nor a PLAIN payload carrying it) in any file it wrote;
  - every event log line is a JSON object with ts, sid and event.

Cases read like: config in, client outcome and expected events out.
"""

import base64
import json
import re
import signal
import socket
import subprocess
import time

import harness
import raw
from harness import CA, CERTS, DOMAIN, ANON_DOMAIN

# Distinctive passwords, so a leak is found by a plain substring search.
USERS = {"alice": "Xi-alice-Pw-7Qz4kV", "bob": "Xi-bob-Pw-9Wv2mR"}
CYRUS_USERS = {"carol": "Xi-carol-Pw-3Jd8nT"}
WRONG = "Xi-wrong-Pw-5Tx1rY"
ALL_PASSWORDS = list(USERS.values()) + list(CYRUS_USERS.values()) + [WRONG]
ALICE = f"alice@{DOMAIN}"

# Prosody variants: one instance per variant is shared by every case using it.
PROSODY_VARIANTS = {
    "default": dict(users=USERS),  # requires TLS, internal_hashed
    "open": dict(users=USERS, require_encryption=False, allow_plain=True),
    "untrusted": dict(users=USERS, cert="untrusted"),
    "cyrus": dict(users=CYRUS_USERS, cyrus=True),
    "tls12": dict(users=USERS, tls12=True),
    "cyrus_unpatched": dict(users=CYRUS_USERS, cyrus=True, cyrus_patch=False),
    # cases_bypass.py (issue 8): a denied user (mallory), a name with 's'
    # and 'k' for the long-s and Kelvin-sign spellings (kiss), legacy
    # iq-auth and in-band registration on, debug log (what reached it);
    # "hostile": slow password checks (bypass_auth_failures_parallel)
    "hostile": dict(users={**USERS, "mallory": "Xi-mallory-Pw-4Hs8qL", "kiss": "Xi-kiss-Pw-6Nb3wE"},
                    modules=("legacyauth", "register_ibr"), debug=True, iterations=100000),
    "hostile_open": dict(users={**USERS, "mallory": "Xi-mallory-Pw-4Hs8qL", "kiss": "Xi-kiss-Pw-6Nb3wE"},
                         require_encryption=False, allow_plain=True,
                         modules=("legacyauth", "register_ibr"), debug=True),
    # cases_review8.py: Cyrus at debug level (Prosody logs the <abort/> the
    # proxy sends it); XEP-0388 SASL2 from the suite's copy of mod_sasl2
    # (prosody-plugins/, patched for 0.12) with XEP-0198 stream management,
    # debug log, the denied user mallory
    "cyrus_debug": dict(users=CYRUS_USERS, cyrus=True, debug=True),
    "sasl2_smacks": dict(users={**USERS, "mallory": "Xi-mallory-Pw-4Hs8qL"}, modules=("sasl2", "smacks"),
                         plugin_paths=(str(harness.HERE / "prosody-plugins"),), debug=True),
    # cases_fast_real.py: SASL2 + Bind2 + FAST (XEP-0388/0386/0484) as a
    # server of today offers them: the suite's copies of mod_sasl2 and
    # mod_sasl2_fast (prosody-plugins/, patched for 0.12) and Debian's
    # mod_sasl2_bind2; debug log (Prosody's witness of each <authenticate>)
    "fast": dict(users=USERS, modules=("sasl2", "sasl2_bind2", "sasl2_fast"),
                 plugin_paths=(str(harness.HERE / "prosody-plugins"),), debug=True),
}

CASES = []


class CaseFailed(Exception):
    pass


class CaseSkipped(Exception):
    pass


def case(name, prosody="default", proxy=True):
    """Registers fn as a case. prosody: the variant it needs (None: none);
    proxy: whether it needs the proxy binary."""
    def register(fn):
        CASES.append(Case(name, fn, prosody, proxy, (fn.__doc__ or "").strip()))
        return fn
    return register


class Case:
    def __init__(self, name, fn, prosody, proxy, doc):
        self.name, self.fn, self.prosody, self.needs_proxy, self.doc = name, fn, prosody, proxy, doc


class Ctx:
    """What a case works with. Expectations are soft (check) so a FAIL line
    lists everything that was wrong; require() stops the case."""

    def __init__(self, runner, c):
        self.runner = runner
        self.case = c
        self.problems = []
        self.proxies = []
        self.raws = []
        self.servers = []
        self.notes = []

    # -------------------------------------------------------- expectations

    def check(self, cond, why):
        if not cond:
            self.problems.append(why)
        return bool(cond)

    def require(self, cond, why):
        if not cond:
            self.problems.append(why)
            raise CaseFailed()

    def skip(self, why):
        raise CaseSkipped(why)

    def note(self, text):
        """Extra diagnostics shown if the case fails."""
        self.notes.append(text)

    # -------------------------------------------------------- resources

    def prosody(self, variant=None):
        return self.runner.prosody(variant or self.case.prosody)

    def private_prosody(self, variant="default"):
        """A Prosody of this case alone (for cases that stop or kill it)."""
        p = harness.Prosody(name=f"prosody-{self.case.name}", keep=self.runner.keep,
                            **PROSODY_VARIANTS[variant])
        self.servers.append(p)
        try:
            p.start()
        except harness.HarnessError as e:
            self.require(False, f"harness: private Prosody did not start: {e}")
        return p

    def server(self, make, what):
        """A server of this case alone: made by make() (SKIP when the
        package is missing), started (a failure fails the case), stopped
        with the case."""
        try:
            s = make()
        except harness.ServerUnavailable as why:
            self.skip(str(why))
        self.servers.append(s)
        try:
            s.start()
        except harness.HarnessError as why:
            self.require(False, f"harness: {what} did not start: {why}")
        return s

    def proxy(self, upstream_port=None, upstream_tls="starttls", start=True, binary=None,
              **extra):
        """A started proxy in front of this case's Prosody (its STARTTLS port,
        or its Direct TLS port when upstream_tls is direct); binary: another
        program to run in the runner's binary's place (a wrapper)."""
        if upstream_port is None:
            p = self.prosody()
            upstream_port = p.tls_port if upstream_tls == "direct" else p.port
        px = harness.Proxy(binary or self.runner.binary, upstream_port, upstream_tls, extra,
                           name=self.case.name, keep=self.runner.keep)
        self.proxies.append(px)
        if start:
            try:
                px.start()
            except harness.HarnessError as e:
                self.require(False, f"proxy did not start: {e}")
        return px

    def client(self, port, jid=ALICE, password=None, **kw):
        """Runs client.py; password defaults to the JID's user's."""
        if password is None:
            user = jid.split("@")[0]
            password = {**USERS, **CYRUS_USERS}.get(user, "")
        r = harness.run_client(jid, password, port, **kw)
        if not r.get("ok"):
            self.note(f"client {jid} {kw}: {r}")
        return r

    def run_bin(self, args, timeout=10):
        """Runs the proxy binary to completion (for -t, -V, start-up errors);
        a sanitizer report in its output fails the case."""
        r = subprocess.run([self.runner.binary] + list(args), capture_output=True,
                           text=True, timeout=timeout)
        for marker in harness.SANITIZER_MARKERS:
            if marker in r.stderr:
                self.check(False, f"sanitizer report from {' '.join(args)}: "
                           + r.stderr[r.stderr.find(marker):][:200].splitlines()[0])
                break
        return r

    def raw(self, port, **kw):
        kw.setdefault("ca", CA)
        c = raw.RawClient(port, **kw)
        self.raws.append(c)
        return c

    # -------------------------------------------------------- event helpers

    def session(self, px, index=0, timeout=5.0, closed=True):
        """The events of the index-th session (in connect order), waiting for
        its close event when closed is true. Returns a Session (may be empty)."""
        all_sids = harness.wait_until(lambda: (lambda s: s if len(s) > index else None)(
            sids(px.events.read())), timeout)
        if not all_sids:
            self.check(False, f"no session #{index} in the event log")
            return Session([], None)
        sid = all_sids[index]
        if closed and not px.events.wait("close", timeout, sid=sid):
            self.check(False, f"session {sid}: no close event")
        return Session([e for e in px.events.read() if e.get("sid") == sid], sid)

    def teardown(self):
        """Stops everything and applies the checks every case gets."""
        for c in self.raws:
            c.close()
        for px in self.proxies:
            if px.proc is None:
                continue
            # Let sessions the case left open end before SIGTERM, so every
            # case does not also test shutdown racing a closing session
            # (sigterm_after_client_close does that on purpose).
            if px.alive():
                harness.wait_until(lambda: all_closed(px.events.read()), 3)
            died = px.exit_status is None and not px.alive()
            status = px.stop()
            if died:
                self.check(False, f"proxy exited by itself during the case (status {status})")
            elif px.killed:
                self.check(False, "proxy did not exit within 10 s of SIGTERM (killed)")
            elif status != 0 and not getattr(px, "expect_status", None) == status:
                self.check(False, f"proxy exit status {status} after SIGTERM (want 0)")
            report = px.sanitizer_report()
            self.check(not report, "sanitizer report on proxy stderr: "
                       + report.strip().splitlines()[0] if report else "")
            leaks = []
            for pw in ALL_PASSWORDS:
                leaks += harness.find_secrets(px.written_files(), pw, list(USERS) + list(CYRUS_USERS))
            self.check(not leaks, "password in proxy output: " + "; ".join(sorted(set(leaks))))
            self.check_log_format(px)
        for p in self.servers:
            p.stop()

    def check_log_format(self, px):
        events = px.events.read()
        if px.events.bad_lines:
            self.check(False, f"event log line is not a JSON object: {px.events.bad_lines[0]!r}")
        for ev in events:
            missing = [k for k in ("ts", "sid", "event") if k not in ev]
            if missing:
                self.check(False, f"event without {missing}: {ev}")
                break
            if not TS_RE.match(str(ev["ts"])):
                self.check(False, f"ts not RFC 3339 UTC with milliseconds: {ev['ts']!r}")
                break

    def diagnostics(self):
        parts = list(self.notes)
        for px in self.proxies:
            parts.append(px.diagnostics())
        for c in self.raws:
            parts.append(f"--- raw client received: {c.received[-1500:]!r}")
        return "\n".join(parts)


TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]00:?00)$")


def plain_attempt(ctx, port, password, timeout=5.0, source=None, hold=None):
    """One PLAIN login as alice on a new connection after STARTTLS: the
    answer's local name ('success') or SASL condition, or what came
    instead. hold: a list the client is kept in (open) instead of closed."""
    c = ctx.raw(port, timeout=timeout, source=source)
    try:
        c.open_stream()
        c.starttls()
        c.open_stream()
        c.auth("PLAIN", raw.plain_payload("alice", password))
        el = c.next_element(timeout=timeout)
        if el is None:
            return f"nothing: {c.describe()}"
        if raw.local(el.tag) == "success":
            return "success"
        return raw.sasl_condition(el) if raw.local(el.tag) == "failure" else c.describe(el)
    except (AssertionError, OSError) as e:
        return f"error: {e}"
    finally:
        if hold is not None:
            hold.append(c)
        else:
            c.close()


def sids(events):
    """Session ids in the order of their connect events."""
    out = []
    for e in events:
        if e.get("event") == "connect" and e.get("sid") not in out:
            out.append(e.get("sid"))
    return out


def all_closed(events):
    """True if every session that connected has its close event."""
    closed = {e.get("sid") for e in events if e.get("event") == "close"}
    return all(sid in closed for sid in sids(events))


class Session:
    """The events of one session, with lookups that name what was missing."""

    def __init__(self, events, sid):
        self.events = events
        self.sid = sid

    def all(self, event, **fields):
        return [e for e in self.events if harness.match(e, event, **fields)]

    def first(self, event, **fields):
        found = self.all(event, **fields)
        return found[0] if found else None

    def index(self, event, **fields):
        for i, e in enumerate(self.events):
            if harness.match(e, event, **fields):
                return i
        return None

    def names(self):
        return [e.get("event") for e in self.events]

    def expect(self, ctx, event, **fields):
        """The first matching event, or None after recording a problem."""
        ev = self.first(event, **fields)
        if ev is None:
            have = self.all(event)
            want = ", ".join(f"{k}={v!r}" for k, v in fields.items())
            ctx.check(False, f"no {event} event{' with ' + want if want else ''}"
                      + (f" (have: {have[:3]})" if have else f" (events: {self.names()})"))
        return ev

    def expect_order(self, ctx, *steps):
        """steps: event names (or (name, fields) pairs) that must appear in
        this order."""
        last, last_name = -1, None
        for step in steps:
            name, fields = (step, {}) if isinstance(step, str) else step
            i = None
            for j, e in enumerate(self.events):
                if j > last and harness.match(e, name, **fields):
                    i = j
                    break
            if i is None:
                if self.first(name, **fields) is not None:
                    ctx.check(False, f"{name} {fields or ''} came before {last_name}: {self.names()}")
                return
            last, last_name = i, name


def sasl_features(s, **fields):
    """The features events before login (those listing mechanisms)."""
    return [f for f in s.all("features", **fields) if "mechanisms" in f and not f.get("authenticated")]


def client_starttls(s):
    """starttls events of the client leg (the proxy may log its own STARTTLS
    toward the upstream with leg=upstream)."""
    return [e for e in s.all("starttls") if e.get("leg", "client") == "client"]


def authcid(ev):
    return ev.get("authcid", ev.get("username")) if ev else None


def user_is(value, user):
    return value in (user, f"{user}@{DOMAIN}")


# ================================================================ baseline
# The harness itself against Prosody, no proxy: if these fail, the machine
# (Prosody, slixmpp, certificates) is broken, not the proxy.


@case("baseline_prosody_logins", proxy=False)
def baseline_prosody_logins(ctx):
    """PLAIN, SCRAM-SHA-1, Direct TLS and a wrong password straight to Prosody."""
    p = ctx.prosody()
    r = ctx.client(p.port, mech="PLAIN")
    ctx.check(r.get("ok"), f"PLAIN: {r.get('error')}")
    r = ctx.client(p.tls_port, mech="SCRAM-SHA-1", direct_tls=True)
    ctx.check(r.get("ok"), f"SCRAM-SHA-1 direct TLS: {r.get('error')}")
    r = ctx.client(p.port, password=WRONG, mech="PLAIN")
    ctx.check(not r.get("ok") and r.get("condition") == "not-authorized",
              f"wrong password: want not-authorized, got {r}")


@case("baseline_cyrus_digest_md5", prosody="cyrus", proxy=False)
def baseline_cyrus_digest_md5(ctx):
    """DIGEST-MD5 and SCRAM (v= in a challenge) with Prosody's Cyrus backend."""
    p = ctx.prosody()
    for mech in ("DIGEST-MD5", "SCRAM-SHA-1"):
        r = ctx.client(p.port, jid=f"carol@{DOMAIN}", mech=mech)
        ctx.check(r.get("ok"), f"{mech}: {r.get('error')}")


# ================================================================ logins


def check_full_login(ctx, px, r, mech, user="alice", port_kind="starttls",
                     client_tls=True, upstream_port=None):
    """The events of a successful login of user with mech, start to close."""
    ctx.check(r.get("ok"), f"client failed: {r.get('error')}")
    s = ctx.session(px)
    if s.sid is None:
        return s
    conn = s.expect(ctx, "connect", port_kind=port_kind)
    if conn:
        ctx.check(str(conn.get("peer", "")).startswith("127.0.0.1"), f"connect peer {conn.get('peer')!r}")
        want_port = px.tls_port if port_kind == "direct_tls" else px.port
        ctx.check(str(want_port) in str(conn.get("local", "")), f"connect local {conn.get('local')!r}")
    up = s.expect(ctx, "upstream", ok=True)
    if up and upstream_port:
        ctx.check(str(upstream_port) in str(up.get("addr")), f"upstream addr {up.get('addr')!r}")
    st = s.expect(ctx, "stream", dir="c2s", n=1)
    if st:
        ctx.check(st.get("to") == DOMAIN or user == "anon", f"stream to {st.get('to')!r}")
    s.expect(ctx, "stream", dir="s2c")
    feats = [f for f in sasl_features(s) if f.get("tls") is client_tls and f.get("offered")]
    if ctx.check(feats, f"no features event with tls {client_tls} offering mechanisms: {s.all('features')}"):
        f = feats[-1]
        ctx.check(mech in (f.get("offered") or []), f"{mech} not in offered {f.get('offered')}")
        ctx.check(mech in (f.get("mechanisms") or []), f"{mech} not in mechanisms {f.get('mechanisms')}")
    if port_kind == "starttls" and client_tls:
        ctx.check(client_starttls(s), f"no starttls event for the client leg: {s.all('starttls')}")
        tls = s.expect(ctx, "tls", leg="client")
        if tls:
            ctx.check(str(tls.get("version", "")).startswith("TLS"), f"client tls version {tls.get('version')!r}")
    if port_kind == "direct_tls":
        tls = s.expect(ctx, "tls", leg="client")
        if tls:
            ctx.check(tls.get("sni") == DOMAIN, f"client tls sni {tls.get('sni')!r}")
    tls_up = s.expect(ctx, "tls", leg="upstream")
    if tls_up:
        ctx.check(tls_up.get("verified") is True, f"upstream tls verified {tls_up.get('verified')!r}")
    auth = s.expect(ctx, "auth", mechanism=mech)
    if auth:
        ctx.check(auth.get("tls") is client_tls, f"auth tls {auth.get('tls')!r}, want {client_tls}")
        if user != "anon":
            # Mechanisms without an initial response (DIGEST-MD5, CRAM-MD5)
            # reveal the user in their first response.
            named = [authcid(e) for e in [auth] + s.all("sasl_step", dir="c2s") if authcid(e)]
            ctx.check(named and named[0] == user,
                      f"user {user!r} not in auth/sasl_step authcid/username (have {named})")
    s.expect(ctx, "auth_result", outcome="success", by="upstream")
    bind = s.expect(ctx, "bind")
    if bind and r.get("jid"):
        ctx.check(bind.get("jid") == r["jid"], f"bind jid {bind.get('jid')!r}, client has {r['jid']!r}")
    login = s.expect(ctx, "login", outcome="success")
    if login:
        ctx.check(login.get("mechanism") == mech, f"login mechanism {login.get('mechanism')!r}")
        if user != "anon":
            ctx.check(user_is(login.get("user"), user), f"login user {login.get('user')!r}")
        ctx.check(bool(login.get("client_tls")) == client_tls, f"login client_tls {login.get('client_tls')!r}")
        ctx.check(bool(login.get("upstream_tls")), f"login upstream_tls {login.get('upstream_tls')!r}")
        ctx.check(isinstance(login.get("ms"), (int, float)), f"login ms {login.get('ms')!r}")
    ctx.check(not s.all("stream_error"), f"stream error in a clean login: {s.all('stream_error')}")
    close = s.expect(ctx, "close")
    if close:
        ctx.check((close.get("bytes_c2s") or 0) > 0 and (close.get("bytes_s2c") or 0) > 0,
                  f"close byte counts {close.get('bytes_c2s')!r}/{close.get('bytes_s2c')!r}")
    ctx.check(s.events and s.events[0].get("event") == "connect", f"first event not connect: {s.names()[:3]}")
    ctx.check(s.events and s.events[-1].get("event") == "close", f"last event not close: {s.names()[-3:]}")
    steps = ["connect", "stream"]
    if port_kind == "starttls" and client_tls:
        steps += [("tls", {"leg": "client"})]
    steps += [("auth", {"mechanism": mech}), "auth_result", "bind", "close"]
    s.expect_order(ctx, *steps)
    return s


@case("starttls_plain")
def starttls_plain(ctx):
    """PLAIN after STARTTLS: the full event sequence of a good login."""
    px = ctx.proxy()
    r = ctx.client(px.port, mech="PLAIN")
    check_full_login(ctx, px, r, "PLAIN", upstream_port=ctx.prosody().port)
    # The key log has secrets of both legs (two handshakes, two client randoms).
    px.stop()
    keylog = px.keylog.read_text() if px.keylog.exists() else ""
    randoms = {line.split()[1] for line in keylog.splitlines()
               if len(line.split()) == 3 and not line.startswith("#")}
    ctx.check(len(randoms) >= 2, f"key log has {len(randoms)} client randoms, want both legs")


@case("starttls_scram_sha1")
def starttls_scram_sha1(ctx):
    """SCRAM-SHA-1 after STARTTLS; the channel-binding flag is logged."""
    px = ctx.proxy()
    r = ctx.client(px.port, mech="SCRAM-SHA-1")
    s = check_full_login(ctx, px, r, "SCRAM-SHA-1")
    auth = s.first("auth", mechanism="SCRAM-SHA-1")
    if auth:
        ctx.check(auth.get("cb") in ("n", "y") or str(auth.get("cb", "")).startswith("p="),
                  f"auth cb {auth.get('cb')!r}")
    for f in sasl_features(s):
        ctx.check(not any(m.endswith("-PLUS") for m in f.get("offered") or []),
                  f"-PLUS mechanism offered to the client: {f.get('offered')}")


@case("wrong_password_plain")
def wrong_password_plain(ctx):
    """PLAIN forced with a wrong password: not-authorized, relayed from the server."""
    px = ctx.proxy()
    r = ctx.client(px.port, password=WRONG, mech="PLAIN")
    ctx.check(not r.get("ok"), "client logged in with a wrong password")
    ctx.check(r.get("condition") == "not-authorized", f"client condition {r.get('condition')!r} ({r.get('error')})")
    s = ctx.session(px)
    auth = s.expect(ctx, "auth", mechanism="PLAIN")
    if auth:
        ctx.check(authcid(auth) == "alice", f"auth authcid {authcid(auth)!r}")
    s.expect(ctx, "auth_result", outcome="failure", condition="not-authorized", by="upstream")
    s.expect(ctx, "login", outcome="failure")
    ctx.check(not s.all("bind"), "bind after a failed login")


@case("anonymous")
def anonymous(ctx):
    """SASL ANONYMOUS on anon.lab.test."""
    px = ctx.proxy()
    r = ctx.client(px.port, jid=ANON_DOMAIN, anonymous=True)
    s = check_full_login(ctx, px, r, "ANONYMOUS", user="anon")
    st = s.first("stream", dir="c2s", n=1)
    ctx.check(st and st.get("to") == ANON_DOMAIN, f"stream to {st and st.get('to')!r}")
    if r.get("jid"):
        ctx.check(r["jid"].split("/")[0].endswith("@" + ANON_DOMAIN), f"anonymous jid {r['jid']!r}")


@case("direct_tls_client")
def direct_tls_client(ctx):
    """The client uses the proxy's Direct TLS port (XEP-0368)."""
    px = ctx.proxy()
    r = ctx.client(px.tls_port, direct_tls=True, mech="SCRAM-SHA-1")
    s = check_full_login(ctx, px, r, "SCRAM-SHA-1", port_kind="direct_tls")
    ctx.check(not client_starttls(s), f"client-leg starttls on a Direct TLS connection: {s.all('starttls')}")


@case("upstream_direct_tls")
def upstream_direct_tls(ctx):
    """upstream_tls = direct: the proxy reaches Prosody's Direct TLS port."""
    p = ctx.prosody()
    px = ctx.proxy(upstream_tls="direct")
    r = ctx.client(px.port, mech="PLAIN")
    check_full_login(ctx, px, r, "PLAIN", upstream_port=p.tls_port)


@case("concurrent_logins")
def concurrent_logins(ctx):
    """Eight logins at once (four PLAIN as alice, four SCRAM-SHA-1 as bob): all
    succeed, eight sessions with distinct ids."""
    px = ctx.proxy()
    procs = []
    for user, mech in (("alice", "PLAIN"), ("bob", "SCRAM-SHA-1")):
        cmd = [harness.PYTHON, str(harness.HERE / "client.py"), "--jid", f"{user}@{DOMAIN}",
               "--password", USERS[user], "--port", str(px.port), "--mech", mech,
               "--ca", str(CA), "--timeout", "20", "--count", "4"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    oks = 0
    for p in procs:
        out, err = p.communicate(timeout=40)
        try:
            results = json.loads(out.strip().splitlines()[-1])["results"]
        except (ValueError, IndexError, KeyError):
            results = []
            ctx.note(f"client output: {out!r} {err[-500:]}")
        oks += sum(1 for r in results if r.get("ok"))
        for r in results:
            if not r.get("ok"):
                ctx.note(f"client: {r}")
    ctx.check(oks == 8, f"{oks}/8 clients logged in")
    harness.wait_until(lambda: len(px.events.find("close")) >= 8, 10)
    ctx.check(len(px.events.find("close")) == 8, f"{len(px.events.find('close'))} close events, want 8")
    logins = px.events.find("login", outcome="success")
    ctx.check(len(logins) == 8, f"{len(logins)} successful login events, want 8")
    ctx.check(len(set(sids(px.events.read()))) == 8, "session ids not unique")


# ================================================================ upstream trouble


@case("upstream_down", prosody=None)
def upstream_down(ctx):
    """The upstream refuses connections: the client gets remote-connection-failed."""
    dead = harness.port_refusing()
    px = ctx.proxy(upstream_port=dead)
    c = ctx.raw(px.port)
    c.send(raw.header())
    cond = c.stream_error(timeout=10)
    ctx.check(cond == "remote-connection-failed", f"client got stream error {cond!r}, "
              f"want remote-connection-failed; received {c.describe()}")
    ctx.check(c.wait_closed(5), "proxy did not close the client connection")
    s = ctx.session(px)
    up = s.expect(ctx, "upstream", ok=False)
    if up:
        ctx.check(up.get("error"), "upstream event without error text")
        ctx.check(str(dead) in str(up.get("addr")), f"upstream addr {up.get('addr')!r}")


@case("upstream_untrusted_cert", prosody="untrusted")
def upstream_untrusted_cert(ctx):
    """upstream_verify = yes and Prosody's certificate is from an unknown CA: refused."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    c.send(raw.header())
    cond = c.stream_error(timeout=10)
    ctx.check(cond == "remote-connection-failed", f"client got stream error {cond!r}; received {c.describe()}")
    s = ctx.session(px)
    bad = [e for e in s.events if e.get("event") in ("upstream", "tls")
           and (e.get("ok") is False or e.get("verified") is False)]
    ctx.check(bad, f"no upstream/tls event with ok=false or verified=false: {s.events}")
    ctx.check(not s.all("auth"), "auth relayed to an unverified upstream")
    # A real client is refused too, and never sends its password.
    r = ctx.client(px.port, mech="PLAIN")
    ctx.check(not r.get("ok"), "client logged in through an unverified upstream")


@case("upstream_untrusted_verify_no", prosody="untrusted")
def upstream_untrusted_verify_no(ctx):
    """upstream_verify = no accepts the unknown CA, and logs verified false."""
    px = ctx.proxy(upstream_verify="no")
    r = ctx.client(px.port, mech="PLAIN")
    ctx.check(r.get("ok"), f"client failed: {r.get('error')}")
    s = ctx.session(px)
    tls = s.expect(ctx, "tls", leg="upstream")
    if tls:
        ctx.check(tls.get("verified") is False, f"upstream verified {tls.get('verified')!r}, want false")
    s.expect(ctx, "login", outcome="success")


@case("upstream_stream_error")
def upstream_stream_error(ctx):
    """The server's stream error (host-unknown for an unserved domain) reaches the client."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    c.send(raw.header(to="nowhere.test"))
    cond = c.stream_error(timeout=10)
    ctx.check(cond in ("host-unknown", "remote-connection-failed"),
              f"client got stream error {cond!r}; received {c.describe()}")
    s = ctx.session(px)
    ctx.check(s.all("stream_error"), f"no stream_error event: {s.names()}")
    ctx.check(s.all("stream_error", condition="host-unknown"),
              f"no stream_error host-unknown: {s.all('stream_error')}")


@case("upstream_goes_away", prosody=None)
def upstream_goes_away(ctx):
    """After login the server leaves: a Prosody shutting down sends
    system-shutdown, which reaches the client; a Prosody killed outright
    sends nothing, and the client still gets a stream error, not a silent
    close."""
    for how in ("sigterm", "sigkill"):
        p = ctx.private_prosody()
        px = ctx.proxy(upstream_port=p.port)
        c = ctx.raw(px.port)
        try:
            raw.login_plain(c, "alice", USERS["alice"])
        except AssertionError as e:
            ctx.require(False, f"{how}: raw login failed: {e}")
        if how == "sigterm":
            p.proc.send_signal(signal.SIGTERM)
        else:
            p.proc.kill()
        cond = c.stream_error(timeout=10)
        # Prosody may close with unread bytes in its socket: the reset then
        # takes its system-shutdown out of the proxy's receive queue (Linux
        # drops queued data on RST). The proxy then says the server went
        # away, which is right too; anything but a stream error is not.
        relayed = cond == "system-shutdown"
        if how == "sigterm":
            ctx.check(cond in ("system-shutdown", "remote-connection-failed"),
                      f"{how}: client got {cond!r}, want system-shutdown; {c.describe()}")
        else:
            ctx.check(cond is not None, f"{how}: no stream error for the client: {c.describe()}")
        ctx.check(c.wait_closed(5), f"{how}: client connection not closed")
        s = ctx.session(px)
        s.expect(ctx, "close")
        if how == "sigterm" and relayed:
            s.expect(ctx, "stream_error", dir="s2c", condition="system-shutdown")
        p.stop()


# ================================================================ policy


@case("plain_without_tls_reject")
def plain_without_tls_reject(ctx):
    """plain_without_tls = reject: PLAIN in clear is refused by the proxy, never relayed."""
    px = ctx.proxy(require_tls="no", plain_without_tls="reject")
    c = ctx.raw(px.port)
    f = c.open_stream()
    ctx.check("PLAIN" not in raw.mechanisms(f), f"PLAIN offered in clear: {raw.mechanisms(f)}")
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "failure"
              and raw.sasl_condition(el) == "encryption-required",
              f"want <failure><encryption-required/>, got {c.describe(el)}")
    c.close()
    s = ctx.session(px)
    s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="encryption-required")
    auth = s.first("auth", mechanism="PLAIN")
    if auth:
        ctx.check(auth.get("tls") is False, f"auth tls {auth.get('tls')!r}")


@case("plain_without_tls_log")
def plain_without_tls_log(ctx):
    """plain_without_tls = log, require_tls = no: PLAIN in clear works (the
    upstream leg still uses TLS) and a policy event says so."""
    px = ctx.proxy(require_tls="no", plain_without_tls="log")
    r = ctx.client(px.port, mech="PLAIN", no_tls=True)
    s = check_full_login(ctx, px, r, "PLAIN", client_tls=False)
    pol = s.all("policy")
    ctx.check(any(p.get("action") == "log" for p in pol), f"no policy event with action log: {pol}")
    ctx.check(not s.all("tls", leg="client"), "client tls event without TLS")


@case("auth_before_starttls_required")
def auth_before_starttls_required(ctx):
    """require_tls = auto with an upstream that requires TLS: <starttls><required/>
    is offered, and PLAIN before STARTTLS is refused with encryption-required."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    f = c.open_stream()
    ctx.check(raw.has_starttls(f) == "required", f"client offered starttls {raw.has_starttls(f)!r}")
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    el = c.next_element()
    failure = el is not None and raw.local(el.tag) == "failure" and raw.sasl_condition(el) == "encryption-required"
    serr = el is not None and el.tag == raw.q(raw.NS_STREAM, "error") and \
        raw.stream_error_condition(el) == "policy-violation"
    ctx.check(failure or serr, f"want <failure><encryption-required/> (or policy-violation), got {c.describe(el)}")
    c.close()
    s = ctx.session(px)
    s.expect(ctx, "auth_result", outcome="failure", by="proxy")
    f0 = s.first("features", n=1)
    if ctx.check(f0, "no features event n=1"):
        ctx.check(f0.get("starttls") == "required", f"features starttls {f0.get('starttls')!r}")


@case("mechanisms_deny_plain")
def mechanisms_deny_plain(ctx):
    """mechanisms_deny = PLAIN: not offered (the client picks SCRAM), refused if tried."""
    px = ctx.proxy(mechanisms_deny="PLAIN")
    r = ctx.client(px.port)
    ctx.check(r.get("ok") and r.get("mechanism") == "SCRAM-SHA-1", f"client: {r}")
    s = ctx.session(px, 0)
    for f in sasl_features(s, tls=True):
        ctx.check("PLAIN" not in (f.get("offered") or []), f"PLAIN offered: {f.get('offered')}")
        ctx.check("PLAIN" in (f.get("mechanisms") or []), f"server's PLAIN missing from mechanisms: {f.get('mechanisms')}")
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "failure"
              and raw.sasl_condition(el) == "invalid-mechanism",
              f"want <failure><invalid-mechanism/>, got {c.describe(el)}")
    c.close()
    s = ctx.session(px, 1)
    s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="invalid-mechanism")


@case("mechanisms_allow_plain")
def mechanisms_allow_plain(ctx):
    """mechanisms_allow = PLAIN: only PLAIN is offered, so the client uses it."""
    px = ctx.proxy(mechanisms_allow="PLAIN")
    r = ctx.client(px.port)
    ctx.check(r.get("ok") and r.get("mechanism") == "PLAIN", f"client: {r}")
    s = ctx.session(px)
    feats = sasl_features(s, tls=True)
    ctx.check(feats, f"no pre-login features event with tls true: {s.all('features')}")
    for f in feats:
        ctx.check(f.get("offered") == ["PLAIN"], f"offered {f.get('offered')}, want ['PLAIN']")


@case("channel_binding_stripped", prosody="tls12")
def channel_binding_stripped(ctx):
    """An upstream on TLS 1.2 offers SCRAM-SHA-1-PLUS, which cannot pass a TLS-
    terminating proxy: it is removed from what the client sees, and logged."""
    px = ctx.proxy()
    r = ctx.client(px.port, mech="PLAIN")
    ctx.check(r.get("ok"), f"PLAIN client failed: {r.get('error')}")
    s = ctx.session(px)
    feats = sasl_features(s, tls=True)
    ctx.check(feats, f"no pre-login features event with tls true: {s.all('features')}")
    for f in feats:
        ctx.check("SCRAM-SHA-1-PLUS" in (f.get("mechanisms") or []),
                  f"server's SCRAM-SHA-1-PLUS missing from mechanisms: {f.get('mechanisms')}")
        ctx.check(not any(m.endswith("-PLUS") for m in f.get("offered") or []),
                  f"-PLUS offered to the client: {f.get('offered')}")
    ctx.check(any(p.get("action") == "strip" for p in s.all("policy")),
              f"no policy event with action strip: {s.all('policy')}")
    # slixmpp has tls-unique on the client leg, so with SCRAM-SHA-1 it sends
    # the 'y' flag ("I could bind, you can't"), and the server, which does
    # support binding, must refuse it (RFC 5802 6): the downgrade is visible.
    r = ctx.client(px.port, mech="SCRAM-SHA-1")
    s = ctx.session(px, 1)
    auth = s.expect(ctx, "auth", mechanism="SCRAM-SHA-1")
    if auth and auth.get("cb") == "y":
        ctx.check(not r.get("ok"), "server accepted cb=y although it supports channel binding")
        s.expect(ctx, "auth_result", outcome="failure")
    elif auth:
        ctx.check(r.get("ok"), f"SCRAM-SHA-1 with cb={auth.get('cb')!r} failed: {r.get('error')}")


# ================================================================ misbehaving clients


@case("client_closes_mid_login")
def client_closes_mid_login(ctx):
    """Clients that vanish after the features, and in the middle of SASL:
    each session is closed and logged, and the proxy keeps serving."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    c.open_stream()
    c.close()
    s = ctx.session(px, 0)
    s.expect(ctx, "close")
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.send(f"<auth xmlns='{raw.NS_SASL}' mechanism='SCRAM-SHA-1'>"
           + base64.b64encode(b"n,,n=alice,r=abcdefghijklmnop").decode() + "</auth>")
    c.next_element(timeout=5)  # the challenge
    c.close()
    s = ctx.session(px, 1)
    s.expect(ctx, "close")
    login = s.first("login")
    if login:
        ctx.check(login.get("outcome") != "success", f"login event says success: {login}")
    r = ctx.client(px.port, mech="PLAIN")
    ctx.check(r.get("ok"), f"a later client failed: {r.get('error')}")


@case("client_stream_error_relayed")
def client_stream_error_relayed(ctx):
    """A logged-in client ends with a stream error: logged (dir c2s), relayed
    to the server (seen in Prosody's log), and the session closes."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    try:
        jid = raw.login_plain(c, "alice", USERS["alice"])
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")
    ctx.check(str(jid).startswith(ALICE + "/"), f"bound jid {jid!r}")
    marker = f"xi-marker-{time.monotonic_ns()}"
    c.send(f"<stream:error><policy-violation xmlns='{raw.NS_STANZAS}'/>"
           f"<text xmlns='{raw.NS_STANZAS}'>{marker}</text></stream:error></stream:stream>")
    ctx.check(c.wait_closed(5), "connection not closed after the client's stream error")
    s = ctx.session(px)
    s.expect(ctx, "stream_error", dir="c2s", condition="policy-violation", text=marker)
    s.expect(ctx, "login", outcome="success")
    # Prosody logs "Session closed by remote with error: policy-violation (TEXT)".
    log = ctx.prosody().log
    ctx.check(harness.wait_until(lambda: marker in harness.tail(log, 20000), 5),
              "the stream error did not reach the server (not in Prosody's log)")


@case("client_stream_error_prelogin")
def client_stream_error_prelogin(ctx):
    """A stream error from the client before any login: logged, closed."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    c.open_stream()
    c.send(f"<stream:error><undefined-condition xmlns='{raw.NS_STANZAS}'/></stream:error></stream:stream>")
    ctx.check(c.wait_closed(5), "connection not closed after the client's stream error")
    s = ctx.session(px)
    s.expect(ctx, "stream_error", dir="c2s", condition="undefined-condition")
    ctx.check(not s.all("login"), f"login event without a login attempt: {s.all('login')}")


@case("restricted_xml_dtd")
def restricted_xml_dtd(ctx):
    """A DTD with an entity (billion-laughs style) before the stream: restricted-xml."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    laughs = "".join(f"<!ENTITY l{i} '&l{i-1};&l{i-1};&l{i-1};&l{i-1};&l{i-1};'>" for i in range(1, 9))
    c.send("<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY l0 'lol'>" + laughs + "]>"
           + raw.header()[len("<?xml version='1.0'?>"):] + "<message>&l8;</message>")
    cond = c.stream_error(timeout=5)
    ctx.check(cond in ("restricted-xml", "not-well-formed"), f"stream error {cond!r}; got {c.describe()}")
    ctx.check(c.wait_closed(5), "connection not closed")
    s = ctx.session(px)
    ctx.check(s.all("close"), "no close event")


@case("restricted_xml_comment")
def restricted_xml_comment(ctx):
    """A comment inside the stream after TLS: restricted-xml."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.send("<!-- hello -->")
    cond = c.stream_error(timeout=5)
    ctx.check(cond == "restricted-xml", f"stream error {cond!r}; got {c.describe()}")
    ctx.check(c.wait_closed(5), "connection not closed")


@case("garbage_not_well_formed")
def garbage_not_well_formed(ctx):
    """Bytes that are not XML after the stream header: not-well-formed."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    c.open_stream()
    c.send(b"<<<\x00\xff garbage")
    cond = c.stream_error(timeout=5)
    ctx.check(cond == "not-well-formed", f"stream error {cond!r}; got {c.describe()}")
    ctx.check(c.wait_closed(5), "connection not closed")
    s = ctx.session(px)
    s.expect(ctx, "close")


@case("tls_garbage_after_starttls")
def tls_garbage_after_starttls(ctx):
    """Plain bytes where the TLS handshake should be: closed and logged, proxy survives."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    c.open_stream()
    c.send(f"<starttls xmlns='{raw.NS_TLS}'/>")
    c.expect("proceed")
    c.send(b"this is not a TLS ClientHello\r\n" * 4)
    ctx.check(c.wait_closed(5), "connection not closed")
    s = ctx.session(px)
    s.expect(ctx, "close")
    r = ctx.client(px.port, mech="PLAIN")
    ctx.check(r.get("ok"), f"a later client failed: {r.get('error')}")


@case("oversized_stanza_prelogin")
def oversized_stanza_prelogin(ctx):
    """A 100 KB <auth> before login (limit 64 KiB): policy-violation, closed."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.send(f"<auth xmlns='{raw.NS_SASL}' mechanism='PLAIN'>" + "QUFB" * 25000 + "</auth>")
    cond = c.stream_error(timeout=5)
    ctx.check(cond in ("policy-violation", "resource-constraint"),
              f"stream error {cond!r}, want policy-violation; got {c.describe()}")
    ctx.check(c.wait_closed(5), "connection not closed")
    s = ctx.session(px)
    ctx.check(not s.all("auth_result", by="upstream"), "oversized auth was relayed upstream")


@case("max_per_addr")
def max_per_addr(ctx):
    """max_per_addr = 2: a third connection from 127.0.0.1 is turned away while
    two are open; once one ends, a new one is served again."""
    px = ctx.proxy(max_per_addr="2")
    held = []
    for i in range(2):
        c = ctx.raw(px.port)
        c.send(raw.header())
        el = c.next_element()
        ctx.require(el is not None and raw.local(el.tag) == "features",
                    f"connection {i + 1} of 2 not served: {c.describe(el)}")
        held.append(c)
    third = ctx.raw(px.port)
    try:
        third.send(raw.header())
    except OSError:
        pass
    el = third.next_element()
    ctx.check(el is None or raw.local(el.tag) != "features",
              f"third connection served features: {third.describe(el)}")
    ctx.check(third.eof or third.stream_closed or third.wait_closed(5), "third connection left open")
    held[0].close()

    def served():
        try:
            with raw.RawClient(px.port, ca=CA) as c:
                c.send(raw.header())
                el = c.next_element(timeout=2)
                return el is not None and raw.local(el.tag) == "features"
        except OSError:
            return False
    ctx.check(harness.wait_until(served, 10, 0.2), "no connection served after one of the two ended")
    ctx.check(px.alive(), "proxy died")


@case("login_timeout")
def login_timeout(ctx):
    """login_timeout = 1: a client that never logs in is cut off (connection-timeout)."""
    px = ctx.proxy(login_timeout="1")
    c = ctx.raw(px.port)
    c.open_stream()
    cond = c.stream_error(timeout=5)
    ctx.check(cond == "connection-timeout", f"stream error {cond!r}; got {c.describe()}")
    ctx.check(c.wait_closed(5), "connection not closed")
    s = ctx.session(px)
    s.expect(ctx, "close")


# ================================================================ process


@case("sigterm_with_open_session")
def sigterm_with_open_session(ctx):
    """SIGTERM while a logged-in session is open: the client is told
    (system-shutdown), answers with </stream>, and the proxy exits 0 promptly
    with the session's close logged."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    try:
        raw.login_plain(c, "alice", USERS["alice"])
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")
    ctx.require(px.events.wait("login", 5), "no login event")
    t0 = time.monotonic()
    px.proc.send_signal(signal.SIGTERM)
    cond = c.stream_error(timeout=5)
    ctx.check(cond == "system-shutdown", f"client got stream error {cond!r}, want system-shutdown")
    try:
        c.send("</stream:stream>")
    except OSError:
        pass
    ctx.check(c.wait_closed(5), "client connection still open after shutdown")
    c.close()
    status = px.stop(timeout=10)
    took = time.monotonic() - t0
    ctx.check(status == 0, f"exit status {status} after SIGTERM")
    ctx.check(took < 3, f"shutdown took {took:.1f} s with a client that closed at once")
    ctx.check(px.events.find("close"), "open session's close not logged at shutdown")


@case("sigterm_after_client_close")
def sigterm_after_client_close(ctx):
    """A client drops its connection and SIGTERM follows within a millisecond
    (the session is ending while the shutdown starts): exit 0, promptly."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    try:
        raw.login_plain(c, "alice", USERS["alice"])
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")
    ctx.require(px.events.wait("login", 5), "no login event")
    c.close()
    t0 = time.monotonic()
    status = px.stop(timeout=15)
    took = time.monotonic() - t0
    ctx.check(status == 0, f"exit status {status} after SIGTERM")
    ctx.check(px.events.find("close"), "no close event for the dropped client")
    ctx.check(took < 3, f"shutdown took {took:.1f} s; the only session was ending anyway")


@case("sighup_reload")
def sighup_reload(ctx):
    """SIGHUP: a new policy applies to new sessions, an established session
    stays up; a bad new config is reported and the old one kept."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    try:
        jid = raw.login_plain(c, "alice", USERS["alice"])
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")

    def offered():
        try:
            with raw.RawClient(px.port, ca=CA) as probe:
                probe.open_stream()
                probe.starttls()
                return raw.mechanisms(probe.open_stream())
        except (OSError, AssertionError):
            return None

    ctx.require(offered() and "PLAIN" in offered(), f"PLAIN not offered before reload: {offered()}")
    px.reload(mechanisms_deny="PLAIN")
    now = harness.wait_until(lambda: (lambda m: m is not None and "PLAIN" not in m)(offered()), 5, 0.1)
    ctx.check(now, f"after SIGHUP PLAIN still offered: {offered()}")
    # The session from before the reload still carries stanzas.
    c.send(f"<message to='{jid}' type='chat' id='m1'><body>still here</body></message>")
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "message",
              f"established session broken by reload: {c.describe(el)}")
    # A broken config: reported, the running one kept.
    good = px.config.read_text()
    px.config.write_text(good + "this line is not a setting\nupstream_tls = sideways\n")
    px.proc.send_signal(signal.SIGHUP)
    reported = harness.wait_until(lambda: px.config.name in px.stderr(), 5)
    ctx.check(reported, f"bad config on SIGHUP not reported on stderr: {px.stderr()[-300:]!r}")
    ctx.check(px.alive(), "proxy exited on a bad config reload")
    px.config.write_text(good)
    m = offered()
    ctx.check(m is not None and "PLAIN" not in m, f"after a bad reload the old policy is gone: {m}")
    r = ctx.client(px.port)
    ctx.check(r.get("ok"), f"client after the bad reload: {r.get('error')}")


@case("config_check", prosody=None)
def config_check(ctx):
    """-t: a good config passes (0), an unknown key fails (1) naming file:line
    (or -o); -V names the linked libraries."""
    px = ctx.proxy(upstream_port=harness.port_refusing(), start=False)
    px.write_config()
    r = ctx.run_bin(["-t", "-c", str(px.config)])
    ctx.check(r.returncode == 0, f"-t on a good config: status {r.returncode}: {(r.stdout + r.stderr).strip()[:300]}")
    bad = px.dir / "bad.conf"
    lines = px.config.read_text().splitlines()
    lines.insert(2, "no_such_key = 1")
    bad.write_text("\n".join(lines) + "\n")
    r = ctx.run_bin(["-t", "-c", str(bad)])
    out = r.stdout + r.stderr
    ctx.check(r.returncode == 1, f"-t on an unknown key: status {r.returncode}")
    ctx.check(f"{bad}:3" in out or "bad.conf:3" in out, f"-t does not name bad.conf:3: {out.strip()[:300]}")
    r = ctx.run_bin(["-t", "-c", str(px.config), "-o", "no_such_key=1"])
    ctx.check(r.returncode == 1, f"-t with -o no_such_key=1: status {r.returncode}")
    ctx.check("-o" in r.stdout + r.stderr, f"-o error does not name -o: {(r.stdout + r.stderr).strip()[:200]}")
    r = ctx.run_bin(["-V"])
    out = r.stdout + r.stderr
    ctx.check(r.returncode == 0, f"-V: status {r.returncode}")
    for lib in ("OpenSSL", "libev", "xpat"):
        ctx.check(lib.lower() in out.lower(), f"-V does not mention {lib}: {out.strip()[:200]!r}")


@case("port_in_use", prosody=None)
def port_in_use(ctx):
    """A listen port that is taken: exit 1 with a one-line reason."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        port = holder.getsockname()[1]
        px = ctx.proxy(upstream_port=harness.port_refusing(), start=False, listen=f"127.0.0.1:{port}")
        px.write_config()
        try:
            r = ctx.run_bin(["-c", str(px.config)])
        except subprocess.TimeoutExpired:
            ctx.require(False, "proxy kept running with its listen port taken")
        ctx.check(r.returncode == 1, f"status {r.returncode}, want 1")
        reason = r.stderr.strip()
        ctx.check(str(port) in reason or "in use" in reason.lower(),
                  f"reason does not name the port: {reason[:300]!r}")
        ctx.check(len(reason.splitlines()) == 1, f"reason is not one line: {reason[:300]!r}")
    finally:
        holder.close()


# ================================================================ Cyrus (DIGEST-MD5)


@case("digest_md5", prosody="cyrus")
def digest_md5(ctx):
    """DIGEST-MD5 through the proxy (Prosody + Cyrus SASL): username and realm logged, no hash."""
    px = ctx.proxy()
    r = ctx.client(px.port, jid=f"carol@{DOMAIN}", mech="DIGEST-MD5")
    s = check_full_login(ctx, px, r, "DIGEST-MD5", user="carol")
    auth = s.first("auth", mechanism="DIGEST-MD5")
    steps = s.all("sasl_step")
    ctx.check(steps, "no sasl_step events for a multi-step mechanism")
    text = (px.event_log.read_text() if px.event_log.exists() else "")
    ctx.check("response=" not in text, "DIGEST-MD5 response hash in the event log")
    if auth:
        ctx.check(authcid(auth) == "carol" or any(authcid(e) == "carol" for e in steps),
                  "username carol not logged")


@case("scram_final_in_challenge", prosody="cyrus")
def scram_final_in_challenge(ctx):
    """SCRAM-SHA-1 with Cyrus: server-final v= inside a <challenge>, then an empty <success/>."""
    px = ctx.proxy()
    r = ctx.client(px.port, jid=f"carol@{DOMAIN}", mech="SCRAM-SHA-1")
    check_full_login(ctx, px, r, "SCRAM-SHA-1", user="carol")


@case("cram_md5", prosody="cyrus")
def cram_md5(ctx):
    """CRAM-MD5: the server speaks first (auth without initial response)."""
    px = ctx.proxy()
    r = ctx.client(px.port, jid=f"carol@{DOMAIN}", mech="CRAM-MD5")
    check_full_login(ctx, px, r, "CRAM-MD5", user="carol")


@case("upstream_garbage_success", prosody="cyrus_unpatched")
def upstream_garbage_success(ctx):
    """Debian's unpatched mod_auth_cyrus answers DIGEST-MD5 with a <success>
    carrying kilobytes of uninitialised memory as base64: the proxy relays or
    refuses it without harm (the client chokes on it, as it does without the
    proxy), logs the session and keeps serving."""
    px = ctx.proxy()
    ctx.client(px.port, jid=f"carol@{DOMAIN}", mech="DIGEST-MD5")
    s = ctx.session(px)
    s.expect(ctx, "auth", mechanism="DIGEST-MD5")
    ctx.check(s.all("auth_result"), f"no auth_result event: {s.names()}")
    ctx.check(px.alive(), "proxy died")
    r = ctx.client(px.port, jid=f"carol@{DOMAIN}", mech="PLAIN")
    ctx.check(r.get("ok"), f"PLAIN after the garbage: {r.get('error')}")


# Hostile input (issue 5): registered by importing the module.
import cases_hostile  # noqa: E402,F401
