"""FAST (XEP-0484) through the proxy, with a scripted upstream that
behaves as prosody-modules' mod_sasl2_fast does and a raw SASL2 client.

No Debian 12 server speaks SASL2 (cases_sasl2.py says why), so FastServer
plays one, on top of fakeserver.py's connections (its STARTTLS with the
lab certificate, its byte log): STARTTLS required, then, on the post-TLS
stream,

  - <authentication xmlns='urn:xmpp:sasl:2'> with PLAIN and, in <inline>,
    Bind2 <bind xmlns='urn:xmpp:bind:0'/>, <sm xmlns='urn:xmpp:sm:3'/> and
    <fast xmlns='urn:xmpp:fast:0'> with its HT-* mechanisms -- the last
    only when the post-TLS stream header's from has a localpart
    (mod_sasl2_fast's advertise-sasl-features hook: jid.node(stream.from));
  - PLAIN over SASL2 and, with <request-token mechanism='M'/> and a
    <user-agent id>, a token in <success>: <token xmlns='urn:xmpp:fast:0'
    expiry token='secret-token:fast-...'/>, kept per (username,
    sha256(user-agent id)) as a "-new" token, mechanism M;
  - a token login (<authenticate mechanism='HT-*'> with <fast count/>):
    refused with malformed-request when FAST was not offered on this
    stream or there is no user-agent id; the payload is username NUL
    HMAC-SHA-256(token, "Initiator") (^([^\\0]+)\\0(.+)$, else
    malformed-request); the "-new" token, then the "-cur" one, of that
    username and user agent, for that mechanism, is compared; a match
    turns "-new" into "-cur" (not with invalidate, which deletes it), an
    expired one is credentials-expired, none is not-authorized; success
    carries additional-data = HMAC-SHA-256(token, "Responder");
  - an HT-* mechanism without <fast>, or PLAIN with it: invalid-mechanism
    (the stream's SASL handler is the other one);
  - Bind2 inline (<bound/>, with <enabled/> when <enable/> was inside the
    bind), then message echo, <r/> answered <a/>, and </stream:stream>
    answered in kind.

What is under test is the proxy: the client's from carried into its own
post-TLS header toward the server, the FAST offer filtered by policy, the
token login relayed with identity rules applied to its username, the
token, the HMACs and the initial response in no file the proxy wrote, and
bytes after a stream's end neither relayed nor answered with an error.
"""

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET

import fakeserver
import harness
import raw
from cases import DOMAIN, USERS, case

NS_SASL = raw.NS_SASL
NS_SASL2 = "urn:xmpp:sasl:2"
NS_BIND2 = "urn:xmpp:bind:0"
NS_FAST = "urn:xmpp:fast:0"
NS_SM3 = "urn:xmpp:sm:3"
NS_STREAM = raw.NS_STREAM
NS_TLS = raw.NS_TLS

NONE = "HT-SHA-256-NONE"
UNIQ = "HT-SHA-256-UNIQ"
EXPR = "HT-SHA-256-EXPR"
ENDP = "HT-SHA-256-ENDP"
EXPIRY = "2026-12-22T00:00:00Z"
ALICE = f"alice@{DOMAIN}"
MALLORY = f"mallory@{DOMAIN}"
PASSWORDS = {"alice": USERS["alice"], "mallory": "Xi-mallory-Pw-4Hs8qL"}
UA_ID = "d4565fa7-4d72-4749-b3d3-740edbf87770"
UA = f"<user-agent id='{UA_ID}'><software>xi-fast</software><device>lab</device></user-agent>"

ELEMENT_END = object()  # Reader.element(): the peer's </stream:stream>


# ================================================================ the scripted upstream


def hmac256(key, msg):
    if isinstance(key, str):
        key = key.encode()
    return hmac.new(key, msg, hashlib.sha256).digest()


def node_of(jid):
    """The localpart of a JID (util.jid's node), or None."""
    m = re.match(r"^([^@/]+)@", jid or "")
    return m.group(1) if m else None


class Reader:
    """Top-level elements from a FakeConn with an incremental parser (one
    per stream: restart() after STARTTLS). A parse error after the root's
    end is junk after the stream, which the script looks at in the bytes."""

    def __init__(self, conn):
        self.conn = conn
        self.restart()

    def restart(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.ready = []  # ("header", attrs) | ("element", el) | ("end", None)
        self.ended = False

    def _pump(self, deadline):
        conn = self.conn
        if not conn.pending:
            if conn.eof:
                raise fakeserver.Closed("closed by the proxy")
            if not conn._recv(deadline):
                if time.monotonic() >= deadline:
                    raise fakeserver.Timeout("nothing from the proxy in time")
                return
        data, conn.pending = conn.pending, b""
        if self.ended or not data:
            return
        self.parser.feed(data)
        try:
            for kind, el in self.parser.read_events():
                if kind == "start":
                    self.depth += 1
                    if self.depth == 1:
                        self.ready.append(("header", dict(el.attrib)))
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.ready.append(("element", el))
                    elif self.depth == 0:
                        self.ended = True
                        self.ready.append(("end", None))
                        return
        except ET.ParseError:
            if not self.ended:
                raise

    def next(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not self.ready:
            self._pump(deadline)
        return self.ready.pop(0)

    def header(self, timeout=10.0):
        kind, attrs = self.next(timeout)
        if kind != "header":
            raise fakeserver.Timeout(f"want a stream header, got {kind}")
        return attrs

    def element(self, timeout=30.0):
        """The next top-level element, or ELEMENT_END at the stream's end."""
        kind, el = self.next(timeout)
        if kind == "end":
            return ELEMENT_END
        if kind != "element":
            raise fakeserver.Timeout(f"want an element, got {kind}")
        return el


class FastServer:
    """A scripted SASL2 + FAST upstream (see the module's docstring).

    fast_mechs: the HT-* mechanisms it offers; zero_rtt: tls-0rtt='true'
    on <fast>; close_with: bytes it sends when the client's message with
    id 'bye' arrives (its own </stream:stream> and what follows), then
    later_junk in a second write; hold_close: its answer to the client's
    </stream:stream> waits for release() (or 5 s).

    Per connection (srv.conn(i), a fakeserver.FakeConn): headers (attrs of
    the stream headers received, "tls" added), auths (the <authenticate>s
    received, as dicts), seen (local names of the top-level elements),
    fast_offered, ended (Event: the proxy's </stream:stream> came),
    after_end() (bytes received after it)."""

    def __init__(self, fast_mechs=(NONE, EXPR), zero_rtt=False, close_with=None,
                 later_junk=None, hold_close=False):
        self.fast_mechs = list(fast_mechs)
        self.zero_rtt = zero_rtt
        self.close_with = close_with
        self.later_junk = later_junk
        self.hold_close = hold_close
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.tokens = {}  # (username, sha256(client id) hex, "new"|"cur") -> info
        self.issued = []  # every token secret it handed out or seeded
        self.fake = fakeserver.FakeServer(self._script).start()
        self.port = self.fake.port

    # ------------------------------------------------ for the cases

    def conn(self, index=0, timeout=10.0):
        c = self.fake.wait_conn(index, timeout)
        if c is not None:
            harness.wait_until(lambda: hasattr(c, "ended"), timeout)
        return c

    def seed(self, username, client_id=UA_ID, mechanism=NONE, expired=False):
        """A token as an earlier login would have left it ("-new")."""
        return self._make_token(username, client_id, mechanism, expired)

    def release(self):
        self.released.set()

    def stop(self):
        self.released.set()
        self.fake.stop()

    def describe(self):
        parts = [self.fake.describe()]
        for c in self.fake.conns:
            parts.append(f"--- FAST upstream connection {c.index}: headers {getattr(c, 'headers', None)}, "
                         f"seen {getattr(c, 'seen', None)}, auths {getattr(c, 'auths', None)}")
        return "\n".join(parts)

    # ------------------------------------------------ tokens (mod_sasl2_fast's store)

    @staticmethod
    def _key(client_id):
        return hashlib.sha256(client_id.encode()).hexdigest()

    def _make_token(self, username, client_id, mechanism, expired=False):
        secret = "secret-token:fast-" + secrets.token_urlsafe(24)
        info = {"mechanism": mechanism, "secret": secret,
                "expires_at": time.time() + (-60 if expired else 86400 * 21)}
        with self.lock:
            self.tokens[(username, self._key(client_id), "new")] = info
            self.issued.append(secret)
        return secret

    def _test_token(self, mechanism, username, client_id, token_hash, invalidate):
        """(True, responder HMAC) or (False, condition or None)."""
        with self.lock:
            for slot in ("new", "cur"):
                k = (username, self._key(client_id), slot)
                tok = self.tokens.get(k)
                if not tok or tok["mechanism"] != mechanism:
                    continue
                if not hmac.compare_digest(hmac256(tok["secret"], b"Initiator"), token_hash):
                    continue
                if tok["expires_at"] < time.time():
                    del self.tokens[k]
                    return False, "credentials-expired"
                if invalidate:
                    del self.tokens[k]
                elif slot == "new":
                    del self.tokens[k]
                    self.tokens[(username, self._key(client_id), "cur")] = tok
                return True, hmac256(tok["secret"], b"Responder")
        return False, None

    # ------------------------------------------------ the stream

    def features(self, fast):
        m = "<mechanism>PLAIN</mechanism>"
        inline = f"<bind xmlns='{NS_BIND2}'/><sm xmlns='{NS_SM3}'/>"
        if fast:
            zrtt = " tls-0rtt='true'" if self.zero_rtt else ""
            inline += (f"<fast xmlns='{NS_FAST}'{zrtt}>"
                       + "".join(f"<mechanism>{x}</mechanism>" for x in self.fast_mechs) + "</fast>")
        return (f"<stream:features><mechanisms xmlns='{NS_SASL}'>{m}</mechanisms>"
                f"<authentication xmlns='{NS_SASL2}'>{m}<inline>{inline}</inline></authentication>"
                "</stream:features>").encode()

    def _script(self, conn):
        conn.headers, conn.auths, conn.seen = [], [], []
        conn.fast_offered = False
        conn.h = 0  # stanzas received after login (XEP-0198 h)
        conn.after_end = lambda: after_stream_end(conn.since("tls"))
        conn.ended = threading.Event()
        r = Reader(conn)
        conn.headers.append(dict(r.header(), tls=False))
        conn.send(fakeserver.header("fast-1") + fakeserver.features_starttls(True))
        el = r.element()
        if el is ELEMENT_END or raw.local(el.tag) != "starttls":
            conn.note(f"want <starttls/>, got {el}")
            return
        conn.send(f"<proceed xmlns='{NS_TLS}'/>")
        conn.pending = b""
        conn.starttls()
        conn.mark("tls")
        r.restart()
        hdr = r.header()
        conn.headers.append(dict(hdr, tls=True))
        conn.fast_offered = node_of(hdr.get("from")) is not None
        conn.send(fakeserver.header("fast-2") + self.features(conn.fast_offered))
        conn.note(f"features sent, fast {conn.fast_offered}")
        while True:
            el = r.element()
            if el is ELEMENT_END:
                conn.ended.set()
                conn.note("the proxy's </stream:stream>")
                if self.hold_close:  # still reading: what follows the end is kept
                    deadline = time.monotonic() + 5
                    while not self.released.is_set() and not conn.eof and time.monotonic() < deadline:
                        conn._recv(min(deadline, time.monotonic() + 0.05))
                conn.send(b"</stream:stream>")
                conn.drain(timeout=0.5)
                return
            name = raw.local(el.tag)
            conn.seen.append(name)
            if name == "authenticate":
                conn.send(self._authenticate(conn, el))
            elif name == "message":
                conn.h += 1
                if el.get("id") == "bye" and self.close_with is not None:
                    conn.send(self.close_with)
                    if self.later_junk is not None:
                        conn.send(self.later_junk)
                    conn.note("closed the stream, with what follows it")
                    try:
                        end = r.element(timeout=5)
                    except (fakeserver.Closed, fakeserver.Timeout):
                        end = None
                    if end is ELEMENT_END:
                        conn.ended.set()
                    conn.drain(timeout=0.5)
                    return
                body = el.findtext("{jabber:client}body") or ""
                conn.send(f"<message xmlns='jabber:client' to='{conn.jid}' from='{conn.jid}' "
                          f"id='echo-{el.get('id', '')}'><body>{body}</body></message>")
            elif name == "r" and el.tag == f"{{{NS_SM3}}}r":
                conn.send(f"<a xmlns='{NS_SM3}' h='{conn.h}'/>")
            elif name in ("iq", "presence"):
                conn.h += 1
                if name == "iq" and el.get("type") in ("get", "set"):
                    conn.send(f"<iq type='result' id='{el.get('id', '')}'/>")

    def _failure(self, condition, text=None):
        t = f"<text>{text}</text>" if text else ""
        return f"<failure xmlns='{NS_SASL2}'><{condition} xmlns='{NS_SASL}'/>{t}</failure>"

    def _authenticate(self, conn, el):
        mech = el.get("mechanism", "")
        ir = el.find(f"{{{NS_SASL2}}}initial-response")
        try:
            payload = base64.b64decode((ir.text or "") if ir is not None else "", validate=True)
        except ValueError:
            return self._failure("incorrect-encoding")
        ua = el.find(f"{{{NS_SASL2}}}user-agent")
        client_id = ua.get("id") if ua is not None else None
        fast = el.find(f"{{{NS_FAST}}}fast")
        req = el.find(f"{{{NS_FAST}}}request-token")
        bind = el.find(f"{{{NS_BIND2}}}bind")
        conn.auths.append({"mechanism": mech, "payload": payload, "client_id": client_id,
                           "fast": dict(fast.attrib) if fast is not None else None,
                           "request_token": dict(req.attrib) if req is not None else None,
                           "bind": bind is not None})
        additional = None
        if fast is not None:
            if not conn.fast_offered or not client_id:
                return self._failure("malformed-request", "FAST is not available on this stream")
            if mech not in self.fast_mechs:
                return self._failure("invalid-mechanism")
            m = re.match(rb"^([^\0]+)\0(.+)$", payload, re.S)
            if not m:
                return self._failure("malformed-request")
            user = m.group(1).decode("utf-8", "replace")
            invalidate = fast.get("invalidate") in ("1", "true")
            ok, extra = self._test_token(mech, user, client_id, m.group(2), invalidate)
            if not ok:
                return self._failure(extra or "not-authorized")
            additional = extra
        elif mech == "PLAIN":
            parts = payload.split(b"\0")
            if len(parts) != 3:
                return self._failure("malformed-request")
            user, pw = parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
            if PASSWORDS.get(user) != pw:
                return self._failure("not-authorized", "wrong password")
        else:
            return self._failure("invalid-mechanism")
        tag = (bind.findtext(f"{{{NS_BIND2}}}tag") if bind is not None else None) or "xi"
        conn.jid = f"{user}@{DOMAIN}/{tag}.{conn.index}"
        out = f"<success xmlns='{NS_SASL2}'>"
        if additional is not None:
            out += f"<additional-data>{base64.b64encode(additional).decode()}</additional-data>"
        out += f"<authorization-identifier>{conn.jid if bind is not None else conn.jid.split('/')[0]}"
        out += "</authorization-identifier>"
        if bind is not None:
            enabled = ""
            if bind.find(f"{{{NS_SM3}}}enable") is not None:
                enabled = f"<enabled xmlns='{NS_SM3}' id='sm-{conn.index}' resume='true'/>"
            out += f"<bound xmlns='{NS_BIND2}'>{enabled}</bound>"
        if req is not None and client_id:
            secret = self._make_token(user, client_id, req.get("mechanism") or mech)
            conn.note("token issued")
            out += f"<token xmlns='{NS_FAST}' expiry='{EXPIRY}' token='{secret}'/>"
        out += "</success>"
        if bind is None:
            out += (f"<stream:features><bind xmlns='{raw.NS_BIND}'/><sm xmlns='{NS_SM3}'/>"
                    "</stream:features>")
        return out


def after_stream_end(data):
    """What came after the first </stream:stream> in data (b"" if none)."""
    i = data.find(b"</stream:stream>")
    return data[i + len(b"</stream:stream>"):] if i >= 0 else b""


def with_server(fn):
    """Gives the case its FastServer through ctx.fast(...); stops them and
    adds what they saw to the diagnostics, however the case ends."""
    def wrapper(ctx):
        started = []

        def fast(**kw):
            srv = FastServer(**kw)
            started.append(srv)
            return srv
        ctx.fast = fast
        try:
            fn(ctx)
        finally:
            for srv in started:
                ctx.note(srv.describe())
                srv.stop()
    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    return wrapper


# ================================================================ the raw client


def client_header(to=DOMAIN, frm=None):
    f = f" from='{frm}'" if frm is not None else ""
    return ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='{NS_STREAM}' to='{to}'{f} version='1.0' xml:lang='en'>")


def connect(ctx, px, frm=ALICE, direct=False):
    """A client on the STARTTLS port (STARTTLS, then a header with from) or
    the Direct TLS port (the first header with from). Returns (client,
    post-TLS features)."""
    if direct:
        c = ctx.raw(px.tls_port, direct_tls=True)
    else:
        c = ctx.raw(px.port)
        c.open_stream()
        c.starttls()
    c._reset_parser()
    c.send(client_header(frm=frm))
    return c, c.expect("features")


def fast_of(features):
    """The <fast> offered inside SASL2's <inline>, or None."""
    return features.find(f"{{{NS_SASL2}}}authentication/{{{NS_SASL2}}}inline/{{{NS_FAST}}}fast")


def fast_mechs(features):
    f = fast_of(features)
    return [m.text for m in f.findall(f"{{{NS_FAST}}}mechanism")] if f is not None else []


def password_auth(user="alice", password=None, request=NONE, bind=True, sm=False, ua=UA):
    """<authenticate mechanism='PLAIN'> with a user agent, Bind2 and a
    token request."""
    pw = PASSWORDS[user] if password is None else password
    out = (f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'>"
           f"<initial-response>{raw.plain_payload(user, pw)}</initial-response>{ua}")
    if bind:
        out += f"<bind xmlns='{NS_BIND2}'><tag>xi-fast</tag>"
        out += f"<enable xmlns='{NS_SM3}'/>" if sm else ""
        out += "</bind>"
    if request:
        out += f"<request-token xmlns='{NS_FAST}' mechanism='{request}'/>"
    return out + "</authenticate>"


def ht_payload(user, token):
    """username NUL HMAC-SHA-256(token, "Initiator"), base64."""
    return base64.b64encode(user.encode() + b"\0" + hmac256(token, b"Initiator")).decode()


def token_auth(user, token, count=1, invalidate=False, mech=NONE, payload=None, ua=UA, bind=True):
    """A token login; payload (base64) overrides the one made from token."""
    p = ht_payload(user, token) if payload is None else payload
    inv = " invalidate='true'" if invalidate else ""
    out = (f"<authenticate xmlns='{NS_SASL2}' mechanism='{mech}'>"
           f"<initial-response>{p}</initial-response>{ua}")
    if bind:
        out += f"<bind xmlns='{NS_BIND2}'><tag>xi-fast</tag></bind>"
    return out + f"<fast xmlns='{NS_FAST}' count='{count}'{inv}/></authenticate>"


def token_of(success):
    t = success.find(f"{{{NS_FAST}}}token")
    return (t.get("token"), t.get("expiry")) if t is not None else (None, None)


def is_sasl2(el, name):
    return el is not None and el.tag == f"{{{NS_SASL2}}}{name}"


def close_client(c):
    """</stream:stream> and wait for the proxy to close."""
    try:
        c.send("</stream:stream>")
    except OSError:
        pass
    c.wait_closed(5)
    c.close()


def secret_forms(token):
    """A token in the forms a log could betray it: as it is, base64, hex,
    the HMACs of both sides (binary, base64, hex) and the client's HT
    payloads."""
    forms = {token.encode(), base64.b64encode(token.encode()), token.encode().hex().encode()}
    for label in (b"Initiator", b"Responder"):
        h = hmac256(token, label)
        forms |= {h, base64.b64encode(h), h.hex().encode(), h.hex().upper().encode()}
    for user in ("alice", "mallory"):
        forms.add(ht_payload(user, token).encode())
    return forms


def check_no_secrets(ctx, px, tokens):
    """No token (nor its HMACs or payloads) in any file the proxy wrote;
    stops the proxy first, so everything is flushed."""
    px.stop()
    files = px.written_files()
    ctx.check(files, "the proxy wrote no files (nothing to search)")
    bad = []
    for f in files:
        data = f.read_bytes()
        for tok in tokens:
            for form in secret_forms(tok):
                if form in data:
                    bad.append(f"{f.name} has {form[:16]!r}...")
                    break
    ctx.check(not bad, "FAST secret in the proxy's files: " + "; ".join(sorted(set(bad))))


def fast_features_event(ctx, s):
    """The pre-login features event that reports what was inline."""
    evs = [e for e in s.all("features") if not e.get("authenticated") and "inline" in e]
    ctx.check(evs, f"no features event with an inline field: {s.all('features')}")
    return evs[-1] if evs else {}


def upstream_header_ok(ctx, conn, frm):
    """The server's post-TLS stream header from the proxy carried the
    client's from (or none when frm is None) and to."""
    hdrs = [h for h in conn.headers if h.get("tls")] if conn is not None else []
    if not ctx.check(hdrs, f"the server got no post-TLS stream header: {conn and conn.headers}"):
        return
    ctx.check(hdrs[0].get("from") == frm,
              f"the proxy's post-TLS header toward the server has from={hdrs[0].get('from')!r}, want {frm!r}")
    ctx.check(hdrs[0].get("to") == DOMAIN, f"... and to={hdrs[0].get('to')!r}, want {DOMAIN!r}")


def login_with_password(ctx, px, srv, index=0, frm=ALICE, direct=False, sm=False, fast=True):
    """A password login that asks for a token (fast: FAST must have been
    offered); returns (client, success, server connection)."""
    c, f = connect(ctx, px, frm=frm, direct=direct)
    if fast:
        ctx.require(fast_of(f) is not None, f"no FAST offered to the client: {c.describe(f)}")
    c.send(password_auth(sm=sm, request=NONE if fast else None))
    ok = c.next_element()
    ctx.require(is_sasl2(ok, "success"), f"password login: want SASL2 <success>, got {c.describe(ok)}")
    return c, ok, srv.conn(index)


def refused_by_proxy(ctx, s, conn, rule, condition=None, what=""):
    """A SASL2 attempt the proxy refused: the policy event, auth_result
    by proxy, and the server never saw an <authenticate>."""
    pol = [p for p in s.all("policy", rule=rule) if p.get("action") == "reject"]
    ctx.check(pol, f"{what}: no policy event rule={rule} action=reject (have {s.all('policy')})")
    ar = s.expect(ctx, "auth_result", outcome="failure", by="proxy")
    if ar and condition:
        ctx.check(ar.get("condition") == condition,
                  f"{what}: auth_result condition {ar.get('condition')!r}, want {condition!r}")
    if conn is not None:
        ctx.check("authenticate" not in conn.seen and not conn.auths,
                  f"{what}: the server saw the refused attempt: {conn.auths}")


# ================================================================ offer


@case("fast_offer_starttls", prosody=None)
@with_server
def fast_offer_starttls(ctx):
    """STARTTLS client with from='alice@lab.test' after TLS: the proxy's
    post-TLS header toward the server carries that from and the same to;
    the server offers FAST; the client sees <fast> with HT-SHA-256-NONE
    only (-EXPR is channel-bound: stripped, logged), Bind2 and sm kept
    inline; the features event lists inline, fast_mechanisms and
    fast_offered."""
    srv = ctx.fast()
    px = ctx.proxy(upstream_port=srv.port)
    c, f = connect(ctx, px)
    conn = srv.conn(0)
    upstream_header_ok(ctx, conn, ALICE)
    ctx.check(conn is not None and conn.fast_offered, "the server did not offer FAST (no from with a localpart)")
    ctx.check(fast_mechs(f) == [NONE], f"FAST mechanisms offered to the client {fast_mechs(f)}, want [{NONE!r}]")
    inline = f.find(f"{{{NS_SASL2}}}authentication/{{{NS_SASL2}}}inline")
    ctx.check(inline is not None and inline.find(f"{{{NS_BIND2}}}bind") is not None
              and inline.find(f"{{{NS_SM3}}}sm") is not None,
              f"Bind2 or sm lost from <inline>: {c.describe(f)}")
    close_client(c)
    s = ctx.session(px)
    fe = fast_features_event(ctx, s)
    ctx.check(set(fe.get("inline") or []) == {"bind2", "sm", "fast"},
              f"features inline {fe.get('inline')!r}, want bind2, sm, fast")
    ctx.check(fe.get("fast_mechanisms") == [NONE, EXPR],
              f"features fast_mechanisms {fe.get('fast_mechanisms')!r}, want {[NONE, EXPR]}")
    ctx.check(fe.get("fast_offered") == [NONE], f"features fast_offered {fe.get('fast_offered')!r}, want [{NONE!r}]")
    cb = [p for p in s.all("policy", rule="channel_binding", action="strip") if EXPR in str(p.get("detail"))]
    ctx.check(cb, f"no policy channel_binding/strip naming {EXPR}: {s.all('policy')}")
    st = s.all("stream", dir="c2s")
    ctx.check(any(e.get("from") == ALICE for e in st), f"no c2s stream event with from={ALICE!r}: {st}")


@case("fast_offer_direct_tls", prosody=None)
@with_server
def fast_offer_direct_tls(ctx):
    """Direct TLS client, its first header with from: the same from reaches
    the server, FAST is offered, a password login with a token request
    works and the token reaches the client."""
    srv = ctx.fast()
    px = ctx.proxy(upstream_port=srv.port)
    c, ok, conn = login_with_password(ctx, px, srv, direct=True)
    upstream_header_ok(ctx, conn, ALICE)
    token, expiry = token_of(ok)
    ctx.check(token in srv.issued, f"the client got token {token!r}, not the one the server issued")
    close_client(c)
    s = ctx.session(px)
    s.expect(ctx, "connect", port_kind="direct_tls")
    fe = fast_features_event(ctx, s)
    ctx.check("fast" in (fe.get("inline") or []), f"features inline {fe.get('inline')!r} has no fast")
    s.expect(ctx, "login", outcome="success", fast="issued")
    check_no_secrets(ctx, px, srv.issued)


@case("fast_not_offered_without_from", prosody=None)
@with_server
def fast_not_offered_without_from(ctx):
    """A client whose post-TLS header has no from: the proxy's header has
    none either, the server offers no FAST, neither does the proxy (no
    "fast" inline in the features event), and a token login anyway is
    refused by the proxy (not offered) before the server sees it."""
    srv = ctx.fast()
    token = srv.seed("alice")
    px = ctx.proxy(upstream_port=srv.port)
    c, f = connect(ctx, px, frm=None)
    conn = srv.conn(0)
    upstream_header_ok(ctx, conn, None)
    ctx.check(conn is not None and not conn.fast_offered, "the server offered FAST to a stream without from")
    ctx.check(fast_of(f) is None, f"FAST offered to the client: {c.describe(f)}")
    c.send(token_auth("alice", token))
    el = c.next_element()
    ctx.check(is_sasl2(el, "failure"), f"token login without a FAST offer: want <failure>, got {c.describe(el)}")
    close_client(c)
    s = ctx.session(px)
    fe = fast_features_event(ctx, s)
    ctx.check("fast" not in (fe.get("inline") or []), f"features inline {fe.get('inline')!r} has fast")
    ctx.check(not fe.get("fast_mechanisms") and not fe.get("fast_offered"),
              f"features event with FAST mechanisms although none was offered: {fe}")
    refused_by_proxy(ctx, s, conn, "not_offered", what="token login, FAST never offered")
    check_no_secrets(ctx, px, [token])


@case("fast_offer_channel_binding_stripped", prosody=None)
@with_server
def fast_offer_channel_binding_stripped(ctx):
    """The server offers HT-SHA-256-NONE/-UNIQ/-EXPR/-ENDP with
    tls-0rtt='true': the client gets NONE alone and no tls-0rtt; each
    channel-bound one has its strip event; a client that tries -EXPR
    anyway is refused with rule not_offered, and the server never sees it."""
    srv = ctx.fast(fast_mechs=(NONE, UNIQ, EXPR, ENDP), zero_rtt=True)
    token = srv.seed("alice", mechanism=EXPR)
    px = ctx.proxy(upstream_port=srv.port)
    c, f = connect(ctx, px)
    ctx.check(fast_mechs(f) == [NONE], f"FAST mechanisms offered {fast_mechs(f)}, want [{NONE!r}]")
    fe_el = fast_of(f)
    ctx.check(fe_el is not None and "tls-0rtt" not in fe_el.attrib,
              f"<fast> reached the client with {fe_el.attrib if fe_el is not None else None}")
    c.send(token_auth("alice", token, mech=EXPR))
    el = c.next_element()
    ctx.check(is_sasl2(el, "failure"), f"HT-SHA-256-EXPR: want SASL2 <failure>, got {c.describe(el)}")
    close_client(c)
    s = ctx.session(px)
    fe = fast_features_event(ctx, s)
    ctx.check(fe.get("fast_mechanisms") == [NONE, UNIQ, EXPR, ENDP],
              f"features fast_mechanisms {fe.get('fast_mechanisms')!r}")
    ctx.check(fe.get("fast_offered") == [NONE], f"features fast_offered {fe.get('fast_offered')!r}")
    strips = s.all("policy", rule="channel_binding", action="strip")
    for m in (UNIQ, EXPR, ENDP):
        ctx.check(any(m in str(p.get("detail")) for p in strips), f"no channel_binding strip naming {m}: {strips}")
    ctx.check(not any(NONE in str(p.get("detail")) for p in strips), f"{NONE} logged as stripped: {strips}")
    refused_by_proxy(ctx, s, srv.conn(0), "not_offered", what="HT-SHA-256-EXPR")
    a = s.first("auth", mechanism=EXPR)
    ctx.check(a is not None, f"no auth event for the refused HT-SHA-256-EXPR attempt: {s.all('auth')}")
    check_no_secrets(ctx, px, [token])


@case("fast_mechanisms_deny", prosody=None)
@with_server
def fast_mechanisms_deny(ctx):
    """mechanisms_deny = HT-SHA-256-NONE: the client is offered no FAST
    mechanism (strip, rule mechanisms_deny); a token login with it is
    refused by the proxy (invalid-mechanism), the server never sees it;
    PLAIN still works on the same stream."""
    srv = ctx.fast()
    token = srv.seed("alice")
    px = ctx.proxy(upstream_port=srv.port, mechanisms_deny=NONE)
    c, f = connect(ctx, px)
    ctx.check(NONE not in fast_mechs(f), f"{NONE} offered to the client: {fast_mechs(f)}")
    c.send(token_auth("alice", token))
    el = c.next_element()
    ctx.check(is_sasl2(el, "failure") and raw.sasl_condition(el) == "invalid-mechanism",
              f"denied token login: want <failure> invalid-mechanism, got {c.describe(el)}")
    conn = srv.conn(0)
    ctx.check(not conn.auths, f"the server saw the denied token login: {conn.auths}")
    c.send(password_auth(request=None))
    ok = c.next_element()
    ctx.check(is_sasl2(ok, "success"), f"PLAIN after the refusal: {c.describe(ok)}")
    close_client(c)
    s = ctx.session(px)
    strips = s.all("policy", rule="mechanisms_deny", action="strip")
    ctx.check(any(NONE in str(p.get("detail")) for p in strips), f"no mechanisms_deny strip naming {NONE}: {strips}")
    fe = fast_features_event(ctx, s)
    ctx.check(NONE in (fe.get("fast_mechanisms") or []) and NONE not in (fe.get("fast_offered") or []),
              f"features fast_mechanisms {fe.get('fast_mechanisms')!r} / fast_offered {fe.get('fast_offered')!r}")
    pol = [p for p in s.all("policy", rule="mechanisms_deny") if p.get("action") == "reject"]
    ctx.check(pol, f"no mechanisms_deny reject for the token login: {s.all('policy')}")
    s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="invalid-mechanism")
    check_no_secrets(ctx, px, [token])


@case("fast_mechanisms_allow", prosody=None)
@with_server
def fast_mechanisms_allow(ctx):
    """mechanisms_allow = PLAIN: HT-SHA-256-NONE is not offered (strip, rule
    mechanisms_allow) and a token login is refused by the proxy;
    mechanisms_allow = PLAIN HT-SHA-256-NONE: it is offered and the token
    login works."""
    srv = ctx.fast()
    token = srv.seed("alice")
    px = ctx.proxy(upstream_port=srv.port, mechanisms_allow="PLAIN")
    c, f = connect(ctx, px)
    ctx.check(NONE not in fast_mechs(f), f"{NONE} offered under mechanisms_allow = PLAIN: {fast_mechs(f)}")
    c.send(token_auth("alice", token))
    el = c.next_element()
    ctx.check(is_sasl2(el, "failure"), f"token login not allowed: want <failure>, got {c.describe(el)}")
    close_client(c)
    s = ctx.session(px)
    strips = s.all("policy", rule="mechanisms_allow", action="strip")
    ctx.check(any(NONE in str(p.get("detail")) for p in strips), f"no mechanisms_allow strip naming {NONE}: {strips}")
    refused_by_proxy(ctx, s, srv.conn(0), "mechanisms_allow", what="token login under mechanisms_allow = PLAIN")

    px2 = ctx.proxy(upstream_port=srv.port, mechanisms_allow=f"PLAIN {NONE}")
    c, f = connect(ctx, px2)
    ctx.check(fast_mechs(f) == [NONE], f"under mechanisms_allow = PLAIN {NONE}: offered {fast_mechs(f)}")
    c.send(token_auth("alice", token))
    ok = c.next_element()
    ctx.check(is_sasl2(ok, "success"), f"allowed token login: {c.describe(ok)}")
    close_client(c)
    s2 = ctx.session(px2)
    s2.expect(ctx, "login", outcome="success", fast="used")
    check_no_secrets(ctx, px, [token])
    check_no_secrets(ctx, px2, [token])


# ================================================================ logins


@case("fast_token_issue_and_use", prosody=None)
@with_server
def fast_token_issue_and_use(ctx):
    """A password login with <request-token/> gets the server's token
    unchanged (auth: inline, fast_request; auth_result: token_expiry;
    login: fast issued, fast_expiry); the token then logs in over
    HT-SHA-256-NONE with count 1 (auth: authcid, fast_count,
    fast_invalidate false; the server's additional-data relayed; login:
    fast used). Neither the token nor an HMAC nor the payload is in any
    file the proxy wrote."""
    srv = ctx.fast()
    px = ctx.proxy(upstream_port=srv.port)
    c, ok, conn = login_with_password(ctx, px, srv)
    token, expiry = token_of(ok)
    ctx.require(token is not None, f"no <token> in the <success> the client got: {c.describe(ok)}")
    ctx.check(token in srv.issued, f"the client got token {token!r}, not the one the server issued {srv.issued}")
    ctx.check(expiry == EXPIRY, f"token expiry {expiry!r}, want {EXPIRY!r}")
    ctx.check(ok.find(f"{{{NS_BIND2}}}bound") is not None, f"<bound/> lost from <success>: {c.describe(ok)}")
    ctx.check(conn.auths and conn.auths[0]["request_token"] == {"mechanism": NONE},
              f"the server got request-token {conn.auths and conn.auths[0]['request_token']}")
    close_client(c)

    c, f = connect(ctx, px)
    c.send(token_auth("alice", token, count=1))
    ok2 = c.next_element()
    ctx.require(is_sasl2(ok2, "success"), f"token login: want <success>, got {c.describe(ok2)}")
    ad = ok2.findtext(f"{{{NS_SASL2}}}additional-data")
    ctx.check(ad == base64.b64encode(hmac256(token, b"Responder")).decode(),
              f"additional-data {ad!r} is not HMAC(token, 'Responder')")
    ident = ok2.findtext(f"{{{NS_SASL2}}}authorization-identifier") or ""
    ctx.check(ident.startswith(ALICE + "/"), f"authorization-identifier {ident!r}")
    conn2 = srv.conn(1)
    ctx.check(conn2.auths and conn2.auths[0]["fast"] == {"count": "1"},
              f"the server got <fast> {conn2.auths and conn2.auths[0]['fast']}")
    c.send(f"<message xmlns='jabber:client' to='{ident}' id='m1'><body>ping</body></message>")
    echo = c.next_element()
    ctx.check(echo is not None and echo.findtext("{jabber:client}body") == "ping", f"echo {c.describe(echo)}")
    close_client(c)

    s = ctx.session(px, 0)
    a = s.expect(ctx, "auth", mechanism="PLAIN", sasl2=True)
    if a:
        ctx.check(set(a.get("inline") or []) == {"bind2", "fast"}, f"auth inline {a.get('inline')!r}, want bind2, fast")
        ctx.check(a.get("fast_request") == NONE, f"auth fast_request {a.get('fast_request')!r}")
        ctx.check(a.get("user_agent_id") == UA_ID, f"auth user_agent_id {a.get('user_agent_id')!r}")
    ar = s.expect(ctx, "auth_result", outcome="success", by="upstream")
    if ar:
        ctx.check(ar.get("token_expiry") == EXPIRY, f"auth_result token_expiry {ar.get('token_expiry')!r}")
    lg = s.expect(ctx, "login", outcome="success")
    if lg:
        ctx.check(lg.get("fast") == "issued", f"login fast {lg.get('fast')!r}, want issued")
        ctx.check(lg.get("fast_expiry") == EXPIRY, f"login fast_expiry {lg.get('fast_expiry')!r}")

    s = ctx.session(px, 1)
    a = s.expect(ctx, "auth", mechanism=NONE, sasl2=True)
    if a:
        ctx.check(a.get("authcid") == "alice", f"token auth authcid {a.get('authcid')!r}")
        ctx.check(a.get("fast_count") == 1, f"token auth fast_count {a.get('fast_count')!r}, want 1")
        ctx.check(a.get("fast_invalidate") is False, f"token auth fast_invalidate {a.get('fast_invalidate')!r}")
        ctx.check("fast" in (a.get("inline") or []), f"token auth inline {a.get('inline')!r}")
    s.expect(ctx, "auth_result", outcome="success", by="upstream", mechanism=NONE)
    s.expect(ctx, "bind", jid=ident)
    lg = s.expect(ctx, "login", outcome="success", mechanism=NONE)
    if lg:
        ctx.check(lg.get("fast") == "used", f"token login fast {lg.get('fast')!r}, want used")
        ctx.check(lg.get("user") in ("alice", ALICE), f"token login user {lg.get('user')!r}")
    check_no_secrets(ctx, px, srv.issued)


@case("fast_token_wrong_or_expired", prosody=None)
@with_server
def fast_token_wrong_or_expired(ctx):
    """A token login with a wrong HMAC gets the server's not-authorized
    relayed, one with an expired token its credentials-expired (both
    auth_result by upstream); neither the real token nor the wrong one is
    logged."""
    srv = ctx.fast()
    token = srv.seed("alice")
    wrong = token + "x"
    px = ctx.proxy(upstream_port=srv.port)
    c, _ = connect(ctx, px)
    c.send(token_auth("alice", wrong, count=4))
    el = c.next_element()
    ctx.check(is_sasl2(el, "failure") and raw.sasl_condition(el) == "not-authorized",
              f"wrong HMAC: want <failure> not-authorized, got {c.describe(el)}")
    conn = srv.conn(0)
    ctx.check(len(conn.auths) == 1 and conn.auths[0]["mechanism"] == NONE,
              f"the server did not get the token login: {conn.auths}")
    close_client(c)
    s = ctx.session(px, 0)
    s.expect(ctx, "auth", mechanism=NONE, authcid="alice")
    s.expect(ctx, "auth_result", outcome="failure", by="upstream", condition="not-authorized")
    s.expect(ctx, "login", outcome="failure")

    old = srv.seed("bob", expired=True)
    c, _ = connect(ctx, px, frm=f"bob@{DOMAIN}")
    c.send(token_auth("bob", old, count=9))
    el = c.next_element()
    ctx.check(is_sasl2(el, "failure") and raw.sasl_condition(el) == "credentials-expired",
              f"expired token: want <failure> credentials-expired, got {c.describe(el)}")
    close_client(c)
    s = ctx.session(px, 1)
    s.expect(ctx, "auth_result", outcome="failure", by="upstream", condition="credentials-expired")
    check_no_secrets(ctx, px, [token, wrong, old])


@case("fast_token_invalidate", prosody=None)
@with_server
def fast_token_invalidate(ctx):
    """<fast count='2' invalidate='true'/>: passed on as it is, the login
    succeeds, auth says fast_invalidate true; the token is then gone at
    the server, and the next login with it gets the server's failure."""
    srv = ctx.fast()
    token = srv.seed("alice")
    px = ctx.proxy(upstream_port=srv.port)
    c, _ = connect(ctx, px)
    c.send(token_auth("alice", token, count=2, invalidate=True))
    ok = c.next_element()
    ctx.check(is_sasl2(ok, "success"), f"invalidating token login: {c.describe(ok)}")
    conn = srv.conn(0)
    ctx.check(conn.auths and conn.auths[0]["fast"] == {"count": "2", "invalidate": "true"},
              f"the server got <fast> {conn.auths and conn.auths[0]['fast']}")
    close_client(c)
    c, _ = connect(ctx, px)
    c.send(token_auth("alice", token, count=3))
    el = c.next_element()
    ctx.check(is_sasl2(el, "failure"), f"the invalidated token still logs in: {c.describe(el)}")
    close_client(c)
    s = ctx.session(px, 0)
    a = s.expect(ctx, "auth", mechanism=NONE)
    if a:
        ctx.check(a.get("fast_invalidate") is True, f"auth fast_invalidate {a.get('fast_invalidate')!r}")
        ctx.check(a.get("fast_count") == 2, f"auth fast_count {a.get('fast_count')!r}")
    s.expect(ctx, "login", outcome="success", fast="used")
    s = ctx.session(px, 1)
    s.expect(ctx, "auth_result", outcome="failure", by="upstream", condition="not-authorized")
    check_no_secrets(ctx, px, [token])


# ================================================================ identity rules


@case("fast_users_deny_token", prosody=None)
@with_server
def fast_users_deny_token(ctx):
    """users_deny = mallory: a valid token login naming mallory is refused
    by the proxy (not-authorized) and never reaches the server, on a
    stream from alice (the decoy: the server looks tokens up by the
    payload's name) and on one from mallory (refused there or at the
    stream); HT payloads with no NUL, or an empty username, are refused
    (malformed-request: identity rules fail closed), and so are mallory
    spelled fullwidth or as a JID; alice's token login still works."""
    srv = ctx.fast()
    mtok = srv.seed("mallory")
    atok = srv.seed("alice")
    px = ctx.proxy(upstream_port=srv.port, users_deny="mallory")
    n = 0

    c, f = connect(ctx, px, frm=ALICE)
    ctx.check(fast_of(f) is not None, f"no FAST offered to alice's stream: {c.describe(f)}")
    c.send(token_auth("mallory", mtok))
    el = c.next_element()
    ctx.check(is_sasl2(el, "failure") and raw.sasl_condition(el) == "not-authorized",
              f"mallory's token login: want <failure> not-authorized, got {c.describe(el)}")
    ctx.check(b"<success" not in c.received, "a <success> reached mallory")
    close_client(c)
    refused_by_proxy(ctx, ctx.session(px, n), srv.conn(n), "users_deny", "not-authorized",
                     "mallory's token login (stream from alice)")
    n += 1

    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    c._reset_parser()
    c.send(client_header(frm=MALLORY))
    f = c.next_element()
    if f is not None and raw.local(f.tag) == "features":
        c.send(token_auth("mallory", mtok))
        c.next_element()
    ctx.check(b"<success" not in c.received, f"a <success> reached mallory: {c.received[-300:]!r}")
    close_client(c)
    conn = srv.conn(n)
    ctx.check(conn is None or not conn.auths, f"the server saw mallory's token login: {conn and conn.auths}")
    s = ctx.session(px, n)
    ctx.check(s.all("policy", rule="users_deny"), f"stream from mallory: no users_deny event: {s.all('policy')}")
    ctx.check(not s.all("auth_result", outcome="success"), f"mallory logged in: {s.all('auth_result')}")
    n += 1

    # Spellings of mallory the proxy folds (fullwidth) or reads as a JID:
    # refused like mallory (the server would look the token up by the
    # name as written, but the rule is on who it names).
    for what, name in (("fullwidth", "\uff4d\uff41\uff4c\uff4c\uff4f\uff52\uff59"), ("as a JID", MALLORY)):
        c, _ = connect(ctx, px)
        c.send(token_auth(name, mtok))
        el = c.next_element()
        ctx.check(is_sasl2(el, "failure"), f"token login as mallory {what}: want <failure>, got {c.describe(el)}")
        close_client(c)
        refused_by_proxy(ctx, ctx.session(px, n), srv.conn(n), "users_deny", what=f"mallory {what}")
        n += 1

    h = hmac256(atok, b"Initiator").replace(b"\0", b"\1")
    for what, payload in (("no NUL", b"alice" + h), ("empty username", b"\0" + h)):
        c, _ = connect(ctx, px)
        c.send(token_auth("alice", atok, payload=base64.b64encode(payload).decode()))
        el = c.next_element()
        ctx.check(is_sasl2(el, "failure") and raw.sasl_condition(el) == "malformed-request",
                  f"HT payload with {what}: want <failure> malformed-request, got {c.describe(el)}")
        close_client(c)
        s = ctx.session(px, n)
        ctx.check(s.all("policy", rule="users_deny"), f"{what}: no users_deny policy event: {s.all('policy')}")
        ar = s.expect(ctx, "auth_result", outcome="failure", by="proxy")
        if ar:
            ctx.check(ar.get("condition") == "malformed-request", f"{what}: condition {ar.get('condition')!r}")
        conn = srv.conn(n)
        ctx.check(conn is not None and not conn.auths, f"{what}: the server saw it: {conn and conn.auths}")
        n += 1

    c, _ = connect(ctx, px)
    c.send(token_auth("alice", atok))
    ok = c.next_element()
    ctx.check(is_sasl2(ok, "success"), f"alice's token login under users_deny = mallory: {c.describe(ok)}")
    close_client(c)
    ctx.session(px, n).expect(ctx, "login", outcome="success", fast="used")
    check_no_secrets(ctx, px, [mtok, atok])


@case("fast_from_escaped", prosody=None)
@with_server
def fast_from_escaped(ctx):
    """A client from that needs escaping (x&apos; evil=&apos;1@lab.test,
    parsed x' evil='1@lab.test): the header the proxy writes toward the
    server, if it writes one, is well-formed, has no attribute the client
    smuggled in, and its from is the value the client meant or none."""
    srv = ctx.fast()
    px = ctx.proxy(upstream_port=srv.port)
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    c._reset_parser()
    c.send(client_header(frm="x&apos; evil=&apos;1&amp;@lab.test"))
    c.next_element()
    conn = srv.conn(0)
    harness.wait_until(lambda: len(conn.headers) >= 2 or conn.done.is_set(), 5)
    hdrs = [h for h in conn.headers if h.get("tls")]
    if hdrs:
        ctx.check("evil" not in hdrs[0], f"an attribute smuggled into the proxy's header: {hdrs[0]}")
        ctx.check(hdrs[0].get("from") in (None, "x' evil='1&@lab.test"),
                  f"the proxy's header has from={hdrs[0].get('from')!r}")
    ctx.check(conn.error is None or not isinstance(conn.error, ET.ParseError),
              f"the proxy's header toward the server is not well-formed: {conn.error}")
    close_client(c)
    ctx.session(px)


# ================================================================ stream ends


def logged_in(ctx, px, srv, sm=True):
    """A password login with SM enabled inline and one message echoed
    (the relay is running); returns (client, server connection, jid)."""
    c, ok, conn = login_with_password(ctx, px, srv, sm=sm, fast=False)
    jid = ok.findtext(f"{{{NS_SASL2}}}authorization-identifier")
    c.send(f"<message xmlns='jabber:client' to='{jid}' id='m1'><body>one</body></message>")
    echo = c.next_element()
    ctx.require(echo is not None and raw.local(echo.tag) == "message", f"no echo after login: {c.describe(echo)}")
    return c, conn, jid


@case("fast_close_then_ack", prosody=None)
@with_server
def fast_close_then_ack(ctx):
    """After login the client sends </stream:stream> and, in the same write
    and in a later one, <a xmlns='urn:xmpp:sm:3' h='3'/> (xmpp.js does):
    no stream error either way, the server gets the end and not the <a/>,
    the client gets the server's </stream:stream>, and the close event
    counts the trailing bytes."""
    srv = ctx.fast(hold_close=True)
    px = ctx.proxy(upstream_port=srv.port)
    c, conn, _ = logged_in(ctx, px, srv)
    mark = len(c.received)
    tail = f"<a xmlns='{NS_SM3}' h='3'/>"
    c.send("</stream:stream>" + tail)
    ctx.check(harness.wait_until(conn.ended.is_set, 5), "the server never got the client's </stream:stream>")
    try:
        c.send(tail)
    except OSError:
        pass
    srv.release()
    ctx.check(c.wait_closed(5), "the proxy did not close the client's connection")
    got = c.received[mark:]
    ctx.check(b"stream:error" not in got and b"not-well-formed" not in got,
              f"the client got a stream error after its close: {got[:300]!r}")
    ctx.check(c.stream_closed, f"the client did not get </stream:stream>: {got[:300]!r}")
    conn.done.wait(5)
    after = conn.after_end()
    ctx.check(b"<a" not in after, f"bytes after the client's stream end reached the server: {after[:200]!r}")
    ctx.check(b"stream:error" not in conn.since("tls"),
              f"the proxy sent the server a stream error: {conn.since('tls')[-300:]!r}")
    s = ctx.session(px)
    ctx.check(not s.all("stream_error"), f"stream_error events: {s.all('stream_error')}")
    a = s.expect(ctx, "auth", mechanism="PLAIN")
    if a:  # <enable xmlns='urn:xmpp:sm:3'/> inside the Bind2 request is sm asked inline
        ctx.check(set(a.get("inline") or []) == {"bind2", "sm"}, f"auth inline {a.get('inline')!r}, want bind2, sm")
    close = s.expect(ctx, "close")
    if close:
        tb = close.get("trailing_bytes")
        ctx.check(isinstance(tb, int) and tb >= len(tail),
                  f"close trailing_bytes {tb!r}, want >= {len(tail)} (the same-write tail)")
    s.expect(ctx, "login", outcome="success")


@case("fast_server_close_then_junk", prosody=None)
@with_server
def fast_server_close_then_junk(ctx):
    """The mirror: the server sends </stream:stream> followed by an <a/>
    in the same write, and another in a later one: the client gets the
    end and not what follows, nobody gets a stream error, the close event
    counts trailing bytes."""
    junk = f"<a xmlns='{NS_SM3}' h='1'/>".encode()
    srv = ctx.fast(close_with=b"</stream:stream>" + junk, later_junk=junk)
    px = ctx.proxy(upstream_port=srv.port)
    c, conn, jid = logged_in(ctx, px, srv)
    mark = len(c.received)
    c.send(f"<message xmlns='jabber:client' to='{jid}' id='bye'><body>bye</body></message>")
    el = c.next_element()
    ctx.check(el is None and c.stream_closed, f"the client did not get the server's </stream:stream>: {c.describe(el)}")
    got = c.received[mark:]
    ctx.check(b"stream:error" not in got, f"the client got a stream error: {got[:300]!r}")
    ctx.check(b"h='1'" not in after_stream_end(got) and b'h="1"' not in after_stream_end(got),
              f"bytes after the server's stream end reached the client: {after_stream_end(got)[:200]!r}")
    close_client(c)
    conn.done.wait(5)
    ctx.check(b"stream:error" not in conn.since("tls"),
              f"the proxy sent the server a stream error: {conn.since('tls')[-300:]!r}")
    s = ctx.session(px)
    ctx.check(not s.all("stream_error"), f"stream_error events: {s.all('stream_error')}")
    close = s.expect(ctx, "close")
    if close:
        tb = close.get("trailing_bytes")
        ctx.check(isinstance(tb, int) and tb >= len(junk),
                  f"close trailing_bytes {tb!r}, want >= {len(junk)} (the server's same-write tail)")
