"""Regressions for defects a code review found in the relay after login and
before it: each case scripts an upstream (plain TCP, upstream_tls = none)
or a raw client into the exact sequence that broke.
"""

import socket
import threading
import xml.etree.ElementTree as ET

import raw
from cases import case, USERS

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' id='r{n}' from='lab.test' version='1.0'>")
FEATURES_SASL = ("<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                 "<mechanism>PLAIN</mechanism></mechanisms></stream:features>")
FEATURES_BIND = ("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                 "</stream:features>")


class ScriptedServer:
    """Accepts one connection; answers the first stream with SASL features,
    <auth> with <success/>, then calls after_login(conn, n) on each later
    stream header and on_iq(conn) on each iq."""

    def __init__(self, after_header=None, on_iq=None):
        self.after_header, self.on_iq = after_header, on_iq
        self.seen = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.settimeout(10)
        streams = 0
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
                            streams += 1
                            if streams == 1:
                                conn.sendall((HEADER.format(n=1) + FEATURES_SASL).encode())
                            elif self.after_header is None or not self.after_header(conn, streams):
                                conn.sendall((HEADER.format(n=streams) + FEATURES_BIND).encode())
                        continue
                    depth -= 1
                    if depth != 1:
                        continue
                    name = raw.local(el.tag)
                    self.seen.append(name)
                    if name == "auth":
                        conn.sendall(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
                        # the client restarts: a fresh parser for its new stream
                        parser = ET.XMLPullParser(events=("start", "end"))
                        depth = 0
                    elif name == "iq" and self.on_iq is not None:
                        self.on_iq(conn, el)
        except (OSError, ET.ParseError):
            return
        finally:
            conn.close()


def login_through(ctx, srv):
    px = ctx.proxy(upstream_port=srv.port, upstream_tls="none", require_tls="no",
                   plain_without_tls="allow")
    c = ctx.raw(px.port)
    return px, c


@case("review_partial_tag_then_close", prosody=None)
def review_partial_tag_then_close(ctx):
    """After login the server sends half a start tag and closes: the client
    must not get a stream error glued into that tag (it would not parse);
    the session just ends, logged."""
    def on_iq(conn, el):
        conn.sendall(f"<iq type='result' id='{el.get('id')}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                     "<jid>alice@lab.test/r</jid></bind></iq><message to='alice@lab.test' type='chat'".encode())
        conn.close()
    srv = ScriptedServer(on_iq=on_iq)
    try:
        px, c = login_through(ctx, srv)
        jid = raw.login_plain(c, "alice", USERS["alice"])
        ctx.check(jid == "alice@lab.test/r", f"bind: {jid!r}")
        ctx.check(c.wait_closed(5), "the client connection was not closed")
        tail = c.received[-200:]
        ctx.check(b"type='chat'<" not in tail and b"type='chat'<stream:error" not in tail,
                  f"an error was written inside the half tag: {tail!r}")
        s = ctx.session(px)
        close = s.first("close")
        ctx.check(close is not None, "no close event")
    finally:
        srv.close()


@case("review_error_while_features_held", prosody=None)
def review_error_while_features_held(ctx):
    """After <success/> the server answers the new stream with its header and
    a stream error instead of features: the client gets both (not a silent
    close), and the event log has the error."""
    def after_header(conn, n):
        conn.sendall((HEADER.format(n=n) + "<stream:error><host-unknown "
                      "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>").encode())
        conn.close()
        return True
    srv = ScriptedServer(after_header=after_header)
    try:
        px, c = login_through(ctx, srv)
        c.open_stream()
        c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
        ctx.require(raw.local(c.expect("success").tag) == "success", "no success")
        c._reset_parser()
        c.send(raw.header())
        cond = c.stream_error(timeout=5)
        ctx.check(cond == "host-unknown", f"client told {cond!r}, want the server's host-unknown; {c.describe()}")
        s = ctx.session(px)
        s.expect(ctx, "stream_error", dir="s2c", condition="host-unknown")
    finally:
        srv.close()


@case("review_iq_auth_refused", prosody=None)
def review_iq_auth_refused(ctx):
    """Legacy iq-auth (XEP-0078) before SASL would go around every SASL
    rule: refused with not-authorized and a policy event, never relayed."""
    srv = ScriptedServer()
    try:
        px, c = login_through(ctx, srv)
        c.open_stream()
        c.send("<iq type='set' id='a1'><query xmlns='jabber:iq:auth'><username>alice</username>"
               f"<password>{USERS['alice']}</password><resource>r</resource></query></iq>")
        cond = c.stream_error(timeout=5)
        ctx.check(cond == "not-authorized", f"client told {cond!r}; {c.describe()}")
        s = ctx.session(px)
        s.expect(ctx, "policy", rule="iq_auth", action="reject")
        ctx.check("iq" not in srv.seen, f"the server saw the iq-auth: {srv.seen}")
    finally:
        srv.close()
