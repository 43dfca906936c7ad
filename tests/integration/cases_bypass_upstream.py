"""Issue 8: routes around policy that need a server on the other side, and
stream XML the proxy itself writes.

users_deny/users_allow are checked on the SASL identity and again on what
the server says it granted: the JID in the bind result, or SASL2's
<authorization-identifier>. That second check is for a server that decodes
an identity differently from the proxy; fakeserver.py plays one here: it
takes alice's PLAIN (any password) and binds her as mallory@lab.test,
echoing the bind request's id exactly (none when it had none), or answers
SASL2 with mallory and a FAST token. The cases say what must hold:

  - the check cannot be skipped (a bind with no id, or an id longer than
    the proxy keeps), and it comes before any use: stanzas the client
    pipelined after its bind never reach the server unless the bound
    identity passed; stanzas before the bind end the session
    (not-authorized, RFC 6120 7.1); a bind the server refused can be
    retried;
  - a SASL2 <success> for a denied identity (with its token) never
    reaches the client;
  - against the real Prosody, the held stanzas are released in order
    once the bind result came (bind with no id, and with a 70-byte id).

And the stream prefix the proxy writes its own errors and closes with
(the prefix of a relayed header) is the whole prefix: what it sends is
checked with a real XML parser (Expat), fed the relayed header and what
followed it.
"""

import xml.parsers.expat

import fakeserver
import raw
from cases import DOMAIN, USERS, case
from cases_hostile import fake_upstream, with_fake

NS_STREAM = raw.NS_STREAM
NS_BIND = raw.NS_BIND
NS_SASL2 = fakeserver.NS_SASL2
NS_BIND2 = fakeserver.NS_BIND2
ALICE = f"alice@{DOMAIN}"
MALLORY_JID = f"mallory@{DOMAIN}/r"
LONG_ID = ("x" * 62) + "-long-id"  # 70 bytes: more than the 63 a bind_id[64] keeps
assert len(LONG_ID) == 70
ROSTER_SET = ("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
              "<item jid='x@lab.test'/></query></iq>")
TOKEN = "SECRET-TOKEN-xi-4c1d9e7a2b6f0835"
PREFIX20 = "abcdefghijklmnopqrst"
PREFIX70 = "p" * 66 + "long"
assert len(PREFIX20) == 20 and len(PREFIX70) == 70


# ================================================================ helpers


def bind_iq(resource, iq_id=None):
    """A bind request; iq_id None: no id attribute at all."""
    ida = "" if iq_id is None else f" id='{iq_id}'"
    return (f"<iq type='set'{ida}><bind xmlns='{NS_BIND}'><resource>{resource}</resource>"
            "</bind></iq>")


def message(to, token):
    return f"<message to='{to}' type='chat' id='{token}'><body>{token}</body></message>"


def login_to_fake(ctx, px):
    """A raw alice: STARTTLS, PLAIN (the fake server takes any password),
    the restarted stream open with the server's bind features read."""
    c = ctx.raw(px.port)
    try:
        raw.login_plain(c, "alice", USERS["alice"], bind=False)
    except (AssertionError, OSError) as e:
        ctx.require(False, f"login up to the restarted stream failed: {e}")
    return c


def replies_until_closed(c, timeout=5.0):
    """Every top-level element the client gets from now until the proxy
    closes; if the first one is not a stream error, that one and whatever
    came with it (a proxy that lets the session go on would keep it open:
    no waiting for a close that will not come)."""
    first = c.next_element(timeout=timeout)
    if first is None:
        return []
    if first.tag == raw.q(NS_STREAM, "error"):
        c.wait_closed(timeout)
    out = [first] + c.elements
    c.elements = []
    return out


def error_of(elements):
    for el in elements:
        if el.tag == raw.q(NS_STREAM, "error"):
            return raw.stream_error_condition(el)
    return None


def names(elements):
    return [raw.local(el.tag) for el in elements]


def server_done(ctx, c, conn, what):
    """The fake server's connection is over: the proxy closed it, or (if
    the client's connection is still open, where the session went on) the
    client closes first. After this, conn.received is everything the proxy
    ever sent it."""
    if conn is None:
        ctx.require(False, f"{what}: the proxy never connected to the fake server")
    if not conn.done.wait(5 if c.eof else 0):
        c.close()
        ctx.check(conn.done.wait(10), f"{what}: the proxy kept the upstream connection open")


def expect_reject_events(ctx, px, rule, what):
    """A policy event rule/reject and a login record outcome failure."""
    s = ctx.session(px)
    pol = s.all("policy", rule=rule, action="reject")
    ctx.check(pol, f"{what}: no policy event rule={rule} action=reject "
              f"(policy events: {s.all('policy')})")
    login = s.expect(ctx, "login")
    if login:
        ctx.check(login.get("outcome") == "failure",
                  f"{what}: login outcome {login.get('outcome')!r}, want failure ({login})")
    return s


def parse_complete(data):
    """None if data is one complete well-formed XML document (namespaces
    checked: an unbound or cut prefix is an error), else Expat's error with
    the bytes around it."""
    p = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    try:
        p.Parse(data, True)
        return None
    except xml.parsers.expat.ExpatError as e:
        at = p.ErrorByteIndex if p.ErrorByteIndex >= 0 else len(data)
        return f"{e} near {data[max(0, at - 80):at + 80]!r}"


def prefixed_header(prefix, to=DOMAIN):
    return (f"<{prefix}:stream xmlns:{prefix}='{NS_STREAM}' xmlns='jabber:client' "
            f"to='{to}' version='1.0'>")


def prefixed_server_header(prefix, stream_id="fake-3"):
    return (f"<{prefix}:stream xmlns:{prefix}='{NS_STREAM}' xmlns='jabber:client' "
            f"id='{stream_id}' from='{DOMAIN}' version='1.0' xml:lang='en'>"
            f"<{prefix}:features><bind xmlns='{NS_BIND}'/></{prefix}:features>").encode()


def sasl_success_to_restart(ctx, px):
    """A raw alice through STARTTLS and PLAIN up to <success/>, parser reset
    for the restarted stream (whose header the case sends itself)."""
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    el = c.next_element()
    ctx.require(el is not None and raw.local(el.tag) == "success", f"no <success/>: {c.describe(el)}")
    c._reset_parser()
    return c


# ================================================================ the bound identity


def bound_as_mallory(ctx, rule, how):
    """alice authenticates, the fake server binds her as mallory@lab.test.
    how: "noid" (bind with no id), "longid" (a 70-byte id), "pipelined"
    (a normal id, then a roster set and a message in the same write)."""
    srv = fake_upstream(ctx, fakeserver.plain_then(
        fakeserver.serve_stanzas([fakeserver.bind_result(MALLORY_JID)])))
    cfg = {"users_deny": "mallory"} if rule == "users_deny" else {"users_allow": "alice"}
    px = ctx.proxy(upstream_port=srv.port, **cfg)
    c = login_to_fake(ctx, px)
    iq_id = {"noid": None, "longid": LONG_ID, "pipelined": "b1"}[how]
    after = ROSTER_SET + message(ALICE, "after-bind") if how == "pipelined" else ""
    c.send(bind_iq("r", iq_id) + after)
    got = replies_until_closed(c)
    what = f"{rule}, bind {how}"
    cond = error_of(got)
    ctx.check(cond == "policy-violation",
              f"{what}: client got {names(got) or c.describe()} (stream error {cond!r}), "
              "want stream error policy-violation")
    ctx.check("iq" not in names(got) and f"<jid>{MALLORY_JID}".encode() not in c.received,
              f"{what}: the bind result for mallory reached the client: {c.received[-400:]!r}")
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, what)
    binds = [st for st in conn.stanzas if b"<bind" in st]
    others = [st for st in conn.stanzas if b"<bind" not in st]
    ctx.check(len(binds) == 1, f"{what}: the fake server got {len(binds)} bind requests")
    later = conn.since("restart")
    ctx.check(not others and b"jabber:iq:roster" not in later and b"<message" not in later,
              f"{what}: the server received what the client sent after the bind: "
              f"{[st[:100] for st in others]}")
    expect_reject_events(ctx, px, rule, what)


@case("bound_jid_noid_deny", prosody=None)
@with_fake
def bound_jid_noid_deny(ctx):
    """users_deny = mallory: a bind with no id that the server binds as
    mallory is refused (policy-violation, the result never reaches the
    client)."""
    bound_as_mallory(ctx, "users_deny", "noid")


@case("bound_jid_noid_allow", prosody=None)
@with_fake
def bound_jid_noid_allow(ctx):
    """users_allow = alice: the same bind with no id, bound as mallory,
    is refused."""
    bound_as_mallory(ctx, "users_allow", "noid")


@case("bound_jid_longid_deny", prosody=None)
@with_fake
def bound_jid_longid_deny(ctx):
    """users_deny = mallory: a bind with a 70-byte id (longer than the
    proxy used to keep), bound as mallory, is refused."""
    bound_as_mallory(ctx, "users_deny", "longid")


@case("bound_jid_longid_allow", prosody=None)
@with_fake
def bound_jid_longid_allow(ctx):
    """users_allow = alice: a 70-byte bind id bound as mallory, refused."""
    bound_as_mallory(ctx, "users_allow", "longid")


@case("bound_jid_pipelined_deny", prosody=None)
@with_fake
def bound_jid_pipelined_deny(ctx):
    """users_deny = mallory: a roster set and a message pipelined after the
    bind (same write) never reach the server, which binds as mallory."""
    bound_as_mallory(ctx, "users_deny", "pipelined")


@case("bound_jid_pipelined_allow", prosody=None)
@with_fake
def bound_jid_pipelined_allow(ctx):
    """users_allow = alice: the same with stanzas pipelined after the bind."""
    bound_as_mallory(ctx, "users_allow", "pipelined")


@case("bound_jid_stanza_before_bind", prosody=None)
@with_fake
def bound_jid_stanza_before_bind(ctx):
    """users_deny set: a message after SASL success but before any bind
    ends the session with not-authorized (RFC 6120 7.1) and never reaches
    the server (the bound identity could not have been checked yet)."""
    srv = fake_upstream(ctx, fakeserver.plain_then(
        fakeserver.serve_stanzas([fakeserver.bind_result(f"{ALICE}/r")])))
    px = ctx.proxy(upstream_port=srv.port, users_deny="mallory")
    c = login_to_fake(ctx, px)
    c.send(message(ALICE, "before-bind"))
    got = replies_until_closed(c)
    cond = error_of(got)
    ctx.check(cond == "not-authorized",
              f"client got {names(got) or c.describe()} (stream error {cond!r}), "
              "want stream error not-authorized")
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, "message before bind")
    ctx.check(b"<message" not in conn.since("restart"),
              f"the server received the message sent before the bind: {conn.stanzas}")
    s = ctx.session(px)
    s.expect(ctx, "stream_error", dir="s2c", condition="not-authorized")


@case("bound_jid_bind_error_retry", prosody=None)
@with_fake
def bound_jid_bind_error_retry(ctx):
    """users_deny set: a bind the server answers with <conflict/> can be
    tried again; the second (another resource, with a message pipelined in
    the same write) binds as alice, the message goes through and back."""
    srv = fake_upstream(ctx, fakeserver.plain_then(fakeserver.serve_stanzas(
        [fakeserver.bind_error("conflict"), fakeserver.bind_result(f"{ALICE}/r2")])))
    px = ctx.proxy(upstream_port=srv.port, users_deny="mallory")
    c = login_to_fake(ctx, px)
    c.send(bind_iq("r1", "b1"))
    el = c.next_element()
    ctx.require(el is not None and raw.local(el.tag) == "iq" and el.get("type") == "error",
                f"first bind: want the server's iq error, got {c.describe(el)}")
    c.send(bind_iq("r2", "b2") + message(f"{ALICE}/r2", "after-retry"))
    el = c.next_element()
    jid = el.findtext(f"{raw.q(NS_BIND, 'bind')}/{raw.q(NS_BIND, 'jid')}") if el is not None else None
    ctx.check(el is not None and el.get("type") == "result" and jid == f"{ALICE}/r2",
              f"second bind: want result {ALICE}/r2, got {c.describe(el)}")
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "message" and el.get("id") == "after-retry",
              f"the message pipelined after the second bind did not come back: {c.describe(el)}")
    c.send("</stream:stream>")
    c.wait_closed()
    s = ctx.session(px)
    ctx.check(not s.all("policy", action="reject"), f"a refusal: {s.all('policy')}")
    ctx.check(not s.all("stream_error"), f"a stream error: {s.all('stream_error')}")
    s.expect(ctx, "bind", jid=f"{ALICE}/r2")
    s.expect(ctx, "login", outcome="success")


def prosody_pipelined(ctx, how):
    """alice against the real Prosody with users_deny = mallory: the bind
    (how: no id, a 70-byte id) and a message to her own full JID in one
    write. The bind result reaches her, then the message comes back."""
    px = ctx.proxy(users_deny="mallory")
    c = ctx.raw(px.port)
    try:
        raw.login_plain(c, "alice", USERS["alice"], bind=False)
    except (AssertionError, OSError) as e:
        ctx.require(False, f"login up to bind failed: {e}")
    resource = f"xi-{how}"
    full = f"{ALICE}/{resource}"
    token = f"xi-held-{how}"
    c.send(bind_iq(resource, None if how == "noid" else LONG_ID) + message(full, token))
    el = c.next_element()
    jid = el.findtext(f"{raw.q(NS_BIND, 'bind')}/{raw.q(NS_BIND, 'jid')}") if el is not None else None
    ctx.check(el is not None and raw.local(el.tag) == "iq" and el.get("type") == "result"
              and jid == full, f"bind {how}: want the result binding {full}, got {c.describe(el)}")
    if how == "longid" and el is not None:
        ctx.check(el.get("id") == LONG_ID, f"bind result id {el.get('id')!r}, want the 70-byte id")
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "message" and el.get("id") == token,
              f"bind {how}: the message pipelined with the bind did not come back: {c.describe(el)}")
    c.send("</stream:stream>")
    c.wait_closed()
    s = ctx.session(px)
    ctx.check(not s.all("policy", action="reject"), f"a refusal: {s.all('policy')}")
    s.expect(ctx, "bind", jid=full)
    s.expect(ctx, "login", outcome="success")


@case("bound_jid_prosody_noid_pipelined")
def bound_jid_prosody_noid_pipelined(ctx):
    """Real Prosody, users_deny = mallory: a bind with no id and a message
    pipelined with it; bound, the message released after the result."""
    prosody_pipelined(ctx, "noid")


@case("bound_jid_prosody_longid_pipelined")
def bound_jid_prosody_longid_pipelined(ctx):
    """Real Prosody, users_deny = mallory: a bind with a 70-byte id and a
    message pipelined with it; bound, the message released after it."""
    prosody_pipelined(ctx, "longid")


# ================================================================ SASL2 success for a denied identity


def sasl2_client(ctx, px):
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    f = c.open_stream()
    ctx.require(f.find(f"{{{NS_SASL2}}}authentication") is not None,
                f"no SASL2 <authentication> offered: {c.describe(f)}")
    return c


def sasl2_authenticate(c, user, password):
    c.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'>"
           f"<initial-response>{raw.plain_payload(user, password)}</initial-response>"
           "<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'><software>xi</software>"
           f"</user-agent><bind xmlns='{NS_BIND2}'><tag>xi</tag></bind></authenticate>")


@case("sasl2_success_denied_identity", prosody=None)
@with_fake
def sasl2_success_denied_identity(ctx):
    """users_deny = mallory; alice authenticates over SASL2, the server
    answers <success> with mallory as authorization identifier, a FAST
    token and Bind2's <bound/>: the client never gets the <success> nor the
    token, it gets policy-violation; the token is in no file the proxy
    wrote."""
    success = (f"<success xmlns='{NS_SASL2}'>"
               f"<authorization-identifier>mallory@{DOMAIN}</authorization-identifier>"
               f"<token xmlns='urn:xmpp:fast:0' expiry='2026-12-31T00:00:00Z' token='{TOKEN}'/>"
               f"<bound xmlns='{NS_BIND2}'/></success>"
               "<stream:features><sm xmlns='urn:xmpp:sm:3'/></stream:features>"
               f"<message xmlns='jabber:client' to='mallory@{DOMAIN}/r' from='{DOMAIN}' "
               "id='hello'><body>welcome</body></message>").encode()
    srv = fake_upstream(ctx, fakeserver.sasl2_then(success))
    px = ctx.proxy(upstream_port=srv.port, users_deny="mallory")
    c = sasl2_client(ctx, px)
    sasl2_authenticate(c, "alice", USERS["alice"])
    got = replies_until_closed(c)
    cond = error_of(got)
    ctx.check(cond == "policy-violation",
              f"client got {names(got) or c.describe()} (stream error {cond!r}), "
              "want stream error policy-violation")
    ctx.check(b"<success" not in c.received,
              f"the SASL2 <success> for mallory reached the client: {c.received[-500:]!r}")
    ctx.check(TOKEN.encode() not in c.received, "the FAST token reached the client")
    ctx.check(b"welcome" not in c.received, "the server's stanza after <success> reached the client")
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, "SASL2 success as mallory")
    s = expect_reject_events(ctx, px, "users_deny", "SASL2 success as mallory")
    ctx.check(not s.all("bind", jid=f"mallory@{DOMAIN}"), f"a bind event for mallory: {s.all('bind')}")
    px.stop()
    leaked = [p.name for p in px.written_files() if TOKEN.encode() in p.read_bytes()]
    ctx.check(not leaked, f"the FAST token is in {leaked}")


@case("sasl2_denied_initial_response", prosody=None)
@with_fake
def sasl2_denied_initial_response(ctx):
    """users_deny = mallory: SASL2 <authenticate> with PLAIN \\0mallory\\0pw
    in <initial-response> is refused by the proxy (a SASL2 <failure> with
    not-authorized); the fake server never sees the attempt."""
    srv = fake_upstream(ctx, fakeserver.sasl2_then(
        f"<success xmlns='{NS_SASL2}'><authorization-identifier>mallory@{DOMAIN}"
        "</authorization-identifier></success>".encode()))
    px = ctx.proxy(upstream_port=srv.port, users_deny="mallory")
    c = sasl2_client(ctx, px)
    sasl2_authenticate(c, "mallory", "pw")
    el = c.next_element()
    ctx.check(el is not None and el.tag == f"{{{NS_SASL2}}}failure"
              and raw.sasl_condition(el) == "not-authorized",
              f"want a SASL2 <failure> with not-authorized, got {c.describe(el)}")
    ctx.check(b"<success" not in c.received, f"a <success> reached the client: {c.received[-300:]!r}")
    c.close()
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, "SASL2 as mallory")
    ctx.check(b"<authenticate" not in conn.since("authenticate")
              and raw.plain_payload("mallory", "pw").encode() not in conn.received,
              f"the fake server saw the refused attempt: {conn.since('authenticate')[:300]!r}")
    s = ctx.session(px)
    pol = s.all("policy", rule="users_deny", action="reject")
    ctx.check(pol, f"no policy event users_deny/reject: {s.all('policy')}")
    s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="not-authorized")


# ================================================================ prefixes the proxy writes


@case("relay_prefix20_c2s_bad_xml", prosody=None)
@with_fake
def relay_prefix20_c2s_bad_xml(ctx):
    """After the post-SASL restart the client's header has a 20-byte prefix
    (relayed as it is), then bad XML: the client hears not-well-formed, and
    what the server receives from that header on is one well-formed
    document closed with the full prefix."""
    srv = fake_upstream(ctx, fakeserver.plain_then(fakeserver.drain_after))
    px = ctx.proxy(upstream_port=srv.port)
    c = sasl_success_to_restart(ctx, px)
    c.send(prefixed_header(PREFIX20))
    f = c.next_element()
    ctx.require(f is not None and raw.local(f.tag) == "features",
                f"no features after the prefixed header: {c.describe(f)}")
    c.send("<a><b></a>")
    cond = c.stream_error()
    ctx.check(cond == "not-well-formed", f"client told {cond!r}, want not-well-formed; {c.describe()}")
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, "prefix 20, bad XML")
    data = conn.since("success")
    at = data.find(f"<{PREFIX20}:stream".encode())
    ctx.require(at >= 0, f"the server never got the client's header: {data[:300]!r}")
    bad = parse_complete(data[at:])
    ctx.check(bad is None, f"what the server received is not well-formed XML: {bad}; "
              f"after the header: {data[at:].split(b'>', 1)[-1][:300]!r}")
    ctx.check(f"</{PREFIX20}:stream>".encode() in data[at:],
              f"the server's stream not closed with the full prefix: {data[at:][-200:]!r}")


@case("relay_prefix70_c2s_refused", prosody=None)
@with_fake
def relay_prefix70_c2s_refused(ctx):
    """After the restart the client's header has a 70-byte prefix (more than
    the proxy can write back): the client hears bad-namespace-prefix; what
    the server got after its <success/> is nothing, or a well-formed
    document (header and close)."""
    srv = fake_upstream(ctx, fakeserver.plain_then(fakeserver.drain_after))
    px = ctx.proxy(upstream_port=srv.port)
    c = sasl_success_to_restart(ctx, px)
    c.send(prefixed_header(PREFIX70))
    el = c.next_element()
    cond = raw.stream_error_condition(el) if el is not None and el.tag == raw.q(NS_STREAM, "error") else None
    ctx.check(cond == "bad-namespace-prefix",
              f"client got {c.describe(el)}, want stream error bad-namespace-prefix")
    if cond is not None:
        ctx.check(c.wait_closed(), "client connection not closed after the error")
    ctx.check(c.parse_error is None, f"the client's stream is not well-formed: {c.parse_error}")
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, "prefix 70")
    data = conn.since("success")
    if data.strip():
        bad = parse_complete(data)
        ctx.check(bad is None, f"what the server received after <success/> is not a well-formed "
                  f"document: {bad}")


def server_prefix_bad_xml(ctx, prefix):
    """The server's restarted header and features use prefix; it answers
    the bind with bad XML. What the client receives in the restarted stream
    is one well-formed document, closed with the full prefix."""
    def after(conn):
        conn.expect(fakeserver.BIND_RE, what="the bind iq")
        conn.send(b"<a><b></a>")
        conn.note("sent bad XML")
        conn.drain(timeout=30)
    srv = fake_upstream(ctx, fakeserver.plain_then(after, restart=prefixed_server_header(prefix)))
    px = ctx.proxy(upstream_port=srv.port)
    c = sasl_success_to_restart(ctx, px)
    mark = len(c.received)
    c.send(raw.header())
    f = c.next_element()
    if f is not None and raw.local(f.tag) == "features":
        c.send(bind_iq("r", "b1"))
        cond = c.stream_error()
    elif len(prefix) > 63 and f is not None and f.tag == raw.q(NS_STREAM, "error"):
        cond = raw.stream_error_condition(f)  # refused the header itself: fine
    else:
        cond = None
        ctx.check(False, f"prefix {len(prefix)}: no usable features after the restart: {c.describe(f)}")
    if cond is not None or c.parse_error is None:
        ctx.check(cond == "remote-connection-failed", f"prefix {len(prefix)}: client told {cond!r}, "
                  f"want remote-connection-failed; {c.describe()}")
    if cond is not None:
        c.wait_closed()
    data = c.received[mark:]
    bad = parse_complete(data)
    ctx.check(bad is None, f"prefix {len(prefix)}: what the client received after the restart is "
              f"not one well-formed document: {bad}")
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, f"server prefix {len(prefix)}")


@case("relay_prefix20_s2c_bad_xml", prosody=None)
@with_fake
def relay_prefix20_s2c_bad_xml(ctx):
    """The server's post-SASL header and features use a 20-byte prefix, then
    it sends bad XML: the client's restarted stream (the rewritten features,
    the proxy's error and close) is well-formed with the full prefix."""
    server_prefix_bad_xml(ctx, PREFIX20)


@case("relay_prefix70_s2c_bad_xml", prosody=None)
@with_fake
def relay_prefix70_s2c_bad_xml(ctx):
    """The same with a 70-byte prefix on the server's header: whatever the
    proxy does with it, the client's stream stays well-formed."""
    server_prefix_bad_xml(ctx, PREFIX70)
