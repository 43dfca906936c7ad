"""Integration cases for the policy rules (issue 4): require_tls against a
server that does not require TLS, tls_min_version, tls_ciphers, users_deny
and users_allow, auth_failures, a login timeout in the middle of SASL,
strip_starttls, offer_mechanisms, and a policy change by SIGHUP.

Registered with cases.py's @case; run.py imports this module.
Where a rule says "the server never saw the attempt", the case proves it
from Prosody's log: the refused attempt uses the right password, so had it
been relayed Prosody would have logged "Authenticated as USER@lab.test";
a later login that Prosody does log is the fence showing its log was
read far enough.
"""

import base64
import ssl
import subprocess
import time

import harness
import raw
from cases import ALICE, ANON_DOMAIN, CA, DOMAIN, USERS, WRONG, case, sasl_features

BOB = f"bob@{DOMAIN}"


# ================================================================ helpers


class ServerLog:
    """What the shared Prosody logged from now on (its log is shared by
    every case of a run; cases run one at a time)."""

    def __init__(self, prosody):
        self.path = prosody.log
        try:
            self.offset = self.path.stat().st_size
        except OSError:
            self.offset = 0

    def text(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def authenticated(self, user):
        """Lines "Authenticated as USER@lab.test" since this was made."""
        line = f"Authenticated as {user}@{DOMAIN}"
        return sum(1 for l in self.text().splitlines() if l.rstrip().endswith(line))

    def wait_authenticated(self, user, count=1, timeout=5):
        return harness.wait_until(lambda: self.authenticated(user) >= count, timeout)


def fence(ctx, px, slog, user, password):
    """A raw PLAIN login of user through px that Prosody logs: once its line
    is in the log, anything relayed before it would be there too."""
    c = ctx.raw(px.port)
    try:
        raw.login_plain(c, user, password, bind=False)
    except AssertionError as e:
        ctx.check(False, f"fence login of {user} failed: {e}")
        return False
    finally:
        c.close()
    return ctx.check(slog.wait_authenticated(user), f"fence login of {user} not in Prosody's log")


def tls_client(ctx, px):
    """A raw client that has done STARTTLS; returns (client, features)."""
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    return c, c.open_stream()


def failure_of(c, el):
    """The SASL failure condition of el, or a description of what came."""
    if el is not None and raw.local(el.tag) == "failure":
        return raw.sasl_condition(el)
    return f"not a failure: {c.describe(el)}"


def scram_first(user, nonce="xi-policy-nonce-0123456789"):
    """A SCRAM client-first message (no channel binding) in base64."""
    return base64.b64encode(f"n,,n={user},r={nonce}".encode()).decode()


def expect_policy(ctx, s, rule, action, detail_has=None):
    pol = s.all("policy", rule=rule, action=action)
    if not ctx.check(pol, f"no policy event rule {rule} action {action} (have {s.all('policy')})"):
        return None
    if detail_has is not None:
        ctx.check(any(detail_has.lower() in str(p.get("detail", "")).lower() for p in pol),
                  f"policy {rule} detail does not mention {detail_has!r}: {pol}")
    return pol[0]


class Tls12Client(raw.RawClient):
    """A raw client whose TLS is capped at version (ssl.TLSVersion)."""

    def __init__(self, port, max_version=ssl.TLSVersion.TLSv1_2, ciphers=None, **kw):
        self.max_version = max_version
        self.ciphers = ciphers
        super().__init__(port, **kw)

    def _wrap_tls(self, alpn=None):
        ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        ctx.maximum_version = self.max_version
        if self.ciphers:
            ctx.set_ciphers(self.ciphers)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.sni)
        self.tls = True


def track(ctx, c):
    ctx.raws.append(c)
    return c


# ================================================================ require_tls


@case("require_tls_yes_open_server", prosody="open")
def require_tls_yes_open_server(ctx):
    """require_tls = yes in front of a server that does not require TLS: the
    client is offered <starttls><required/> and no mechanism, and an <auth>
    before TLS (PLAIN, then SCRAM-SHA-1) is refused by the proxy with
    encryption-required; the server never sees it. After STARTTLS it works."""
    slog = ServerLog(ctx.prosody())
    px = ctx.proxy(require_tls="yes")
    c = ctx.raw(px.port)
    f = c.open_stream()
    ctx.check(raw.has_starttls(f) == "required", f"starttls offered as {raw.has_starttls(f)!r}, want required")
    ctx.check(not raw.mechanisms(f), f"mechanisms offered before TLS: {raw.mechanisms(f)}")
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    el = c.next_element()
    ctx.check(failure_of(c, el) == "encryption-required",
              f"PLAIN before TLS: want <encryption-required/>, got {failure_of(c, el)}")
    c.auth("SCRAM-SHA-1", scram_first("alice"))
    el = c.next_element()
    ctx.check(failure_of(c, el) == "encryption-required",
              f"SCRAM-SHA-1 before TLS: want <encryption-required/>, got {failure_of(c, el)}")
    c.close()
    s = ctx.session(px, 0)
    f1 = s.first("features", n=1)
    if ctx.check(f1, f"no features n=1: {s.names()}"):
        ctx.check(f1.get("starttls") == "required", f"features starttls {f1.get('starttls')!r}")
        ctx.check(f1.get("upstream_starttls") in ("offered", None),
                  f"upstream_starttls {f1.get('upstream_starttls')!r}: the open server does not require TLS")
        ctx.check(not f1.get("offered"), f"offered before TLS: {f1.get('offered')}")
    results = s.all("auth_result")
    ctx.check(len(results) == 2 and all(r.get("by") == "proxy" and r.get("condition") == "encryption-required"
                                        for r in results),
              f"want two auth_result by proxy encryption-required: {results}")
    pol = s.all("policy", rule="require_tls", action="reject")
    ctx.check(len(pol) == 2, f"want two policy require_tls reject events: {s.all('policy')}")
    login = s.expect(ctx, "login", outcome="failure")
    if login:
        ctx.check(login.get("by") == "proxy" and login.get("client_tls") is False,
                  f"login by {login.get('by')!r} client_tls {login.get('client_tls')!r}")
    # a real client that does STARTTLS logs in
    r = ctx.client(px.port, mech="SCRAM-SHA-1")
    ctx.check(r.get("ok"), f"client after STARTTLS: {r.get('error')}")
    ctx.check(slog.wait_authenticated("alice"), "the good login is not in Prosody's log")
    ctx.check(slog.authenticated("alice") == 1,
              f"Prosody authenticated alice {slog.authenticated('alice')} times, want 1 (the refused ones reached it)")


@case("require_tls_no_scram_in_clear", prosody="open")
def require_tls_no_scram_in_clear(ctx):
    """require_tls = no with a server that does not require TLS: STARTTLS is
    only offered, and SCRAM-SHA-1 in the clear works (the upstream leg keeps
    TLS); no policy refusal."""
    px = ctx.proxy(require_tls="no")
    c = ctx.raw(px.port)
    f = c.open_stream()
    ctx.check(raw.has_starttls(f) == "offered", f"starttls {raw.has_starttls(f)!r}, want offered")
    ctx.check("SCRAM-SHA-1" in raw.mechanisms(f), f"SCRAM-SHA-1 not offered in clear: {raw.mechanisms(f)}")
    c.close()
    r = ctx.client(px.port, mech="SCRAM-SHA-1", no_tls=True)
    ctx.check(r.get("ok"), f"SCRAM-SHA-1 in clear: {r.get('error')}")
    s = ctx.session(px, 1)
    auth = s.expect(ctx, "auth", mechanism="SCRAM-SHA-1")
    if auth:
        ctx.check(auth.get("tls") is False, f"auth tls {auth.get('tls')!r}")
        ctx.check(auth.get("username", auth.get("authcid")) == "alice", f"auth user: {auth}")
    s.expect(ctx, "auth_result", outcome="success", by="upstream")
    ctx.check(not s.all("tls", leg="client"), f"client-leg TLS without STARTTLS: {s.all('tls')}")
    ctx.check(s.all("tls", leg="upstream", ok=True), f"upstream leg not on TLS: {s.all('tls')}")
    ctx.check(not [p for p in s.all("policy") if p.get("action") == "reject"],
              f"policy rejection: {s.all('policy')}")
    login = s.expect(ctx, "login", outcome="success")
    if login:
        ctx.check(login.get("client_tls") is False and login.get("upstream_tls"),
                  f"login client_tls {login.get('client_tls')!r} upstream_tls {login.get('upstream_tls')!r}")


# ================================================================ client-leg TLS


@case("tls_min_version_13")
def tls_min_version_13(ctx):
    """tls_min_version = TLSv1.3: a client capped at TLS 1.2 fails the
    handshake (after STARTTLS and on the Direct TLS port), which is logged
    with the close; a normal client gets TLS 1.3."""
    px = ctx.proxy(tls_min_version="TLSv1.3")
    c = track(ctx, Tls12Client(px.port, ca=CA))
    c.open_stream()
    handshake = "ok"
    try:
        c.starttls()
    except ssl.SSLError as e:
        handshake = f"refused ({e.reason})"
    except (OSError, AssertionError) as e:
        handshake = f"failed ({e})"
    ctx.check(handshake != "ok", "a TLS 1.2 client completed the handshake after STARTTLS")
    c.close()
    s = ctx.session(px, 0)
    bad = s.expect(ctx, "tls", leg="client", ok=False)
    if bad:
        ctx.check(bad.get("error"), f"tls ok false without error: {bad}")
    s.expect(ctx, "close")
    ctx.check(not s.all("auth"), "auth after a failed handshake")
    ctx.check(not s.all("login"), f"login record without a login attempt: {s.all('login')}")
    # Direct TLS port
    direct = "ok"
    try:
        d = track(ctx, Tls12Client(px.tls_port, ca=CA, direct_tls=True))
        d.send(raw.header())
        if d.next_element(timeout=3) is None:
            direct = "closed"
    except (ssl.SSLError, OSError) as e:
        direct = f"refused ({e})"
    ctx.check(direct != "ok", "a TLS 1.2 client completed the Direct TLS handshake")
    s = ctx.session(px, 1)
    s.expect(ctx, "tls", leg="client", ok=False)
    s.expect(ctx, "close")
    # a normal client
    r = ctx.client(px.port, mech="PLAIN")
    ctx.check(r.get("ok"), f"normal client: {r.get('error')}")
    s = ctx.session(px, 2)
    good = s.expect(ctx, "tls", leg="client", ok=True)
    if good:
        ctx.check(good.get("version") == "TLSv1.3", f"client tls version {good.get('version')!r}")
    ctx.check(px.alive(), "proxy died")


@case("tls_ciphers_tls12")
def tls_ciphers_tls12(ctx):
    """tls_ciphers = ECDHE-ECDSA-CHACHA20-POLY1305: a TLS 1.2 client gets that
    cipher (logged), one that offers only others is refused."""
    px = ctx.proxy(tls_ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
    c = track(ctx, Tls12Client(px.port, ca=CA))
    c.open_stream()
    c.starttls()
    ctx.check(c.sock.cipher()[0] == "ECDHE-ECDSA-CHACHA20-POLY1305", f"cipher {c.sock.cipher()}")
    c.open_stream()
    c.close()
    s = ctx.session(px, 0)
    t = s.expect(ctx, "tls", leg="client", ok=True)
    if t:
        ctx.check(t.get("version") == "TLSv1.2" and t.get("cipher") == "ECDHE-ECDSA-CHACHA20-POLY1305",
                  f"tls event {t.get('version')!r} {t.get('cipher')!r}")
    other = track(ctx, Tls12Client(px.port, ca=CA, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
    other.open_stream()
    try:
        other.starttls()
        ctx.check(False, f"handshake with an excluded cipher succeeded: {other.sock.cipher()}")
    except (ssl.SSLError, OSError):
        pass
    s = ctx.session(px, 1)
    s.expect(ctx, "tls", leg="client", ok=False)


@case("tls_ciphers_invalid", prosody=None)
def tls_ciphers_invalid(ctx):
    """tls_ciphers that match no cipher: `-t` fails (1) naming the key, and
    so does a start (1, one line)."""
    px = ctx.proxy(upstream_port=harness.port_refusing(), start=False,
                   tls_ciphers="NO-SUCH-CIPHER:ALSO-BOGUS")
    px.write_config()
    r = ctx.run_bin(["-t", "-c", str(px.config)])
    out = (r.stdout + r.stderr).strip()
    ctx.check(r.returncode == 1, f"-t with tls_ciphers=NO-SUCH-CIPHER: status {r.returncode}: {out[:200]!r}")
    ctx.check("tls_ciphers" in out, f"-t does not name tls_ciphers: {out[:200]!r}")
    try:
        r = ctx.run_bin(["-c", str(px.config)], timeout=5)
        ctx.check(r.returncode == 1, f"start with bad tls_ciphers: status {r.returncode}")
        ctx.check("tls_ciphers" in r.stderr and len(r.stderr.strip().splitlines()) == 1,
                  f"start error not one line naming tls_ciphers: {r.stderr.strip()[:200]!r}")
    except subprocess.TimeoutExpired:
        ctx.check(False, "proxy started with tls_ciphers matching no cipher")


# ================================================================ identities


def check_identity_refusal(ctx, s, rule, user, mech):
    auth = s.expect(ctx, "auth", mechanism=mech)
    if auth:
        ctx.check(auth.get("authcid", auth.get("username")) == user, f"auth identity: {auth}")
    expect_policy(ctx, s, rule, "reject", user)
    s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="not-authorized")
    ctx.check(not s.all("auth_result", by="upstream"), f"an upstream result: {s.all('auth_result')}")
    login = s.expect(ctx, "login", outcome="failure")
    if login:
        ctx.check(login.get("by") == "proxy", f"login by {login.get('by')!r}")
        ctx.check(f"{rule}:reject" in (login.get("policy") or []), f"login policy {login.get('policy')}")


@case("users_deny_plain_scram")
def users_deny_plain_scram(ctx):
    """users_deny = B?B@LAB.TEST (a case-insensitive pattern on identity@domain):
    bob is refused with not-authorized by the proxy, with PLAIN and with
    SCRAM-SHA-1 (identity in the first message), with his right password,
    and the server never sees it; alice logs in."""
    slog = ServerLog(ctx.prosody())
    px = ctx.proxy(users_deny="nobody B?B@LAB.TEST")
    c, _ = tls_client(ctx, px)
    c.auth("PLAIN", raw.plain_payload("bob", USERS["bob"]))
    el = c.next_element()
    ctx.check(failure_of(c, el) == "not-authorized", f"PLAIN as bob: {failure_of(c, el)}")
    c.close()
    check_identity_refusal(ctx, ctx.session(px, 0), "users_deny", "bob", "PLAIN")
    # A real client with SCRAM-SHA-1 forced.
    r = ctx.client(px.port, jid=BOB, mech="SCRAM-SHA-1")
    ctx.check(not r.get("ok") and r.get("condition") == "not-authorized",
              f"SCRAM-SHA-1 as bob: want not-authorized, got {r}")
    s = ctx.session(px, 1)
    check_identity_refusal(ctx, s, "users_deny", "bob", "SCRAM-SHA-1")
    ctx.check(not s.all("sasl_step", dir="s2c"), f"a server challenge was relayed: {s.all('sasl_step')}")
    r = ctx.client(px.port, mech="SCRAM-SHA-1")
    ctx.check(r.get("ok"), f"alice: {r.get('error')}")
    ctx.check(slog.wait_authenticated("alice"), "alice's login (the fence) not in Prosody's log")
    ctx.check(slog.authenticated("bob") == 0, "Prosody authenticated bob: a refused attempt reached it")


@case("users_allow_plain")
def users_allow_plain(ctx):
    """users_allow = alice: bob (right password) is refused by the proxy with
    not-authorized (rule users_allow), on a connection that then logs in as
    alice; the server never sees bob."""
    slog = ServerLog(ctx.prosody())
    px = ctx.proxy(users_allow="alice")
    c, _ = tls_client(ctx, px)
    c.auth("PLAIN", raw.plain_payload("bob", USERS["bob"]))
    el = c.next_element()
    ctx.check(failure_of(c, el) == "not-authorized", f"PLAIN as bob: {failure_of(c, el)}")
    # the same connection goes on as alice
    c.auth("PLAIN", raw.plain_payload("ALICE", USERS["alice"]))
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "success",
              f"ALICE after bob's refusal on the same connection: {c.describe(el)}")
    c.close()
    s = ctx.session(px, 0)
    expect_policy(ctx, s, "users_allow", "reject", "bob")
    s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="not-authorized")
    s.expect(ctx, "auth_result", outcome="success", by="upstream")
    login = s.expect(ctx, "login", outcome="success")
    if login:
        ctx.check(login.get("attempts") == 2, f"login attempts {login.get('attempts')!r}, want 2")
    ctx.check(slog.wait_authenticated("alice"), "alice's login not in Prosody's log")
    ctx.check(slog.authenticated("bob") == 0, "Prosody authenticated bob: the refused attempt reached it")


@case("users_deny_digest_md5", prosody="cyrus")
def users_deny_digest_md5(ctx):
    """DIGEST-MD5 reveals the user only in the client's first response, when
    the server is mid-exchange: with users_deny = carol the proxy aborts the
    exchange upstream, tells the client not-authorized, and the same
    connection can start a new exchange (the server's answer to the abort
    is not relayed)."""
    px = ctx.proxy(users_deny="carol")
    r = ctx.client(px.port, jid=f"carol@{DOMAIN}", mech="DIGEST-MD5")
    ctx.check(not r.get("ok") and r.get("condition") == "not-authorized",
              f"DIGEST-MD5 as carol: want not-authorized, got {r}")
    s = ctx.session(px, 0)
    expect_policy(ctx, s, "users_deny", "reject", "carol")
    s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="not-authorized")
    ctx.check(not s.all("auth_result", outcome="success"), f"success: {s.all('auth_result')}")
    # raw: the state after the abort is clean
    c, _ = tls_client(ctx, px)
    c.auth("DIGEST-MD5")
    ch = c.next_element()
    ctx.require(ch is not None and raw.local(ch.tag) == "challenge", f"first challenge: {c.describe(ch)}")
    c.send(f"<response xmlns='{raw.NS_SASL}'>"
           + base64.b64encode(b'username="carol",realm="lab.test",nonce="x",cnonce="y",nc=00000001,'
                              b'qop=auth,digest-uri="xmpp/lab.test",response=00000000000000000000000000000000,'
                              b'charset=utf-8').decode() + "</response>")
    el = c.next_element()
    ctx.check(failure_of(c, el) == "not-authorized", f"response as carol: {failure_of(c, el)}")
    c.auth("DIGEST-MD5")
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "challenge",
              f"a new exchange after the refusal: want <challenge>, got {c.describe(el)}")
    extra = c.next_element(timeout=0.5)
    ctx.check(extra is None, f"an unexpected element after the new challenge: {c.describe(extra)}")
    c.close()
    s = ctx.session(px, 1)
    ctx.check(len(s.all("auth_result")) == 1, f"auth_results: {s.all('auth_result')}")
    ctx.check(not [e for e in s.all("auth_result") if e.get("condition") == "aborted"],
              "the server's <aborted/> was reported as the result")


# ================================================================ auth_failures


def timed_failure(c, timeout=5):
    """(condition, seconds) of the answer to an <auth> just sent."""
    t0 = time.monotonic()
    el = c.next_element(timeout=timeout)
    return failure_of(c, el), time.monotonic() - t0, el


@case("auth_failures_limit")
def auth_failures_limit(ctx):
    """auth_failures = 2/2: two wrong PLAIN passwords from 127.0.0.1 (on two
    connections at once) are answered after a pause of 0.2-1 s; the next
    attempt, with the right password, gets temporary-auth-failure from the
    proxy and never reaches the server; once the 2 s window is over a
    correct login works again."""
    slog = ServerLog(ctx.prosody())
    px = ctx.proxy(auth_failures="2/2")
    a, _ = tls_client(ctx, px)
    b, _ = tls_client(ctx, px)
    a.auth("PLAIN", raw.plain_payload("alice", WRONG))
    b.auth("PLAIN", raw.plain_payload("alice", WRONG))
    t_sent = time.monotonic()
    cond_a, took_a, _ = timed_failure(a)
    t_first = time.monotonic()
    cond_b, took_b, _ = timed_failure(b)
    took_b += took_a
    for name, cond, took in (("a", cond_a, took_a), ("b", cond_b, took_b)):
        ctx.check(cond == "not-authorized", f"wrong password on {name}: {cond}")
        ctx.check(0.15 <= took < 2.0, f"wrong password on {name} answered after {took:.3f} s, want 0.2-1 s")
    # the limit is reached: the right password is refused by the proxy
    ctx.require(time.monotonic() - t_sent < 1.9,
                "the third attempt would come after the 2 s window (too slow a machine?)")
    b.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    cond, took, _ = timed_failure(b)
    ctx.check(cond == "temporary-auth-failure", f"after 2 failures: want temporary-auth-failure, got {cond}")
    ctx.check(0.15 <= took < 2.0, f"refusal answered after {took:.3f} s, want 0.2-1 s")
    s = ctx.session(px, 1, closed=False)
    expect_policy(ctx, s, "auth_failures", "reject")
    s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="temporary-auth-failure")
    s.expect(ctx, "auth_result", outcome="failure", by="upstream", condition="not-authorized")
    ctx.check(len(s.all("auth_result", by="upstream")) == 1,
              f"the refused attempt was relayed: {s.all('auth_result')}")
    a.close()
    b.close()
    # the window (2 s from the first failure, counted before its answer
    # went out) is over by t_first + 2: wait for it, then poll with logins
    time.sleep(max(0.0, t_first + 2.05 - time.monotonic()))
    attempts = []

    def login_ok():
        c = ctx.raw(px.port)
        try:
            c.open_stream()
            c.starttls()
            c.open_stream()
            c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
            el = c.next_element()
            attempts.append(c.describe(el))
            return el is not None and raw.local(el.tag) == "success"
        finally:
            c.close()
    ok = harness.wait_until(login_ok, 4, 0.05)
    ctx.check(ok, f"no successful login after the window: {attempts}")
    ctx.check(len(attempts) <= 2, f"{len(attempts)} attempts after the window: {attempts}")
    ctx.check(slog.wait_authenticated("alice"), "the login after the window is not in Prosody's log")
    ctx.check(slog.authenticated("alice") == 1,
              f"Prosody authenticated alice {slog.authenticated('alice')} times, want 1: the refused attempt reached it")


@case("auth_failures_scram")
def auth_failures_scram(ctx):
    """auth_failures = 1/30 with a real client and SCRAM-SHA-1: one wrong
    password fails at the server; the next login from the same address, on
    a new connection and with the right password, is refused by the proxy
    with temporary-auth-failure before any SCRAM step reaches the server."""
    px = ctx.proxy(auth_failures="1/30")
    r = ctx.client(px.port, password=WRONG, mech="SCRAM-SHA-1")
    ctx.check(not r.get("ok") and r.get("condition") == "not-authorized", f"wrong password: {r}")
    s = ctx.session(px, 0)
    s.expect(ctx, "auth_result", outcome="failure", by="upstream", condition="not-authorized")
    r = ctx.client(px.port, mech="SCRAM-SHA-1")
    ctx.check(not r.get("ok") and r.get("condition") == "temporary-auth-failure",
              f"right password after the limit: want temporary-auth-failure, got {r}")
    s = ctx.session(px, 1)
    expect_policy(ctx, s, "auth_failures", "reject")
    s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="temporary-auth-failure")
    ctx.check(not s.all("sasl_step"), f"the refused SCRAM exchange went on: {s.all('sasl_step')}")
    login = s.expect(ctx, "login", outcome="failure")
    if login:
        ctx.check(login.get("condition") == "temporary-auth-failure" and login.get("by") == "proxy",
                  f"login condition {login.get('condition')!r} by {login.get('by')!r}")


# ================================================================ login_timeout


@case("login_timeout_mid_sasl")
def login_timeout_mid_sasl(ctx):
    """login_timeout = 1: a client that stalls after its SCRAM-SHA-1
    client-first message (it gets the challenge and never answers), and one
    that stops inside its <auth> element: both get connection-timeout; the
    first one's login record says incomplete."""
    px = ctx.proxy(login_timeout="1")
    t0 = time.monotonic()
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.auth("SCRAM-SHA-1", scram_first("alice"))
    ch = c.next_element()
    ctx.check(ch is not None and raw.local(ch.tag) == "challenge", f"want a challenge, got {c.describe(ch)}")
    d = ctx.raw(px.port)
    d.open_stream()
    d.starttls()
    d.open_stream()
    d.send(f"<auth xmlns='{raw.NS_SASL}' mechanism='SCRAM-SHA-1'>")
    for name, cl in (("stalled after client-first", c), ("inside <auth>", d)):
        cond = cl.stream_error(timeout=5)
        ctx.check(cond == "connection-timeout", f"{name}: stream error {cond!r}; {cl.describe()}")
        ctx.check(cl.wait_closed(5), f"{name}: connection not closed")
    took = time.monotonic() - t0
    ctx.check(took < 3.5, f"timeouts took {took:.1f} s with login_timeout = 1")
    s = ctx.session(px, 0)
    s.expect(ctx, "stream_error", condition="connection-timeout")
    login = s.expect(ctx, "login", outcome="incomplete")
    if login:
        ctx.check(login.get("mechanism") == "SCRAM-SHA-1", f"login mechanism {login.get('mechanism')!r}")
        ctx.check(login.get("user") in ("alice", ALICE), f"login user {login.get('user')!r}")
        ms = login.get("ms")
        ctx.check(isinstance(ms, (int, float)) and 900 <= ms < 3000, f"login ms {ms!r}, want about 1000")
    s.expect(ctx, "close")
    ctx.check(not s.all("auth_result"), f"auth_result for a stalled exchange: {s.all('auth_result')}")
    s = ctx.session(px, 1)
    s.expect(ctx, "stream_error", condition="connection-timeout")
    s.expect(ctx, "close")


# ================================================================ strip_starttls


@case("strip_starttls_plain_accepted")
def strip_starttls_plain_accepted(ctx):
    """strip_starttls = yes: the client is offered no <starttls>; a client
    that sends PLAIN in the clear gets through (the upstream leg keeps TLS),
    and the login record says downgrade accepted."""
    px = ctx.proxy(strip_starttls="yes")
    c = ctx.raw(px.port)
    f = c.open_stream()
    ctx.check(raw.has_starttls(f) == "none", f"starttls still offered: {raw.has_starttls(f)!r}")
    ctx.check("PLAIN" in raw.mechanisms(f), f"PLAIN not offered in clear: {raw.mechanisms(f)}")
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    el = c.next_element()
    ctx.require(el is not None and raw.local(el.tag) == "success", f"PLAIN in clear: {c.describe(el)}")
    c.open_stream()
    c.send(f"<iq type='set' id='b1'><bind xmlns='{raw.NS_BIND}'><resource>raw</resource></bind></iq>")
    el = c.expect("iq")
    ctx.check(el.get("type") == "result", f"bind: {c.describe(el)}")
    c.send("</stream:stream>")
    c.wait_closed(5)
    c.close()
    s = ctx.session(px)
    f1 = s.first("features", n=1)
    if ctx.check(f1, "no features n=1"):
        ctx.check(f1.get("starttls") == "none" and f1.get("upstream_starttls") == "required",
                  f"features starttls {f1.get('starttls')!r} upstream {f1.get('upstream_starttls')!r}")
    expect_policy(ctx, s, "strip_starttls", "strip")
    expect_policy(ctx, s, "plain_without_tls", "log")
    s.expect(ctx, "auth_result", outcome="success", by="upstream")
    ctx.check(s.all("tls", leg="upstream", ok=True), f"upstream leg without TLS: {s.all('tls')}")
    login = s.expect(ctx, "login", outcome="success")
    if login:
        ctx.check(login.get("downgrade") == "accepted", f"login downgrade {login.get('downgrade')!r}")
        ctx.check(login.get("client_tls") is False and login.get("upstream_tls"),
                  f"login client_tls {login.get('client_tls')!r} upstream_tls {login.get('upstream_tls')!r}")


@case("strip_starttls_slixmpp_accepts")
def strip_starttls_slixmpp_accepts(ctx):
    """strip_starttls = yes and slixmpp 1.8.3 with its defaults: it does not
    insist on STARTTLS (its force_starttls is never enforced) and logs in
    with SCRAM-SHA-1 in the clear (its unencrypted_scram defaults to true,
    unencrypted_plain to false): the downgrade is accepted and the login
    record says so."""
    px = ctx.proxy(strip_starttls="yes")
    r = ctx.client(px.port)
    ctx.check(r.get("ok") and r.get("mechanism") == "SCRAM-SHA-1",
              f"slixmpp with defaults: want a SCRAM-SHA-1 login in the clear, got {r}")
    s = ctx.session(px)
    auth = s.expect(ctx, "auth")
    if auth:
        ctx.check(auth.get("tls") is False and auth.get("mechanism") != "PLAIN", f"auth {auth}")
    ctx.check(not s.all("tls", leg="client"), f"client-leg TLS: {s.all('tls')}")
    expect_policy(ctx, s, "strip_starttls", "strip")
    login = s.expect(ctx, "login", outcome="success")
    if login:
        ctx.check(login.get("downgrade") == "accepted", f"login downgrade {login.get('downgrade')!r}")
        ctx.check("strip_starttls:strip" in (login.get("policy") or []), f"login policy {login.get('policy')}")


@case("strip_starttls_client_refuses")
def strip_starttls_client_refuses(ctx):
    """strip_starttls = yes and clients that will not go on in the clear:
    slixmpp told to use PLAIN (which it refuses to send without TLS) and a
    raw client that closes its stream when it sees no <starttls>. Neither
    authenticates; each session's login record is written anyway, with
    downgrade refused."""
    slog = ServerLog(ctx.prosody())
    px = ctx.proxy(strip_starttls="yes")
    r = ctx.client(px.port, mech="PLAIN", timeout=5)
    ctx.check(not r.get("ok"), f"slixmpp sent PLAIN without TLS: {r}")
    c = ctx.raw(px.port)
    f = c.open_stream()
    ctx.check(raw.has_starttls(f) == "none", f"starttls still offered: {raw.has_starttls(f)!r}")
    c.send("</stream:stream>")
    ctx.check(c.wait_closed(5), "the proxy did not close after the client's </stream>")
    c.close()
    for i, who in ((0, "slixmpp with PLAIN"), (1, "raw client")):
        s = ctx.session(px, i)
        ctx.check(not s.all("auth"), f"{who}: auth in the clear: {s.all('auth')}")
        expect_policy(ctx, s, "strip_starttls", "strip")
        login = s.expect(ctx, "login")
        if login:
            ctx.check(login.get("downgrade") == "refused", f"{who}: login downgrade {login.get('downgrade')!r}")
            ctx.check(login.get("outcome") == "incomplete", f"{who}: login outcome {login.get('outcome')!r}")
            ctx.check(login.get("client_tls") is False, f"{who}: login client_tls {login.get('client_tls')!r}")
    ctx.check(slog.authenticated("alice") == 0, "Prosody authenticated alice")


@case("strip_starttls_client_insists")
def strip_starttls_client_insists(ctx):
    """strip_starttls = yes: a client that sends <starttls/> anyway gets
    <proceed/>, TLS, and logs in; downgrade refused."""
    px = ctx.proxy(strip_starttls="yes")
    c = ctx.raw(px.port)
    f = c.open_stream()
    ctx.check(raw.has_starttls(f) == "none", f"starttls still offered: {raw.has_starttls(f)!r}")
    try:
        c.starttls()
        f = c.open_stream()
        ctx.check("PLAIN" in raw.mechanisms(f), f"after TLS: {raw.mechanisms(f)}")
        c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
        el = c.next_element()
        ctx.check(el is not None and raw.local(el.tag) == "success", f"PLAIN after TLS: {c.describe(el)}")
    except (AssertionError, ssl.SSLError, OSError) as e:
        ctx.check(False, f"STARTTLS that was not offered: {e}")
    c.close()
    s = ctx.session(px)
    ctx.check([e for e in s.all("starttls") if e.get("leg", "client") == "client"], "no client starttls event")
    s.expect(ctx, "tls", leg="client", ok=True)
    auth = s.expect(ctx, "auth", mechanism="PLAIN")
    if auth:
        ctx.check(auth.get("tls") is True, f"auth tls {auth.get('tls')!r}")
    login = s.expect(ctx, "login", outcome="success")
    if login:
        ctx.check(login.get("downgrade") == "refused", f"login downgrade {login.get('downgrade')!r}")
        ctx.check(login.get("client_tls"), f"login client_tls {login.get('client_tls')!r}")


# ================================================================ offer_mechanisms


@case("offer_mechanisms_plain")
def offer_mechanisms_plain(ctx):
    """offer_mechanisms = PLAIN in front of a server offering PLAIN and
    SCRAM-SHA-1: the client sees exactly PLAIN (logged), and slixmpp with
    no mechanism forced logs in with PLAIN."""
    px = ctx.proxy(offer_mechanisms="PLAIN")
    c, f = tls_client(ctx, px)
    ctx.check(raw.mechanisms(f) == ["PLAIN"], f"client offered {raw.mechanisms(f)}, want ['PLAIN']")
    c.close()
    r = ctx.client(px.port)
    ctx.check(r.get("ok") and r.get("mechanism") == "PLAIN", f"slixmpp: {r}")
    s = ctx.session(px, 1)
    feats = sasl_features(s, tls=True)
    if ctx.check(feats, f"no features after TLS: {s.all('features')}"):
        ctx.check(feats[-1].get("offered") == ["PLAIN"], f"features offered {feats[-1].get('offered')}")
        ctx.check("SCRAM-SHA-1" in (feats[-1].get("mechanisms") or []),
                  f"server's mechanisms {feats[-1].get('mechanisms')}")
    expect_policy(ctx, s, "offer_mechanisms", "log", "PLAIN")
    s.expect(ctx, "auth_result", outcome="success", by="upstream")
    login = s.expect(ctx, "login", outcome="success")
    if login:
        ctx.check(login.get("mechanism") == "PLAIN" and login.get("offered") == ["PLAIN"],
                  f"login mechanism {login.get('mechanism')!r} offered {login.get('offered')}")


@case("offer_mechanisms_fake")
def offer_mechanisms_fake(ctx):
    """offer_mechanisms = X-FAKE: the client is offered only X-FAKE; trying
    it is relayed, and the server's invalid-mechanism comes back (by
    upstream)."""
    px = ctx.proxy(offer_mechanisms="X-FAKE")
    c, f = tls_client(ctx, px)
    ctx.check(raw.mechanisms(f) == ["X-FAKE"], f"client offered {raw.mechanisms(f)}, want ['X-FAKE']")
    c.auth("X-FAKE", base64.b64encode(b"anything").decode())
    el = c.next_element()
    ctx.check(failure_of(c, el) == "invalid-mechanism", f"X-FAKE: want invalid-mechanism, got {failure_of(c, el)}")
    c.close()
    s = ctx.session(px)
    expect_policy(ctx, s, "offer_mechanisms", "log", "X-FAKE")
    s.expect(ctx, "auth", mechanism="X-FAKE")
    s.expect(ctx, "auth_result", outcome="failure", by="upstream", condition="invalid-mechanism")
    ctx.check(not s.all("auth_result", by="proxy"), f"refused by the proxy: {s.all('auth_result')}")


# ================================================================ SIGHUP


@case("sighup_users_deny")
def sighup_users_deny(ctx):
    """users_deny = alice added by SIGHUP: a new login as alice is refused by
    the proxy (never seen by the server), while alice's session from before
    the reload stays up and still gets a message to itself."""
    slog = ServerLog(ctx.prosody())
    px = ctx.proxy()
    old = ctx.raw(px.port)
    try:
        jid = raw.login_plain(old, "alice", USERS["alice"])
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")
    ctx.require(slog.wait_authenticated("alice"), "alice's first login is not in Prosody's log")
    px.reload(users_deny="alice")
    ctx.require(px.events.wait("reload", 5, detail="ok"), f"no reload ok event: {px.events.find('reload')}")
    c, _ = tls_client(ctx, px)
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    el = c.next_element()
    ctx.check(failure_of(c, el) == "not-authorized", f"alice after the reload: {failure_of(c, el)}")
    c.close()
    s = ctx.session(px, 1)
    expect_policy(ctx, s, "users_deny", "reject", "alice")
    s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="not-authorized")
    # the old session carries stanzas, and was not touched by the new policy
    old.send(f"<message to='{jid}' type='chat' id='m1'><body>after reload</body></message>")
    el = old.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "message" and "after reload" in raw.ET.tostring(el, "unicode"),
              f"old session after the reload: {old.describe(el)}")
    s0 = ctx.session(px, 0, closed=False)
    ctx.check(not s0.all("policy", rule="users_deny"), f"the old session was judged again: {s0.all('policy')}")
    ctx.check(not s0.all("close"), "the old session was closed by the reload")
    old.send("</stream:stream>")
    old.wait_closed(5)
    fence(ctx, px, slog, "bob", USERS["bob"])
    ctx.check(slog.authenticated("alice") == 1,
              f"Prosody authenticated alice {slog.authenticated('alice')} times, want 1: the refused login reached it")


@case("users_deny_digest_md5_quick_retry", prosody="cyrus")
def users_deny_digest_md5_quick_retry(ctx):
    """As users_deny_digest_md5, with a client whose next <auth> reaches the
    proxy before the server's answer to the proxy's <abort/> (a client near
    the proxy, a server far away; here: the retry sent in the same write as
    the refused response): the new exchange must still work."""
    px = ctx.proxy(users_deny="carol")
    c, _ = tls_client(ctx, px)
    c.auth("DIGEST-MD5")
    ch = c.next_element()
    ctx.require(ch is not None and raw.local(ch.tag) == "challenge", f"first challenge: {c.describe(ch)}")
    c.send(f"<response xmlns='{raw.NS_SASL}'>"
           + base64.b64encode(b'username="carol",realm="lab.test",nonce="x",cnonce="y",nc=00000001,'
                              b'qop=auth,digest-uri="xmpp/lab.test",response=00000000000000000000000000000000,'
                              b'charset=utf-8').decode() + "</response>"
           + f"<auth xmlns='{raw.NS_SASL}' mechanism='DIGEST-MD5'/>")
    el = c.next_element()
    ctx.check(failure_of(c, el) == "not-authorized", f"response as carol: {failure_of(c, el)}")
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "challenge",
              f"the retry: want <challenge>, got {c.describe(el)}")
    c.close()
    s = ctx.session(px)
    ctx.check(not s.all("stream_error"), f"stream error: {s.all('stream_error')}")


@case("users_deny_unicode_folding")
def users_deny_unicode_folding(ctx):
    """users_deny = alice must hold for every spelling the server maps to
    alice. Prosody runs the SASL identity through SASLprep and nodeprep
    (NFKC, case folding, characters mapped to nothing), so PLAIN as the
    fullwidth "\uff41\uff4c\uff49\uff43\uff45" or as "ali<U+00AD soft hyphen>ce" with
    alice's password logs in as alice@lab.test. The proxy must refuse such
    an identity (or at least the server must not authenticate alice)."""
    slog = ServerLog(ctx.prosody())
    px = ctx.proxy(users_deny="alice")
    spellings = {
        "fullwidth": "".join(chr(0xFF41 + ord(ch) - ord("a")) for ch in "alice"),
        "soft hyphen": "ali\u00adce",
    }
    for i, (name, user) in enumerate(spellings.items()):
        c, _ = tls_client(ctx, px)
        c.auth("PLAIN", raw.plain_payload(user, USERS["alice"]))
        el = c.next_element()
        got = "success" if el is not None and raw.local(el.tag) == "success" else failure_of(c, el)
        ctx.check(got == "not-authorized", f"PLAIN as {name} alice {user!r} under users_deny = alice: {got}")
        c.close()
        s = ctx.session(px, i)
        ctx.check(s.all("auth_result", outcome="failure", by="proxy"),
                  f"{name}: not refused by the proxy: {s.all('auth_result')}")
    fence(ctx, px, slog, "bob", USERS["bob"])
    n = slog.authenticated("alice")
    ctx.check(n == 0, f"Prosody logged 'Authenticated as alice@lab.test' {n} time(s): users_deny = alice bypassed")


@case("users_allow_anonymous")
def users_allow_anonymous(ctx):
    """users_allow = alice ("if set, only these identities may try"): an
    ANONYMOUS login, which names no identity at all, must not get through
    (refused by the proxy with not-authorized)."""
    px = ctx.proxy(users_allow="alice")
    r = ctx.client(px.port, jid=ANON_DOMAIN, anonymous=True)
    ctx.check(not r.get("ok"), f"ANONYMOUS logged in under users_allow = alice: {r.get('jid')}")
    s = ctx.session(px)
    s.expect(ctx, "auth", mechanism="ANONYMOUS")
    s.expect(ctx, "auth_result", outcome="failure", by="proxy")
    ctx.check(s.all("policy", rule="users_allow", action="reject"),
              f"no policy users_allow reject: {s.all('policy')}")
