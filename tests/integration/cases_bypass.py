"""Routes around policy (issue 8), against a real Prosody 0.12.

A hostile client does not ask whether a rule applies; it looks for a
spelling of its attempt that the proxy reads one way and the server
another, or for a path the rule was never put on. Each case here replays
one such finding, and the route cases (bypass_routes_*) try every path we could
think of against one rule.

Variants "hostile" (TLS required) and "hostile_open" (neither TLS nor
PLAIN-over-TLS required) have the denied user mallory, kiss (for the
long-s and Kelvin-sign spellings), mod_legacyauth (XEP-0078 iq-auth) and
mod_register_ibr, and log at debug level; "hostile" stores its passwords
with 100000 PBKDF2 iterations, so that each password check takes Prosody
tens of milliseconds and attempts sent at once are all in flight before
its first answer. The server's own log is the witness that an attempt
never reached it:
  "test password for user 'U'"   Prosody checked a password for U (PLAIN, iq-auth)
  "Authenticated as U@lab.test"  U logged in (any mechanism)
  "Received[c2s_unauthed]: <..." every element it got before login
Every refused attempt uses the right password, so had it been relayed
Prosody would have logged it; a later login it does log (a fence) shows
its log was read far enough.
"""

import base64
import hashlib
import hmac
import os
import ssl
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import harness
import raw
from cases import DOMAIN, PROSODY_VARIANTS, USERS, WRONG, Session, authcid, case
from cases_policy import ServerLog, failure_of, tls_client

PW = PROSODY_VARIANTS["hostile"]["users"]
MALLORY = PW["mallory"]
# Conditions a refusal may carry (RFC 6120 6.5): the fix may refuse an
# ambiguous payload as malformed rather than re-read it.
REFUSED = ("not-authorized", "malformed-request", "incorrect-encoding", "invalid-mechanism")
NS_AUTH = "jabber:iq:auth"
NS_REGISTER = "jabber:iq:register"


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


# ================================================================ witnesses


class Witness(ServerLog):
    """Prosody's log since this was made (see the module docstring)."""

    def lines(self):
        return self.text().splitlines()

    def tested(self, user):
        return sum(1 for l in self.lines() if f"test password for user '{user}'" in l)

    def received(self, *parts):
        """Elements Prosody received before login whose logged start tag
        has every one of parts."""
        return sum(1 for l in self.lines()
                   if "Received[c2s_unauthed]: <" in l and all(p in l for p in parts))

    def saw(self, marker):
        return sum(1 for l in self.lines() if marker in l)

    def never_logged_in(self, ctx, *users):
        for u in users:
            n, t = self.authenticated(u), self.tested(u)
            ctx.check(n == 0, f"Prosody logged 'Authenticated as {u}@{DOMAIN}' {n} time(s)")
            ctx.check(t == 0, f"Prosody checked a password for {u} {t} time(s): a refused attempt reached it")


def fence(ctx, px, slog, user="bob"):
    """A SCRAM-SHA-1 login of user through px that Prosody logs (SCRAM: no
    rule here refuses it, and it leaves no 'test password' line)."""
    before = slog.authenticated(user)
    c, _ = tls_client(ctx, px)
    el = scram(c, "n,,", f"n={user},r={{r}}", USERS[user])
    c.close()
    ok = ctx.check(el is not None and raw.local(el.tag) == "success",
                   f"fence login of {user}: {answer(c, el)}")
    return ok and ctx.check(slog.wait_authenticated(user, before + 1),
                            f"fence login of {user} not in Prosody's log")


def direct_fence(ctx, slog, user="bob"):
    """The fence straight to Prosody, for a proxy that would refuse it."""
    before = slog.authenticated(user)
    c = ctx.raw(ctx.prosody().port)
    try:
        raw.login_plain(c, user, USERS[user], bind=False)
    except AssertionError as e:
        ctx.check(False, f"direct fence login of {user}: {e}")
    c.close()
    return ctx.check(slog.wait_authenticated(user, before + 1), f"direct fence of {user} not in Prosody's log")


# base64 payloads sent here that carry a password in a form the shared
# search does not build (a third NUL, padding mid-string)
SENT_PAYLOADS = set()


def leak_check(ctx, px):
    """The shared teardown searches for USERS' passwords; these are ours."""
    for user in ("mallory", "kiss"):
        bad = harness.find_secrets(px.written_files(), PW[user], [user])
        ctx.check(not bad, f"{user}'s password in proxy output: {bad}")
    for f in px.written_files():
        data = f.read_bytes() if f.exists() else b""
        bad = [p for p in SENT_PAYLOADS if p.encode() in data]
        ctx.check(not bad, f"{f.name} contains a payload carrying a password: {bad[0][:16] if bad else ''}...")


# ================================================================ clients


def answer(c, el):
    """What el says: 'success', a SASL condition, 'stream-error:COND',
    'iq-TYPE', or a description of what came instead."""
    if el is None:
        return c.describe()
    if el.tag == raw.q(raw.NS_STREAM, "error"):
        return "stream-error:" + raw.stream_error_condition(el)
    name = raw.local(el.tag)
    if name == "failure":
        return raw.sasl_condition(el)
    if name == "iq":
        return f"iq-{el.get('type')}"
    return name


def sasl_answer(c, timeout=None):
    """The next element that is not an iq (iq results of a register
    query pipelined before are skipped)."""
    while True:
        el = c.next_element(timeout)
        if el is None or raw.local(el.tag) != "iq":
            return el


def scram(c, gs2, bare, password, mech="SCRAM-SHA-1"):
    """SCRAM-SHA-1 with the GS2 header and client-first-bare the case
    chooses (bare has {r} for the nonce), computed as Prosody computes it
    (AuthMessage = everything after the GS2 header, c= = the header).
    Returns the server's last element."""
    first_bare = bare.format(r=b64(os.urandom(18)))
    c.auth(mech, b64(gs2 + first_bare))
    el = c.next_element()
    if el is None or raw.local(el.tag) != "challenge":
        return el
    server_first = base64.b64decode(el.text or "").decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha1").digest()
    final_bare = f"c={b64(gs2)},r={attrs['r']}"
    signature = hmac.new(hashlib.sha1(client_key).digest(),
                         f"{first_bare},{server_first},{final_bare}".encode(), "sha1").digest()
    proof = b64(bytes(a ^ b for a, b in zip(client_key, signature)))
    c.send(f"<response xmlns='{raw.NS_SASL}'>{b64(f'{final_bare},p={proof}')}</response>")
    el = c.next_element()
    if el is not None and raw.local(el.tag) == "challenge":
        c.send(f"<response xmlns='{raw.NS_SASL}'/>")
        el = c.next_element()
    return el


def iq_auth(user, password, iq_id, register=None):
    """XEP-0078 login; register: None, 'after' or 'before' (a
    jabber:iq:register child beside it, which today's filter let through)."""
    auth = (f"<query xmlns='{NS_AUTH}'><username>{user}</username><password>{password}</password>"
            "<resource>r</resource></query>")
    reg = f"<query xmlns='{NS_REGISTER}'/>"
    body = {None: auth, "after": auth + reg, "before": reg + auth}[register]
    return f"<iq type='set' id='{iq_id}'>{body}</iq>"


def register_get(iq_id):
    return f"<iq type='get' id='{iq_id}'><query xmlns='{NS_REGISTER}'/></iq>"


# ================================================================ event checks


def user_is(value, user):
    return value is not None and (value == user or value == f"{user}@{DOMAIN}")


def refused_by_proxy(ctx, s, what, rules, user=None, named=False, mech=None):
    """The session's attempt was refused by the proxy: auth_result failure
    by proxy (and none by upstream or success), a policy reject with one
    of rules, the login record a failure (naming the user if named)."""
    if mech:
        s.expect(ctx, "auth", mechanism=mech)
    res = s.all("auth_result")
    ctx.check(res and all(r.get("outcome") == "failure" and r.get("by") == "proxy" for r in res),
              f"{what}: want auth_result failure by proxy, have {res}")
    pol = [p for p in s.all("policy") if p.get("action") == "reject" and p.get("rule") in rules]
    ctx.check(pol, f"{what}: no policy reject with rule {'/'.join(rules)} (have {s.all('policy')})")
    login = s.expect(ctx, "login")
    if login:
        ctx.check(login.get("outcome") == "failure", f"{what}: login outcome {login.get('outcome')!r}")
        if named:
            ctx.check(login.get("user") is not None, f"{what}: login user is null")
        if user:
            ctx.check(user_is(login.get("user"), user), f"{what}: login user {login.get('user')!r}, want {user}")


def named_attempts(s):
    """The identities the session's attempts named (auth events, and the
    client steps of mechanisms without an initial response)."""
    return [authcid(e) for e in s.all("auth") + s.all("sasl_step", dir="c2s") if authcid(e)]


# ================================================================ finding 1: identity fails open

IDENTITY_RULES = (("users_deny", "mallory kiss"), ("users_allow", "alice"))


def identity_case(ctx, attempts, named=False, rules_extra=()):
    """Each attempt (label, fn(client) -> last element) on its own
    connection after STARTTLS, under users_deny = mallory kiss and under
    users_allow = alice: refused by the proxy, and Prosody never logs
    mallory (or kiss) in."""
    slog = Witness(ctx.prosody())
    for rule, value in IDENTITY_RULES:
        px = ctx.proxy(**{rule: value})
        for i, (label, run) in enumerate(attempts):
            what = f"{rule} = {value}, {label}"
            c, _ = tls_client(ctx, px)
            got = answer(c, run(c))
            c.close()
            ctx.check(got in REFUSED, f"{what}: want a SASL failure ({'/'.join(REFUSED)}), got {got}")
            refused_by_proxy(ctx, ctx.session(px, i), what, (rule,) + tuple(rules_extra), named=named)
        fence(ctx, px, slog, "alice")
        leak_check(ctx, px)
    slog.never_logged_in(ctx, "mallory", "kiss")


def plain_raw(payload_b64):
    """An attempt: PLAIN with this base64 text; returns the answer."""
    SENT_PAYLOADS.add(payload_b64)
    return lambda c: (c.auth("PLAIN", payload_b64), c.next_element())[1]


def plain(user, password):
    return plain_raw(b64(f"\0{user}\0{password}"))


@case("bypass_identity_plain_third_nul", prosody="hostile")
def bypass_identity_plain_third_nul(ctx):
    """PLAIN "\\0mallory\\0PW\\0" (and "\\0mallory\\0PW\\0junk"): Prosody's
    pattern ignores a third NUL and what follows and logs mallory in; the
    proxy must refuse it and still record mallory as the user."""
    identity_case(ctx, [
        ("PLAIN with a trailing NUL", plain_raw(b64(f"\0mallory\0{MALLORY}\0"))),
        ("PLAIN with a third NUL and a tail", plain_raw(b64(f"\0mallory\0{MALLORY}\0xi-tail"))),
    ], named=True)


@case("bypass_identity_base64_mid_padding", prosody="hostile")
def bypass_identity_base64_mid_padding(ctx):
    """PLAIN whose base64 has '=' padding in the middle ("AG0=" is "\\0m",
    then the rest; "AA==" is "\\0"): Prosody's decoder goes on after '=' and
    decodes "\\0mallory\\0PW"; the proxy must refuse it (as bad encoding,
    or as mallory)."""
    message = f"\0mallory\0{MALLORY}".encode()
    identity_case(ctx, [
        ("base64 'AG0=' + rest", plain_raw(b64(message[:2]) + b64(message[2:]))),
        ("base64 'AA==' + rest", plain_raw(b64(message[:1]) + b64(message[1:]))),
    ], rules_extra=("sasl_encoding",))


@case("bypass_identity_scram_gs2", prosody="hostile")
def bypass_identity_scram_gs2(ctx):
    """SCRAM-SHA-1 as mallory with the GS2 headers Prosody's pattern takes
    and a strict parser does not ("n,x," and "n=x,,"), and with a bare
    message naming alice first ("n=alice,n=mallory,r=..."): Prosody's
    pattern takes the last n=, so mallory logs in while the proxy reads
    alice."""
    identity_case(ctx, [
        ("GS2 'n,x,'", lambda c: scram(c, "n,x,", "n=mallory,r={r}", MALLORY)),
        ("GS2 'n=x,,'", lambda c: scram(c, "n=x,,", "n=mallory,r={r}", MALLORY)),
        ("bare 'n=alice,n=mallory'", lambda c: scram(c, "n,,", "n=alice,n=mallory,r={r}", MALLORY)),
    ])


@case("bypass_identity_nfkc", prosody="hostile")
def bypass_identity_nfkc(ctx):
    """PLAIN as spellings Prosody's SASLprep+nodeprep (NFKC) folds to a
    denied user: circled m, mathematical bold, fullwidth, and
    "\\u212aiss" with long s (Kelvin sign K, U+017F) for kiss. Refused,
    with the user in the login record."""
    bold = "".join(chr(0x1D41A + ord(ch) - ord("a")) for ch in "mallory")
    fullwidth = "".join(chr(0xFF41 + ord(ch) - ord("a")) for ch in "mallory")
    identity_case(ctx, [
        ("circled \u24dcallory", plain("\u24dcallory", MALLORY)),
        (f"math bold {bold}", plain(bold, MALLORY)),
        (f"fullwidth {fullwidth}", plain(fullwidth, MALLORY)),
        ("Kelvin/long s \u212ai\u017f\u017f", plain("\u212ai\u017f\u017f", PW["kiss"])),
    ], named=True)


@case("bypass_users_allow_no_identity", prosody="hostile")
def bypass_users_allow_no_identity(ctx):
    """users_allow = alice: mechanisms that name no identity (OAUTHBEARER
    without a=, EXTERNAL with an empty authzid, an unknown X-FOO), offered
    through offer_mechanisms, must be refused by the proxy (rule
    users_allow), not relayed for the server to decide."""
    slog = Witness(ctx.prosody())
    px = ctx.proxy(users_allow="alice", offer_mechanisms="PLAIN OAUTHBEARER EXTERNAL X-FOO")
    attempts = (("OAUTHBEARER", b64("n,,\x01auth=Bearer xi-token-0\x01\x01")),
                ("EXTERNAL", ""), ("X-FOO", b64("xi-foo")))
    for i, (mech, payload) in enumerate(attempts):
        c, f = tls_client(ctx, px)
        ctx.check(mech in raw.mechanisms(f), f"{mech} not offered: {raw.mechanisms(f)}")
        c.auth(mech, payload)
        got = answer(c, c.next_element())
        c.close()
        ctx.check(got in REFUSED, f"{mech}: want a SASL failure, got {got}")
        refused_by_proxy(ctx, ctx.session(px, i), mech, ("users_allow",), mech=mech)
    fence(ctx, px, slog, "alice")
    for mech, _ in attempts:
        n = slog.received(f"mechanism='{mech}'")
        ctx.check(n == 0, f"Prosody received the {mech} <auth> ({n}x)")


# ================================================================ finding 3: iq-auth smuggled


def iq_auth_case(ctx, register, rule="iq_auth", user="mallory", tls=True, **conf):
    """One iq-auth attempt before login: refused with a stream error
    not-authorized, recorded as an attempt with its user, never seen by
    Prosody."""
    slog = Witness(ctx.prosody())
    px = ctx.proxy(**conf)
    c = ctx.raw(px.port)
    c.open_stream()
    if tls:
        c.starttls()
        c.open_stream()
    iq_id = f"xi-iqauth-{register or 'alone'}"
    c.send(iq_auth(user, PW[user], iq_id, register))
    got = answer(c, c.next_element())
    ctx.check(got == "stream-error:not-authorized", f"iq-auth ({register or 'alone'}): want stream error "
              f"not-authorized, got {got}")
    if got.startswith("stream-error:"):
        ctx.check(c.wait_closed(5), "connection not closed after the stream error")
    c.close()
    s = ctx.session(px)
    what = f"iq-auth with register {register}" if register else "iq-auth"
    auth = s.expect(ctx, "auth", mechanism=NS_AUTH)
    if auth:
        ctx.check(auth.get("username") == user, f"{what}: auth username {auth.get('username')!r}")
        ctx.check(auth.get("tls") is tls, f"{what}: auth tls {auth.get('tls')!r}")
    refused_by_proxy(ctx, s, what, (rule,), user=user)
    s.expect(ctx, "stream_error", condition="not-authorized")
    register_fence(ctx, px, slog)
    ctx.check(slog.saw(iq_id) == 0, f"Prosody received the iq {iq_id}")
    slog.never_logged_in(ctx, user)
    leak_check(ctx, px)
    return s


def register_fence(ctx, px, slog):
    """An in-band registration form request through px: it reaches Prosody
    (its answer carries the form) and its id is in Prosody's log."""
    iq_id = f"xi-register-{len(ctx.proxies)}-{px.port}"
    c, _ = tls_client(ctx, px)
    c.send(register_get(iq_id))
    el = c.next_element()
    c.close()
    form = el is not None and el.find(f"{{{NS_REGISTER}}}query/{{jabber:x:data}}x") is not None
    ctx.check(el is not None and el.get("type") == "result" and el.get("id") == iq_id and form,
              f"register get: want Prosody's form, got {answer(c, el)} "
              f"{ET.tostring(el, 'unicode')[:200] if el is not None else ''}")
    ctx.check(harness.wait_until(lambda: slog.saw(iq_id), 5), f"register get {iq_id} not in Prosody's log")


@case("bypass_iq_auth_register_child", prosody="hostile")
def bypass_iq_auth_register_child(ctx):
    """After STARTTLS, <iq type='set'> with a jabber:iq:auth query for
    mallory and then an empty jabber:iq:register query: today's filter let
    any iq with a register child through and Prosody (routing by the first
    child) logged mallory in, around users_deny, mechanisms_deny and
    auth_failures. Refused: stream error not-authorized, rule iq_auth."""
    iq_auth_case(ctx, "after", users_deny="mallory", mechanisms_deny="PLAIN", auth_failures="3/60")


@case("bypass_iq_auth_register_first", prosody="hostile")
def bypass_iq_auth_register_first(ctx):
    """The same iq with the register query first and the auth query
    second: still a jabber:iq:auth child, still refused (rule iq_auth)."""
    iq_auth_case(ctx, "before", users_deny="mallory", mechanisms_deny="PLAIN", auth_failures="3/60")


@case("bypass_iq_auth_cleartext", prosody="hostile")
def bypass_iq_auth_cleartext(ctx):
    """require_tls = no, plain_without_tls = reject: the smuggled iq-auth
    before STARTTLS carried alice's password in the clear and logged her
    in. Refused (rule iq_auth), recorded with tls false."""
    iq_auth_case(ctx, "after", user="alice", tls=False, require_tls="no", plain_without_tls="reject")


@case("bypass_iq_auth_alone_refused", prosody="hostile")
def bypass_iq_auth_alone_refused(ctx):
    """Regression: an iq whose only child is jabber:iq:auth is refused
    (stream error not-authorized, rule iq_auth, never relayed), and is now
    also recorded as an attempt (auth, auth_result by proxy, login)."""
    iq_auth_case(ctx, None, users_deny="mallory")


@case("bypass_iq_register_plus_other", prosody="hostile")
def bypass_iq_register_plus_other(ctx):
    """Only an iq whose ONLY child element is a jabber:iq:register query
    passes before login: one with a ping child first and a register query
    after (Prosody routes by the first child) is refused, rule
    preauth_stanza."""
    slog = Witness(ctx.prosody())
    px = ctx.proxy()
    c, _ = tls_client(ctx, px)
    c.send("<iq type='get' id='xi-preauth-1'><ping xmlns='urn:xmpp:ping'/>"
           f"<query xmlns='{NS_REGISTER}'/></iq>")
    got = answer(c, c.next_element())
    ctx.check(got == "stream-error:not-authorized", f"want stream error not-authorized, got {got}")
    c.close()
    s = ctx.session(px)
    ctx.check(s.all("policy", rule="preauth_stanza", action="reject"),
              f"no policy preauth_stanza reject: {s.all('policy')}")
    register_fence(ctx, px, slog)
    ctx.check(slog.saw("xi-preauth-1") == 0, "Prosody received the iq xi-preauth-1")


@case("bypass_iq_register_only_reaches_server", prosody="hostile")
def bypass_iq_register_only_reaches_server(ctx):
    """In-band registration (XEP-0077) still works before login: a
    register-only get reaches Prosody and its form comes back; no policy
    refusal."""
    slog = Witness(ctx.prosody())
    px = ctx.proxy(users_deny="mallory", mechanisms_deny="PLAIN")
    register_fence(ctx, px, slog)
    s = ctx.session(px)
    ctx.check(not [p for p in s.all("policy") if p.get("action") == "reject"],
              f"policy rejection: {s.all('policy')}")
    ctx.check(not s.all("stream_error"), f"stream error: {s.all('stream_error')}")


# ================================================================ finding 4: auth_failures in parallel


@case("bypass_auth_failures_parallel", prosody="hostile")
def bypass_auth_failures_parallel(ctx):
    """auth_failures = 3/60 and 40 sessions from one address that each send
    a wrong-password PLAIN for alice at the same moment: attempts in
    flight count, so at most 3 reach Prosody; the rest get
    temporary-auth-failure from the proxy (rule auth_failures)."""
    n = 40
    slog = Witness(ctx.prosody())
    px = ctx.proxy(auth_failures="3/60")
    clients = [tls_client(ctx, px)[0] for _ in range(n)]
    payload = raw.plain_payload("alice", WRONG)
    for c in clients:  # everyone is ready: now all at once
        c.auth("PLAIN", payload)
    got = [answer(c, c.next_element(timeout=10)) for c in clients]
    for c in clients:
        c.close()
    relayed = got.count("not-authorized")
    throttled = got.count("temporary-auth-failure")
    ctx.check(relayed + throttled == n, f"answers other than not-authorized/temporary-auth-failure: "
              f"{sorted(set(got) - {'not-authorized', 'temporary-auth-failure'})}")
    ctx.check(relayed <= 3, f"{relayed} of {n} parallel wrong passwords were answered by the server, want <= 3")
    ctx.check(throttled >= n - 3, f"only {throttled} temporary-auth-failure")
    ctx.check(harness.wait_until(lambda: len(px.events.find("close")) >= n, 10), "not every session closed")
    events = px.events.read()
    up = [e for e in events if harness.match(e, "auth_result", by="upstream")]
    ctx.check(len(up) <= 3, f"{len(up)} auth_result by upstream in the event log, want <= 3")
    proxy = [e for e in events if harness.match(e, "auth_result", by="proxy", condition="temporary-auth-failure")]
    ctx.check(len(proxy) >= n - 3, f"{len(proxy)} temporary-auth-failure by proxy in the event log")
    pol = [e for e in events if harness.match(e, "policy", rule="auth_failures", action="reject")]
    ctx.check(len(pol) >= n - 3, f"{len(pol)} policy auth_failures reject events")
    direct_fence(ctx, slog)
    t = slog.tested("alice")
    ctx.check(t <= 3, f"Prosody checked alice's password {t} times, want <= 3")


# ================================================================ finding 6: the domain in another spelling


@case("bypass_users_deny_fullwidth_domain", prosody="hostile")
def bypass_users_deny_fullwidth_domain(ctx):
    """users_deny = *@lab.test and a stream to the fullwidth
    '\uff4c\uff41\uff42.test', which Prosody nameprep's to lab.test
    (upstream_verify = no, so the certificate name is not in the way):
    alice must be refused (rule users_deny), never logged in."""
    slog = Witness(ctx.prosody())
    px = ctx.proxy(users_deny="*@lab.test", upstream_verify="no")
    to = "\uff4c\uff41\uff42.test"
    c = ctx.raw(px.port)
    c.open_stream(to)
    c.starttls()
    c.open_stream(to)
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    got = answer(c, c.next_element())
    c.close()
    ctx.check(got == "not-authorized", f"alice to {to!r}: want not-authorized, got {got}")
    s = ctx.session(px)
    refused_by_proxy(ctx, s, f"to={to!r}", ("users_deny",), user="alice")
    direct_fence(ctx, slog)
    slog.never_logged_in(ctx, "alice")


# ================================================================ finding 7: require_tls = auto over Direct TLS


@case("bypass_require_tls_auto_direct", prosody="hostile")
def bypass_require_tls_auto_direct(ctx):
    """require_tls = auto with upstream_tls = direct: the proxy cannot see
    the server's <starttls><required/>, so it must require TLS itself:
    the client is offered <starttls><required/> and PLAIN before TLS is
    refused with encryption-required (rule require_tls)."""
    slog = Witness(ctx.prosody())
    px = ctx.proxy(upstream_tls="direct", require_tls="auto")
    c = ctx.raw(px.port)
    f = c.open_stream()
    ctx.check(raw.has_starttls(f) == "required", f"starttls {raw.has_starttls(f)!r}, want required")
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    got = answer(c, c.next_element())
    c.close()
    ctx.check(got == "encryption-required", f"PLAIN before TLS: want encryption-required, got {got}")
    s = ctx.session(px)
    refused_by_proxy(ctx, s, "PLAIN before TLS", ("require_tls",))
    fence(ctx, px, slog)
    slog.never_logged_in(ctx, "alice")


# ================================================================ every route to the server, per rule
#
# A route is one connection that ends with the refused attempt A (PLAIN
# with the right password, or iq-auth) reached some way; it returns the
# answer to A. Which routes apply depends on the rule.


def _open(ctx, px, tls):
    c = ctx.raw(px.port)
    c.open_stream()
    if tls:
        c.starttls()
        c.open_stream()
    return c


def route_plain(mech="PLAIN"):
    def run(ctx, px, a, tls):
        c = _open(ctx, px, tls)
        c.auth(mech, a["payload"])
        return c, c.next_element()
    return run


def route_prefixed(ctx, px, a, tls):
    """The same <auth> with a namespace prefix and its payload in CDATA."""
    c = _open(ctx, px, tls)
    p = a["payload"]
    c.send(f"<sasl:auth xmlns:sasl='{raw.NS_SASL}' mechanism='PLAIN'>"
           f"<![CDATA[{p[:4]}]]>{p[4:]}</sasl:auth>")
    return c, c.next_element()


def route_after_abort(ctx, px, a, tls):
    """SCRAM-SHA-1 started as alice, <abort/>, then A."""
    c = _open(ctx, px, tls)
    c.auth("SCRAM-SHA-1", b64("n,,n=alice,r=xi-route-nonce-0123456789"))
    el = c.next_element()
    if el is not None and raw.local(el.tag) == "challenge":
        c.send(f"<abort xmlns='{raw.NS_SASL}'/>")
        c.next_element()  # <failure><aborted/>
    c.auth("PLAIN", a["payload"])
    return c, c.next_element()


def route_after_failure(ctx, px, a, tls):
    """A SCRAM-SHA-1 login with a wrong password fails at the server, then
    A, and after A's refusal A once more."""
    c = _open(ctx, px, tls)
    scram(c, "n,,", "n=bob,r={r}", WRONG)
    c.auth("PLAIN", a["payload"])
    first = c.next_element()
    if first is None or raw.local(first.tag) == "success":
        return c, first
    c.auth("PLAIN", a["payload"])
    return c, c.next_element()


def route_pipelined_header(ctx, px, a, tls):
    """The stream header and A in one write (before TLS, or on the
    stream restarted after STARTTLS)."""
    c = ctx.raw(px.port)
    if tls:
        c.open_stream()
        c.starttls()
    c._reset_parser()
    c.send(raw.header() + f"<auth xmlns='{raw.NS_SASL}' mechanism='PLAIN'>{a['payload']}</auth>")
    el = c.next_element()
    if el is not None and raw.local(el.tag) == "features":
        el = c.next_element()
    return c, el


def route_pipelined_after_iq(ctx, px, a, tls):
    """A right after a register query, in one write."""
    c = _open(ctx, px, tls)
    c.send(register_get("xi-route-reg") + f"<auth xmlns='{raw.NS_SASL}' mechanism='PLAIN'>{a['payload']}</auth>")
    return c, sasl_answer(c)


def route_direct_tls(ctx, px, a, tls):
    """A on the proxy's Direct TLS port (XEP-0368); only with TLS."""
    if not tls:
        return None
    c = ctx.raw(px.tls_port, direct_tls=True)
    c.open_stream()
    c.auth("PLAIN", a["payload"])
    return c, c.next_element()


def route_iq_auth(ctx, px, a, tls):
    """Legacy iq-auth with A's credentials (register child beside it)."""
    c = _open(ctx, px, tls)
    c.send(iq_auth(a["user"], a["password"], "xi-route-iqauth", "after"))
    return c, c.next_element()


ROUTES = {
    "PLAIN": route_plain(),
    "lower-case 'plain'": route_plain("plain"),
    "prefix and CDATA": route_prefixed,
    "after an abort": route_after_abort,
    "after a failure": route_after_failure,
    # before TLS: bypass_pipelined_auth_before_features
    "pipelined with the header": lambda ctx, px, a, tls: route_pipelined_header(ctx, px, a, tls) if tls else None,
    "pipelined after an iq": route_pipelined_after_iq,
    "Direct TLS port": route_direct_tls,
    "iq-auth": route_iq_auth,
}


def session_of(ctx, px, port, what, timeout=5.0):
    """The events of the session whose client used local port port (routes
    run at once, so connect order says nothing), after its close."""
    def sid():
        for e in px.events.read():
            if e.get("event") == "connect" and str(e.get("peer", "")).endswith(f":{port}"):
                return e.get("sid")
        return None
    found = harness.wait_until(sid, timeout)
    if not ctx.check(found is not None, f"{what}: no session from port {port} in the event log"):
        return Session([], None)
    ctx.check(px.events.wait("close", timeout, sid=found), f"{what}: session {found} has no close event")
    return Session([e for e in px.events.read() if e.get("sid") == found], found)


def run_route(ctx, px, a, tls, run):
    """(answer, client port), or None if the route does not apply."""
    r = run(ctx, px, a, tls)
    if r is None:
        return None
    c, el = r
    port = c.sock.getsockname()[1]
    got = answer(c, el)
    c.close()
    return got, port


def routes_case(ctx, conf, user, refusals, tls_modes=(False, True), setup=None,
                through_proxy_fence=True, tested=0, routes=None):
    """Every route, on a connection without TLS and/or after STARTTLS, as
    user with the right password, under conf (all at once: each route is
    its own connection). refusals: the SASL conditions that count as
    refused (iq-auth: a stream error not-authorized). Prosody must never
    log user in nor check the password more than the tested times setup
    meant it to, and each attempt is in the event log with its identity."""
    slog = Witness(ctx.prosody())
    px = ctx.proxy(**conf)
    a = {"user": user, "password": PW[user], "payload": raw.plain_payload(user, PW[user])}
    if setup:
        setup(ctx, px)
    jobs = [(f"{label} ({'after STARTTLS' if tls else 'no TLS'})", label, tls, run)
            for tls in tls_modes for label, run in (routes or ROUTES).items()]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [(what, label, pool.submit(run_route, ctx, px, a, tls, run)) for what, label, tls, run in jobs]
    for what, label, fut in futures:
        try:
            r = fut.result()
        except (AssertionError, OSError, ssl.SSLError) as e:
            ctx.check(False, f"{what}: {type(e).__name__}: {e}")
            continue
        if r is None:
            continue
        got, port = r
        s = session_of(ctx, px, port, what)
        if label == "iq-auth":
            ctx.check(got == "stream-error:not-authorized", f"{what}: want stream error not-authorized, got {got}")
            auth = s.first("auth", mechanism=NS_AUTH)
            ctx.check(auth and auth.get("username") == user,
                      f"{what}: no auth event {NS_AUTH} for {user}: {s.all('auth')}")
            ctx.check(s.all("policy", action="reject"), f"{what}: no policy reject: {s.all('policy')}")
        else:
            ctx.check(got in refusals, f"{what}: want {'/'.join(refusals)}, got {got}")
            ctx.check(any(user_is(n, user) for n in named_attempts(s)),
                      f"{what}: attempt not recorded with identity {user} (have {named_attempts(s)})")
        ctx.check(s.all("auth_result", by="proxy", outcome="failure"),
                  f"{what}: no auth_result failure by proxy: {s.all('auth_result')}")
        ctx.check(not s.all("auth_result", outcome="success"), f"{what}: success: {s.all('auth_result')}")
    if through_proxy_fence:
        fence(ctx, px, slog)
    else:
        direct_fence(ctx, slog)
    n = slog.authenticated(user)
    ctx.check(n == 0, f"Prosody logged 'Authenticated as {user}@{DOMAIN}' {n} time(s)")
    n = slog.tested(user)
    ctx.check(n == tested, f"Prosody checked {user}'s password {n} time(s), want {tested}: refused attempts reached it")
    n = slog.received("mechanism='plain'")
    ctx.check(n == 0, f"Prosody received a lower-case 'plain' <auth> {n}x")
    leak_check(ctx, px)


def reach_limit(ctx, px):
    """Two wrong PLAIN passwords for alice, answered by the server."""
    c, _ = tls_client(ctx, px)
    for _ in range(2):
        c.auth("PLAIN", raw.plain_payload("alice", WRONG))
        got = failure_of(c, c.next_element())
        ctx.check(got == "not-authorized", f"wrong password: {got}")
    c.close()
    ctx.session(px, 0)


# Each rule: its config (require_tls = no, so the routes without TLS meet
# the rule, not require_tls), the user of the refused attempt, the
# conditions that count as its refusal.
RULES = {
    "users_deny": dict(conf={"users_deny": "mallory", "require_tls": "no"}, user="mallory",
                       refusals=("not-authorized", "malformed-request")),
    "mechanisms_deny": dict(conf={"mechanisms_deny": "PLAIN", "require_tls": "no"}, user="alice",
                            refusals=("invalid-mechanism", "not-authorized")),
    "plain_without_tls": dict(conf={"plain_without_tls": "reject", "require_tls": "no"}, user="alice",
                              refusals=("encryption-required",), tls_modes=(False,)),
    "auth_failures": dict(conf={"auth_failures": "2/60", "require_tls": "no"}, user="alice",
                          refusals=("temporary-auth-failure",), setup=reach_limit,
                          through_proxy_fence=False, tested=2),
}


@case("bypass_routes_users_deny", prosody="hostile_open")
def bypass_routes_users_deny(ctx):
    """users_deny = mallory: every route to the server as mallory, without
    TLS and after STARTTLS, is refused with not-authorized (or
    malformed-request) and recorded with mallory's name, and Prosody
    never checks mallory's password."""
    routes_case(ctx, **RULES["users_deny"])


@case("bypass_routes_mechanisms_deny", prosody="hostile_open")
def bypass_routes_mechanisms_deny(ctx):
    """mechanisms_deny = PLAIN: every route to a PLAIN login as alice (and
    iq-auth, a password mechanism too) is refused (invalid-mechanism), and
    Prosody never checks alice's password."""
    routes_case(ctx, **RULES["mechanisms_deny"])


@case("bypass_routes_plain_without_tls", prosody="hostile_open")
def bypass_routes_plain_without_tls(ctx):
    """plain_without_tls = reject, require_tls = no, in front of a server
    that takes PLAIN in the clear: every route to PLAIN (or iq-auth) on
    the client leg without TLS is refused (encryption-required), and
    Prosody never checks alice's password."""
    routes_case(ctx, **RULES["plain_without_tls"])


@case("bypass_routes_auth_failures", prosody="hostile_open")
def bypass_routes_auth_failures(ctx):
    """auth_failures = 2/60, after two wrong passwords for alice: every route
    to a login as alice (right password) from the same address is refused
    with temporary-auth-failure (iq-auth: refused), and Prosody checks
    alice's password only the two times it was wrong."""
    routes_case(ctx, **RULES["auth_failures"])


@case("bypass_pipelined_auth_before_features", prosody="hostile_open")
def bypass_pipelined_auth_before_features(ctx):
    """The stream header and <auth> in one write, without TLS, under each
    rule: the <auth> arrives while the proxy still waits for the
    upstream's features. Prosody itself takes such an <auth> once its
    features are out; the proxy must answer it with a SASL refusal (the
    rule's, or invalid-mechanism: nothing was offered yet) and record the
    attempt with its identity, not end the stream with an unexplained
    unsupported-stanza-type."""
    route = {"pipelined with the header": route_pipelined_header}
    for rule in RULES.values():
        routes_case(ctx, **{**rule, "tls_modes": (False,), "routes": route,
                            "refusals": tuple(rule["refusals"]) + ("invalid-mechanism",)})
