"""SASL2 (XEP-0388) and Bind2 (XEP-0386) through the proxy.

No server packaged in Debian 12 speaks SASL2 (prosody-modules' mod_sasl2
needs Prosody 0.12.4+), so these cases put a small scripted upstream on
loopback: it offers SASL2 next to SASL1, checks a PLAIN password, answers
<success> with an authorization identifier and an inline Bind2 result, and
then echoes stanzas back. What is under test is the proxy: the rewritten
<authentication> feature, the relayed exchange, the events, and relaying
with no stream restart (including bytes that arrive in the same read as
<success>).
"""

import base64
import socket
import threading
import time
import xml.etree.ElementTree as ET

import harness
import raw
from cases import case, USERS, DOMAIN

NS_SASL2 = "urn:xmpp:sasl:2"
NS_BIND2 = "urn:xmpp:bind:0"
SASL2_USER = "alice"
SASL2_PASSWORD = USERS["alice"]
JID = f"{SASL2_USER}@{DOMAIN}/AwesomeXMPP.x1"
USER_AGENT = ("<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'>"
              "<software>AwesomeXMPP</software><device>Kiva's Phone</device></user-agent>")


class Sasl2Server:
    """A one-connection-at-a-time scripted XMPP server speaking SASL2."""

    def __init__(self, split=False):
        self.split = split  # send the reply to <authenticate> in small pieces
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.seen = []  # top-level elements the server received, as text
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stop = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        conn.settimeout(10)
        parser = ET.XMLPullParser(events=("start", "end"))
        depth = 0
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                parser.feed(data)
                for kind, el in parser.read_events():
                    if kind == "start":
                        depth += 1
                        if depth == 1:
                            conn.sendall(self._features())
                        continue
                    depth -= 1
                    if depth == 1:
                        self.seen.append(raw.local(el.tag))
                        reply = self._answer(el)
                        if reply and self.split and raw.local(el.tag) == "authenticate":
                            for i in range(0, len(reply), 7):  # 7-byte reads for the proxy
                                conn.sendall(reply[i:i + 7].encode())
                                time.sleep(0.002)
                        elif reply:
                            conn.sendall(reply.encode())
        except (OSError, ET.ParseError):
            return
        finally:
            conn.close()

    @staticmethod
    def _features():
        return ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' id='s2' from='lab.test' "
                "version='1.0'><stream:features>"
                "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                "<mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1-PLUS</mechanism></mechanisms>"
                f"<authentication xmlns='{NS_SASL2}'><mechanism>PLAIN</mechanism>"
                "<mechanism>SCRAM-SHA-1-PLUS</mechanism>"
                f"<inline><bind xmlns='{NS_BIND2}'/></inline></authentication>"
                "</stream:features>").encode()

    def _answer(self, el):
        name = raw.local(el.tag)
        if name == "authenticate":
            ir = el.find(f"{{{NS_SASL2}}}initial-response")
            payload = base64.b64decode(ir.text or "") if ir is not None else b""
            if payload == f"\0{SASL2_USER}\0{SASL2_PASSWORD}".encode():
                # the success and a first stanza in one write: the proxy must
                # relay what follows </success> in the same read
                # new features (no restart: in the same stream), offering
                # compression the proxy must remove
                return (f"<success xmlns='{NS_SASL2}'>"
                        f"<authorization-identifier>{JID}</authorization-identifier>"
                        f"<bound xmlns='{NS_BIND2}'/></success>"
                        "<stream:features><compression xmlns='http://jabber.org/features/compress'>"
                        "<method>zlib</method></compression><sm xmlns='urn:xmpp:sm:3'/>"
                        "</stream:features>"
                        f"<message xmlns='jabber:client' to='{JID}' from='lab.test' id='hello'>"
                        "<body>welcome</body></message>")
            return (f"<failure xmlns='{NS_SASL2}'>"
                    "<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
                    "<text>wrong password</text></failure>")
        if name == "message":
            body = el.find("{jabber:client}body")
            return (f"<message xmlns='jabber:client' to='{JID}' from='{JID}' id='echo'>"
                    f"<body>{body.text if body is not None else ''}</body></message>")
        return ""


def sasl2_proxy(ctx, split=False, **extra):
    srv = Sasl2Server(split)
    ctx.note(f"sasl2 server saw: {srv.seen}")
    px = ctx.proxy(upstream_port=srv.port, upstream_tls="none", **extra)
    return srv, px


def authenticate(c, password, mech="PLAIN"):
    payload = raw.plain_payload(SASL2_USER, password)
    c.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='{mech}'>"
           f"<initial-response>{payload}</initial-response>{USER_AGENT}"
           f"<bind xmlns='{NS_BIND2}'><tag>AwesomeXMPP</tag></bind></authenticate>")


def open_tls(ctx, px):
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    return c, c.open_stream()


@case("sasl2_login_bind2_split", prosody=None)
def sasl2_login_bind2_split(ctx):
    """The same login with the server's <success>, features and first
    stanza arriving 7 bytes at a time: the held first element is cut
    across many reads."""
    sasl2_login(ctx, split=True)


@case("sasl2_login_bind2", prosody=None)
def sasl2_login_bind2(ctx):
    """SASL2 with inline Bind2: -PLUS removed from <authentication>, <inline>
    kept, the exchange relayed, no stream restart, the user agent logged;
    the features after success lose compression, keep the rest, and the
    stanza that came in the same read as <success> still arrives."""
    sasl2_login(ctx)


def sasl2_login(ctx, split=False):
    srv, px = sasl2_proxy(ctx, split=split)
    try:
        c, features = open_tls(ctx, px)
        auth = features.find(f"{{{NS_SASL2}}}authentication")
        ctx.require(auth is not None, f"no SASL2 <authentication> offered: {c.describe(features)}")
        mechs = [m.text for m in auth.findall(f"{{{NS_SASL2}}}mechanism")]
        ctx.check(mechs == ["PLAIN"], f"SASL2 mechanisms offered {mechs}, want ['PLAIN']")
        ctx.check(auth.find(f"{{{NS_SASL2}}}inline/{{{NS_BIND2}}}bind") is not None,
                  "the <inline><bind/></inline> of SASL2 was not kept")
        authenticate(c, SASL2_PASSWORD)
        ok = c.expect("success")
        ident = ok.find(f"{{{NS_SASL2}}}authorization-identifier")
        ctx.check(ident is not None and ident.text == JID, f"authorization identifier {c.describe(ok)}")
        feats = c.expect("features")
        ctx.check(feats.find("{http://jabber.org/features/compress}compression") is None,
                  f"compression offered after SASL2 success: {c.describe(feats)}")
        ctx.check(feats.find("{urn:xmpp:sm:3}sm") is not None,
                  f"stream management lost from the features: {c.describe(feats)}")
        hello = c.expect("message")
        ctx.check(hello.get("id") == "hello", f"the stanza sent with <success> was lost: {c.describe(hello)}")
        c.send(f"<message xmlns='jabber:client' to='{JID}' id='m1'><body>ping</body></message>")
        echo = c.expect("message")
        ctx.check(echo.findtext("{jabber:client}body") == "ping", f"echo {c.describe(echo)}")
        c.close()
        s = ctx.session(px)
        a = s.expect(ctx, "auth", mechanism="PLAIN", sasl2=True)
        if a:
            ctx.check(a.get("authcid") == SASL2_USER, f"auth authcid {a.get('authcid')!r}")
            ctx.check(a.get("user_agent_software") == "AwesomeXMPP", f"user agent {a}")
            ctx.check(a.get("user_agent_device") == "Kiva's Phone", f"device {a}")
        s.expect(ctx, "auth_result", outcome="success", by="upstream")
        s.expect(ctx, "bind", jid=JID)
        login = s.expect(ctx, "login", outcome="success")
        if login:
            ctx.check(login.get("jid") == JID, f"login jid {login.get('jid')!r}")
        f = [e for e in s.all("features") if e.get("sasl2_offered") is not None]
        ctx.check(f and f[-1]["sasl2_offered"] == ["PLAIN"], f"features sasl2_offered: {f}")
        ctx.check(len(s.all("stream", dir="c2s")) == 2, "the stream restarted after SASL2 success"
                  f" ({len(s.all('stream', dir='c2s'))} client headers, want 2: before and after TLS)")
    finally:
        srv.close()


@case("sasl2_wrong_password", prosody=None)
def sasl2_wrong_password(ctx):
    """A SASL2 failure from the server reaches the client in the SASL2 form,
    with its condition logged."""
    srv, px = sasl2_proxy(ctx)
    try:
        c, _ = open_tls(ctx, px)
        authenticate(c, "Xi-wrong-Pw-5Tx1rY")
        fail = c.expect("failure")
        ctx.check(fail.tag == f"{{{NS_SASL2}}}failure", f"failure {c.describe(fail)}")
        ctx.check(raw.sasl_condition(fail) == "not-authorized", f"condition {c.describe(fail)}")
        c.close()
        s = ctx.session(px)
        s.expect(ctx, "auth_result", outcome="failure", by="upstream", condition="not-authorized")
        s.expect(ctx, "login", outcome="failure")
    finally:
        srv.close()


@case("sasl2_policy_refusal", prosody=None)
def sasl2_policy_refusal(ctx):
    """mechanisms_deny applies to SASL2 too: the proxy answers with a SASL2
    <failure> carrying <invalid-mechanism/>, and the server never sees it."""
    srv, px = sasl2_proxy(ctx, mechanisms_deny="PLAIN")
    try:
        c, features = open_tls(ctx, px)
        auth = features.find(f"{{{NS_SASL2}}}authentication")
        mechs = [m.text for m in auth.findall(f"{{{NS_SASL2}}}mechanism")] if auth is not None else []
        ctx.check("PLAIN" not in mechs, f"PLAIN still offered over SASL2: {mechs}")
        authenticate(c, SASL2_PASSWORD)
        fail = c.expect("failure")
        ctx.check(fail.tag == f"{{{NS_SASL2}}}failure", f"failure {c.describe(fail)}")
        ctx.check(raw.sasl_condition(fail) == "invalid-mechanism", f"condition {c.describe(fail)}")
        c.close()
        s = ctx.session(px)
        s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="invalid-mechanism")
        ctx.check("authenticate" not in srv.seen, f"the server saw the refused attempt: {srv.seen}")
    finally:
        srv.close()
