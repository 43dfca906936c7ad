"""Regressions for the issue 8 review: holes a reviewer found in the fixes
for routes around policy, each replayed against the server that made it
a hole.

  review8_digest_identity_switch   DIGEST-MD5 whose initial response names
                                   someone (Cyrus ignores it), then the real
                                   response names a denied user
  review8_resume_*                 an XEP-0198 resume (sm:3, sm:2, pipelined
                                   with a bind) restores a session whose JID
                                   the proxy cannot check: answered failed
  review8_*_after_login            SASL2 <authenticate>, SASL1 <auth>,
                                   <starttls/> after login (Prosody with
                                   mod_sasl2 re-authenticates as anyone)
  review8_slow_scram_no_lockout    auth_failures counted SCRAM sessions that
                                   were waiting on their client
  review8_authzid_localpart        a PLAIN authzid without @
  review8_scram_escaped_name       an escaped SCRAM name Prosody reads
                                   another way
  review8_abandoned_proof_counts   a guess whose client left before the
                                   server's answer is a failure

Witnesses, as in cases_bypass.py: Prosody at debug level logs every element
it receives ("Received[c2s_unauthed]: <auth ...>" before login,
"Received[c2s]: <authenticate ...>" after), "test password for user 'U'"
for each PLAIN check and "Authenticated as U@lab.test" for every login
(SASL1 or SASL2). A refused attempt uses the right password, so had it been
relayed the server's log would show it; a later element on the same
connection, or a later login (a fence), shows the log was read far enough.
With the scripted upstream (fakeserver.py) the witness is the bytes it
received.

Prosody variants (cases.py): "hostile" (debug log, 100000 PBKDF2
iterations: each PLAIN check takes the server tens of milliseconds),
"cyrus_debug" (Cyrus SASL for DIGEST-MD5, debug log; started privately
so a missing package SKIPs as the "cyrus" cases do), "sasl2_smacks" (the
suite's copy of prosody-modules' mod_sasl2, prosody-plugins/, and
mod_smacks).
"""

import base64
import hashlib
import hmac
import re
import shutil

import cases
import fakeserver
import harness
import raw
from cases import CYRUS_USERS, DOMAIN, USERS, WRONG, case
from cases_bypass import PW, Witness, answer, b64, fence as scram_fence, leak_check
from cases_bypass_upstream import bind_iq, login_to_fake, message, server_done
from cases_hostile import fake_upstream, with_fake
from cases_policy import fence as plain_fence, tls_client

ALICE = f"alice@{DOMAIN}"
NS_SASL2 = "urn:xmpp:sasl:2"
NS_TLS = raw.NS_TLS
NS_STANZA_ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
SM3 = "urn:xmpp:sm:3"
SM2 = "urn:xmpp:sm:2"


# ================================================================ witnesses


class Log(Witness):
    """Witness (cases_bypass) plus the elements Prosody received after
    login (session type c2s)."""

    def received_after_login(self, *parts):
        return sum(1 for l in self.lines()
                   if "Received[c2s]: <" in l and all(p in l for p in parts))

    def wait_saw(self, marker, count=1, timeout=5):
        return harness.wait_until(lambda: self.saw(marker) >= count, timeout)


def refused_events(ctx, s, what, rule, condition=None):
    """The session's attempt was refused by the proxy under rule: a
    policy reject, an auth_result failure by proxy (with condition), no
    success, no auth_result from the server, the login record a
    failure."""
    ctx.check(s.all("policy", rule=rule, action="reject"),
              f"{what}: no policy event rule {rule} action reject (have {s.all('policy')})")
    res = s.all("auth_result")
    want = {"outcome": "failure", "by": "proxy"}
    if condition:
        want["condition"] = condition
    ctx.check(any(harness.match(r, **want) for r in res),
              f"{what}: no auth_result {want} (have {res})")
    ctx.check(not [r for r in res if r.get("outcome") == "success" or r.get("by") == "upstream"],
              f"{what}: the server answered the attempt or it succeeded: {res}")
    login = s.expect(ctx, "login")
    if login:
        ctx.check(login.get("outcome") == "failure", f"{what}: login outcome {login.get('outcome')!r}")


# ================================================================ 1. DIGEST-MD5 identity switch


def digest_response(user, password, nonce, realm=DOMAIN, cnonce="xi-review8-cnonce",
                    uri=f"xmpp/{DOMAIN}"):
    """A DIGEST-MD5 (RFC 2831) client response with qop=auth."""
    def h(b):
        return hashlib.md5(b).digest()

    def hexh(b):
        return hashlib.md5(b).hexdigest()
    a1 = h(f"{user}:{realm}:{password}".encode()) + f":{nonce}:{cnonce}".encode()
    a2 = f"AUTHENTICATE:{uri}".encode()
    nc = "00000001"
    resp = hexh(f"{hexh(a1)}:{nonce}:{nc}:{cnonce}:auth:{hexh(a2)}".encode())
    return (f'username="{user}",realm="{realm}",nonce="{nonce}",cnonce="{cnonce}",nc={nc},'
            f'qop=auth,digest-uri="{uri}",response={resp},charset=utf-8')


def cyrus_prosody(ctx):
    """A private Cyrus Prosody at debug level; SKIP as run.py does for the
    shared "cyrus" variant when its packages are missing."""
    if not (harness.CYRUS_MODULE / "sasl_cyrus.lua").exists():
        ctx.skip("mod_auth_cyrus not installed (prosody-modules)")
    if shutil.which("saslpasswd2") is None:
        ctx.skip("saslpasswd2 not installed (sasl2-bin)")
    return ctx.private_prosody("cyrus_debug")


@case("review8_digest_identity_switch", prosody=None)
def review8_digest_identity_switch(ctx):
    """users_deny = carol: DIGEST-MD5 with an initial response naming
    dave (Cyrus ignores it and challenges), then the real response for
    carol. The proxy refuses the second response (malformed-request, rule
    users_deny), aborts the exchange at the server (Prosody logs the
    <abort/>, and its <failure><aborted/> never reaches the client: the
    next thing the client hears is the challenge to its next attempt);
    Prosody never logs carol in, the client never gets <success/>."""
    p = cyrus_prosody(ctx)
    carol = CYRUS_USERS["carol"]
    slog = Log(p)
    px = ctx.proxy(upstream_port=p.port, users_deny="carol")
    c, f = tls_client(ctx, px)
    ctx.require("DIGEST-MD5" in raw.mechanisms(f), f"DIGEST-MD5 not offered: {raw.mechanisms(f)}")
    decoy = digest_response("dave", "Xi-dave-dummy", "xi-made-up-nonce")
    c.send(f"<auth xmlns='{raw.NS_SASL}' mechanism='DIGEST-MD5'>{b64(decoy)}</auth>")
    el = c.next_element()
    ctx.require(el is not None and raw.local(el.tag) == "challenge",
                f"decoy initial response: want Cyrus's challenge, got {answer(c, el)}")
    challenge = base64.b64decode(el.text or "").decode()
    nonce = re.search(r'nonce="([^"]+)"', challenge)
    ctx.require(nonce, f"no nonce in the challenge {challenge!r}")
    c.send(f"<response xmlns='{raw.NS_SASL}'>"
           f"{b64(digest_response('carol', carol, nonce.group(1)))}</response>")
    el = c.next_element()
    got = answer(c, el)
    if got == "challenge":  # the fix is missing: finish, to show what it costs
        c.send(f"<response xmlns='{raw.NS_SASL}'/>")
        got = answer(c, c.next_element())
    ctx.check(got == "malformed-request", f"carol's response: want failure malformed-request, got {got}")
    # the abort reached the server, and its answer was not relayed: the
    # next element is the challenge to a new attempt (no initial response)
    ctx.check(slog.wait_saw("Received[c2s_unauthed]: <abort"),
              "Prosody never received an <abort/> after the refusal")
    if got != "success":
        c.auth("DIGEST-MD5")
        el = c.next_element()
        ctx.check(el is not None and raw.local(el.tag) == "challenge",
                  f"after the refusal: want the challenge to the next attempt, got {answer(c, el)} "
                  "(the server's <failure><aborted/> relayed?)")
    c.close()
    ctx.check(b"success" not in c.received, f"the client got a <success/>: {c.received[-300:]!r}")
    s = ctx.session(px)
    refused_events(ctx, s, "DIGEST-MD5 decoy then carol", "users_deny", "malformed-request")
    # fence: carol straight to Prosody (PLAIN through Cyrus), logged
    d = ctx.raw(p.port)
    try:
        raw.login_plain(d, "carol", carol, bind=False)
    except AssertionError as e:
        ctx.check(False, f"direct fence login of carol: {e}")
    d.close()
    ctx.check(slog.wait_authenticated("carol", 1), "direct fence login of carol not in Prosody's log")
    n = slog.authenticated("carol")
    ctx.check(n == 1, f"Prosody logged 'Authenticated as carol@{DOMAIN}' {n} times, want 1 (the fence)")
    n = slog.saw("Received[c2s_unauthed]: <response")
    ctx.check(n == 0, f"Prosody received {n} <response> element(s): carol's response reached it")


# ================================================================ 2. XEP-0198 resume before bind


def failed_of(el, ns):
    """True if el is <failed xmlns=ns><item-not-found xmlns=stanzas/></failed>."""
    return (el is not None and el.tag == raw.q(ns, "failed")
            and el.find(raw.q(NS_STANZA_ERR, "item-not-found")) is not None)


def bound_jid(el):
    if el is None or raw.local(el.tag) != "iq" or el.get("type") != "result":
        return None
    return el.findtext(f"{raw.q(raw.NS_BIND, 'bind')}/{raw.q(raw.NS_BIND, 'jid')}")


def resume_fake(ctx, ns, pipelined=False):
    """alice against the scripted upstream, users_deny = mallory: after
    the restart, <resume xmlns=ns previd='x' h='0'/> (and the bind in the
    same write when pipelined). The proxy answers failed, the server never
    gets the resume; the bind goes on and a message flows."""
    what = f"resume {ns}{' pipelined with the bind' if pipelined else ''}"
    full = f"{ALICE}/r8"
    srv = fake_upstream(ctx, fakeserver.plain_then(
        fakeserver.serve_stanzas([fakeserver.bind_result(full)])))
    px = ctx.proxy(upstream_port=srv.port, users_deny="mallory")
    c = login_to_fake(ctx, px)
    resume = f"<resume xmlns='{ns}' previd='x' h='0'/>"
    c.send(resume + (bind_iq("r8", "b1") if pipelined else ""))
    el = c.next_element()
    ctx.check(failed_of(el, ns), f"{what}: want <failed xmlns='{ns}'><item-not-found/></failed>, "
              f"got {c.describe(el)}")
    if not pipelined:
        c.send(bind_iq("r8", "b1"))
    el = c.next_element()
    ctx.check(bound_jid(el) == full, f"{what}: the bind after it: want {full}, got {c.describe(el)}")
    c.send(message(full, "xi-after-failed"))
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "message" and el.get("id") == "xi-after-failed",
              f"{what}: the message after the bind did not come back: {c.describe(el)}")
    c.send("</stream:stream>")
    c.wait_closed()
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, what)
    after = conn.since("restart")
    ctx.check(b"<resume" not in after and b"urn:xmpp:sm" not in after,
              f"{what}: the server received the resume: {after[:400]!r}")
    ctx.check(b"<bind" in after and b"xi-after-failed" in after,
              f"{what}: the server did not get the bind and the message: {after[:400]!r}")
    s = ctx.session(px)
    pol = s.all("policy", rule="bind_first")
    ctx.check(pol, f"{what}: no policy event rule bind_first (have {s.all('policy')})")
    ctx.check(not s.all("stream_error"), f"{what}: a stream error: {s.all('stream_error')}")
    s.expect(ctx, "bind", jid=full)
    s.expect(ctx, "login", outcome="success")


@case("review8_resume_answered_failed", prosody=None)
@with_fake
def review8_resume_answered_failed(ctx):
    """users_deny = mallory, scripted upstream: <resume xmlns='urn:xmpp:sm:3'
    previd='x' h='0'/> after the restart is answered <failed> with
    item-not-found by the proxy (rule bind_first), never relayed; alice
    then binds and her message goes through and back."""
    resume_fake(ctx, SM3)


@case("review8_resume_answered_failed_sm2", prosody=None)
@with_fake
def review8_resume_answered_failed_sm2(ctx):
    """The same with urn:xmpp:sm:2 (a resume of any XEP-0198 version)."""
    resume_fake(ctx, SM2)


@case("review8_resume_pipelined_bind", prosody=None)
@with_fake
def review8_resume_pipelined_bind(ctx):
    """The sm:3 resume and the bind in one write: the resume is answered
    failed, the bind goes on to the server and succeeds, a message flows."""
    resume_fake(ctx, SM3, pipelined=True)


@case("review8_resume_prosody_real_previd", prosody="sasl2_smacks")
def review8_resume_prosody_real_previd(ctx):
    """Real Prosody with mod_smacks, users_deny = mallory: alice's session
    straight to Prosody enables resumption and drops; through the proxy
    alice resumes it with its real previd. The proxy answers failed
    itself (Prosody, which would resume it, never receives the <resume>:
    its log has the bind that followed on the same connection but no
    resume); alice binds anew and a message to herself comes back."""
    slog = Log(ctx.prosody())
    d = ctx.raw(ctx.prosody().port)
    raw.login_plain(d, "alice", USERS["alice"])
    d.send(f"<enable xmlns='{SM3}' resume='true'/>")
    en = d.next_element()
    ctx.require(en is not None and raw.local(en.tag) == "enabled" and en.get("id"),
                f"Prosody did not enable resumption: {d.describe(en)}")
    previd = en.get("id")
    d.close()
    px = ctx.proxy(users_deny="mallory")
    c = ctx.raw(px.port)
    raw.login_plain(c, "alice", USERS["alice"], bind=False)
    c.send(f"<resume xmlns='{SM3}' previd='{previd}' h='0'/>")
    el = c.next_element()
    ctx.check(failed_of(el, SM3), f"want the proxy's <failed><item-not-found/></failed>, got {c.describe(el)}")
    c.send(bind_iq("xi-r8", "xi-r8-bind"))
    el = c.next_element()
    full = f"{ALICE}/xi-r8"
    ctx.check(bound_jid(el) == full, f"bind after the resume: want {full}, got {c.describe(el)}")
    c.send(message(full, "xi-r8-msg"))
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "message" and el.get("id") == "xi-r8-msg",
              f"the message after the bind did not come back: {c.describe(el)}")
    c.send("</stream:stream>")
    c.wait_closed()
    ctx.check(slog.wait_saw("xi-r8-bind"), "Prosody's log does not have the bind")
    n = slog.received_after_login("<resume")
    ctx.check(n == 0, f"Prosody received the <resume> ({n}x)")
    s = ctx.session(px)
    ctx.check(s.all("policy", rule="bind_first"), f"no policy event rule bind_first (have {s.all('policy')})")
    s.expect(ctx, "bind", jid=full)
    s.expect(ctx, "login", outcome="success")


# ================================================================ 3. login elements after login


def after_login_case(ctx, what, element, marker, user="mallory"):
    """alice logs in and binds through the proxy (users_deny = mallory),
    then sends element: stream error policy-violation (rule after_login),
    and Prosody never receives it (its log has alice's bind, on the same
    connection before it, and bob's fence login after, but not marker)
    nor authenticates user."""
    slog = Log(ctx.prosody())
    px = ctx.proxy(users_deny="mallory")
    c = ctx.raw(px.port)
    try:
        jid = raw.login_plain(c, "alice", USERS["alice"])
    except AssertionError as e:
        ctx.require(False, f"{what}: alice's login and bind failed: {e}")
    ctx.check(jid and jid.startswith(ALICE + "/"), f"{what}: bound as {jid!r}")
    c.send(element)
    cond = c.stream_error()
    ctx.check(cond == "policy-violation", f"{what}: want stream error policy-violation, got {cond!r} "
              f"({c.describe()})")
    ctx.check(c.wait_closed(), f"{what}: connection not closed after the stream error")
    ctx.check(b"<success" not in c.received.split(b"</iq>", 1)[-1],
              f"{what}: a <success> after the bind: {c.received[-300:]!r}")
    c.close()
    s = ctx.session(px)
    ctx.check(s.all("policy", rule="after_login", action="reject"),
              f"{what}: no policy event rule after_login action reject (have {s.all('policy')})")
    s.expect(ctx, "stream_error", condition="policy-violation")
    plain_fence(ctx, px, slog, "bob", USERS["bob"])
    n = slog.received_after_login(marker)
    ctx.check(n == 0, f"{what}: Prosody received it ({n}x '{marker}')")
    slog.never_logged_in(ctx, user)
    leak_check(ctx, px)


def sasl2_offered(ctx):
    """The variant's Prosody offers SASL2 (the copy of mod_sasl2 loaded),
    and re-authenticates an authenticated session as someone else: what
    the proxy must keep from it."""
    p = ctx.prosody()
    d = ctx.raw(p.port)
    f = d.open_stream()
    d.starttls()
    f = d.open_stream()
    ctx.require(f.find(raw.q(NS_SASL2, "authentication")) is not None,
                f"Prosody offers no SASL2 (is prosody-plugins/mod_sasl2 loaded?): {d.describe(f)}")
    d.close()
    d = ctx.raw(p.port)
    raw.login_plain(d, "alice", USERS["alice"])
    d.send(sasl2_authenticate("bob", USERS["bob"]))
    el = d.next_element()
    ctx.note(f"direct SASL2 re-authentication after login: {d.describe(el)}")
    ctx.check(el is not None and el.tag == raw.q(NS_SASL2, "success")
              and el.findtext(raw.q(NS_SASL2, "authorization-identifier"), "").startswith(f"bob@{DOMAIN}"),
              f"control: Prosody with mod_sasl2 did not re-authenticate alice's session as bob: "
              f"{d.describe(el)}")
    d.close()


def sasl2_authenticate(user, password):
    return (f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'>"
            f"<initial-response>{raw.plain_payload(user, password)}</initial-response></authenticate>")


@case("review8_sasl2_after_login", prosody="sasl2_smacks")
def review8_sasl2_after_login(ctx):
    """Prosody with mod_sasl2 (which, straight, re-authenticates a logged-in
    session as anyone whose password is given): through the proxy, alice
    logs in and binds, then sends a SASL2 <authenticate> PLAIN for
    mallory: stream error policy-violation (rule after_login); Prosody
    never receives it, never checks mallory's password nor logs her in."""
    sasl2_offered(ctx)
    after_login_case(ctx, "SASL2 after login", sasl2_authenticate("mallory", PW["mallory"]),
                     "<authenticate")


@case("review8_auth_after_login", prosody="sasl2_smacks")
def review8_auth_after_login(ctx):
    """The same with a SASL1 <auth> PLAIN for mallory after login."""
    after_login_case(ctx, "SASL1 after login",
                     f"<auth xmlns='{raw.NS_SASL}' mechanism='PLAIN'>"
                     f"{raw.plain_payload('mallory', PW['mallory'])}</auth>", "<auth")


@case("review8_starttls_after_login", prosody="sasl2_smacks")
def review8_starttls_after_login(ctx):
    """The same with a <starttls/> after login (inside TLS)."""
    after_login_case(ctx, "STARTTLS after login", f"<starttls xmlns='{NS_TLS}'/>", "<starttls")


# ================================================================ 4. slow SCRAM, no lockout


def scram_proof(first_bare, server_first, password, gs2="n,,"):
    """The SCRAM-SHA-1 client-final message (base64) for a client-first-bare
    and the server-first it got (as cases_bypass.scram computes it)."""
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha1").digest()
    final_bare = f"c={b64(gs2)},r={attrs['r']}"
    signature = hmac.new(hashlib.sha1(client_key).digest(),
                         f"{first_bare},{server_first},{final_bare}".encode(), "sha1").digest()
    proof = b64(bytes(a ^ b for a, b in zip(client_key, signature)))
    return b64(f"{final_bare},p={proof}")


@case("review8_slow_scram_no_lockout", prosody="hostile")
def review8_slow_scram_no_lockout(ctx):
    """auth_failures = 3/60: three sessions send a SCRAM-SHA-1 client-first
    for alice, get the server's challenge and stall (a slow client or
    link). They hold nothing the server is checking, so bob (right
    password, slixmpp, PLAIN) still logs in from the same address. Then,
    with the three still open, 40 wrong PLAIN guesses for alice at once
    reach Prosody at most 3 times, the rest temporary-auth-failure; and a
    stalled session that now sends its (right) proof is checked again
    against the limit: temporary-auth-failure, alice never logged in."""
    slog = Log(ctx.prosody())
    px = ctx.proxy(auth_failures="3/60")
    stalled = []
    for i in range(3):
        c, _ = tls_client(ctx, px)
        first_bare = f"n=alice,r=xi-review8-stalled-{i}-0123456789"
        c.auth("SCRAM-SHA-1", b64("n,," + first_bare))
        el = c.next_element()
        ctx.require(el is not None and raw.local(el.tag) == "challenge",
                    f"stalled session {i}: want the server-first challenge, got {answer(c, el)}")
        stalled.append((c, first_bare, base64.b64decode(el.text or "").decode()))
    # the event log is written by a thread, in batches: wait for the lines
    stalled_sids = harness.wait_until(
        lambda: (lambda ids: ids if len(ids) >= 3 else None)(cases.sids(px.events.read())), 5) or []
    stalled_sids = stalled_sids[:3]
    r = ctx.client(px.port, jid=f"bob@{DOMAIN}", mech="PLAIN")
    ctx.check(r.get("ok"), f"bob (right password) with three SCRAM sessions stalled: {r.get('error')} "
              f"{r.get('condition', '')}")
    ctx.check(slog.wait_authenticated("bob"), "bob's login not in Prosody's log")
    events = px.events.read()
    ctx.check(not [e for e in events if harness.match(e, "policy", rule="auth_failures")],
              f"auth_failures applied before any failure: "
              f"{[e for e in events if e.get('rule') == 'auth_failures']}")
    # 40 wrong guesses at once, the stalled sessions still open
    n = 40
    clients = [tls_client(ctx, px)[0] for _ in range(n)]
    payload = raw.plain_payload("alice", WRONG)
    for c in clients:
        c.auth("PLAIN", payload)
    got = [answer(c, c.next_element(timeout=10)) for c in clients]
    for c in clients:
        c.close()
    relayed, throttled = got.count("not-authorized"), got.count("temporary-auth-failure")
    ctx.check(relayed + throttled == n, f"answers other than not-authorized/temporary-auth-failure: "
              f"{sorted(set(got) - {'not-authorized', 'temporary-auth-failure'})}")
    ctx.check(relayed <= 3, f"{relayed} of {n} parallel guesses answered by the server, want <= 3")
    ctx.check(len(stalled_sids) == 3 and not [e for e in px.events.find("close") if e.get("sid") in stalled_sids],
              f"a stalled session was closed: {[e for e in px.events.find('close') if e.get('sid') in stalled_sids]}")
    # the first stalled session goes on with the right proof: checked again
    c, first_bare, server_first = stalled[0]
    c.send(f"<response xmlns='{raw.NS_SASL}'>{scram_proof(first_bare, server_first, USERS['alice'])}</response>")
    got = answer(c, c.next_element())
    for c, _, _ in stalled:
        c.close()
    limit = relayed == 3  # three failures recorded: the limit is reached
    if limit:
        ctx.check(got == "temporary-auth-failure",
                  f"stalled session's proof after 3 failures: want temporary-auth-failure, got {got}")
        s = ctx.session(px, 0)
        ctx.check(s.all("policy", rule="auth_failures", action="reject"),
                  f"stalled session's proof: no policy event rule auth_failures (have {s.all('policy')})")
    direct = ctx.raw(ctx.prosody().port)
    raw.login_plain(direct, "bob", USERS["bob"], bind=False)  # fence, straight to Prosody
    direct.close()
    ctx.check(slog.wait_authenticated("bob", 2), "the direct fence login not in Prosody's log")
    t = slog.tested("alice")
    ctx.check(t <= 3, f"Prosody checked alice's password {t} times, want <= 3")
    if limit:
        n = slog.authenticated("alice")
        ctx.check(n == 0, f"Prosody logged alice in {n} time(s): the stalled proof reached it")


# ================================================================ 5. authzid without @


@case("review8_authzid_localpart", prosody="hostile")
def review8_authzid_localpart(ctx):
    """users_deny = mallory (and, on a second proxy, users_allow = alice):
    PLAIN with authzid "mallory" (no @: a localpart on the session's
    domain) and authcid alice with her password is refused by the proxy
    (rule users_deny / users_allow); Prosody never sees it (no PLAIN
    <auth>, no password check for alice; the fences are SCRAM logins of
    bob and alice)."""
    slog = Log(ctx.prosody())
    for rule, value, fence_user in (("users_deny", "mallory", "bob"), ("users_allow", "alice", "alice")):
        what = f"{rule} = {value}, authzid mallory"
        px = ctx.proxy(**{rule: value})
        c, _ = tls_client(ctx, px)
        c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"], authzid="mallory"))
        got = answer(c, c.next_element())
        c.close()
        ctx.check(got in ("not-authorized", "invalid-authzid"),
                  f"{what}: want a refusal (not-authorized/invalid-authzid), got {got}")
        s = ctx.session(px)
        refused_events(ctx, s, what, rule)
        login = s.first("login")
        ctx.check(login is not None and login.get("authzid") in ("mallory", f"mallory@{DOMAIN}"),
                  f"{what}: login record authzid {login.get('authzid') if login else None!r}")
        scram_fence(ctx, px, slog, fence_user)  # SCRAM: leaves no 'test password' line
    n = slog.received("mechanism='PLAIN'")
    ctx.check(n == 0, f"Prosody received the PLAIN <auth> ({n}x)")
    t = slog.tested("alice")
    ctx.check(t == 0, f"Prosody checked alice's password {t} time(s)")
    n = slog.authenticated("alice")
    ctx.check(n == 1, f"Prosody logged alice in {n} time(s), want 1 (the second fence)")
    slog.never_logged_in(ctx, "mallory")


# ================================================================ 6. escaped SCRAM name


@case("review8_scram_escaped_name", prosody="hostile")
def review8_scram_escaped_name(ctx):
    """users_deny = mallory: SCRAM-SHA-1 client-first "n,,n=xn=2Cmallory,r=..."
    (the proxy decodes "xn,mallory", Prosody's pattern reads "2Cmallory"):
    an escaped name is not one every server reads alike, so the proxy
    refuses it (malformed-request) and Prosody never gets the <auth>."""
    slog = Log(ctx.prosody())
    px = ctx.proxy(users_deny="mallory")
    c, _ = tls_client(ctx, px)
    c.auth("SCRAM-SHA-1", b64("n,,n=xn=2Cmallory,r=xi-review8-nonce-0123456789"))
    got = answer(c, c.next_element())
    c.close()
    ctx.check(got == "malformed-request", f"want failure malformed-request, got {got}")
    s = ctx.session(px)
    refused_events(ctx, s, "n=xn=2Cmallory", "users_deny", "malformed-request")
    plain_fence(ctx, px, slog, "bob", USERS["bob"])  # PLAIN: the fence sends no SCRAM
    n = slog.received("mechanism='SCRAM-SHA-1'")
    ctx.check(n == 0, f"Prosody received the SCRAM-SHA-1 <auth> ({n}x)")


# ================================================================ 7. abandoned proofs


@case("review8_abandoned_proof_counts", prosody="hostile")
def review8_abandoned_proof_counts(ctx):
    """auth_failures = 2/60: two sessions each send a wrong PLAIN password
    and close at once, before the server (slow: 100000 iterations) can
    answer. Abandoned in flight, each counts as a failure: once both have
    closed, a third attempt from the same address (bob, right password)
    gets temporary-auth-failure from the proxy and never reaches Prosody."""
    slog = Log(ctx.prosody())
    px = ctx.proxy(auth_failures="2/60")
    for _ in range(2):
        c, _ = tls_client(ctx, px)
        c.auth("PLAIN", raw.plain_payload("alice", WRONG))
        c.close()
    for i in range(2):
        s = ctx.session(px, i)
        ctx.check(s.first("auth", mechanism="PLAIN"), f"abandoned session {i}: no auth event")
        up = s.all("auth_result", by="upstream")
        ctx.check(not up, f"abandoned session {i}: the server answered before the close, so "
                  f"this run did not test abandonment: {up}")
    c, _ = tls_client(ctx, px)
    c.auth("PLAIN", raw.plain_payload("bob", USERS["bob"]))
    got = answer(c, c.next_element())
    c.close()
    ctx.check(got == "temporary-auth-failure", f"third attempt: want temporary-auth-failure, got {got}")
    s = ctx.session(px, 2)
    refused_events(ctx, s, "third attempt", "auth_failures", "temporary-auth-failure")
    d = ctx.raw(ctx.prosody().port)
    raw.login_plain(d, "alice", USERS["alice"], bind=False)  # fence, straight to Prosody
    d.close()
    ctx.check(slog.wait_authenticated("alice"), "the direct fence login of alice not in Prosody's log")
    ctx.check(slog.tested("bob") == 0, f"Prosody checked bob's password {slog.tested('bob')} time(s)")
    slog.never_logged_in(ctx, "bob")
