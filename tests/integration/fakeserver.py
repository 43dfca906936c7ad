"""A scriptable fake upstream XMPP server, for the misbehaving-upstream cases.

Prosody behaves too well to test how the proxy survives a bad server, so
this one speaks just enough XMPP (stream header, features, STARTTLS with
the lab certificate, SASL PLAIN, a resource bind and a message echo) and
then does what the case scripts: says nothing, resets the connection after
<auth>, sends a stream error, sends bytes that are not XML, floods...

    srv = FakeServer(script).start()        # listens on 127.0.0.1:srv.port
    ... point the proxy's upstream at srv.port ...
    conn = srv.wait_conn(0)                 # the first connection's record
    conn.wait_done(5); conn.received        # what the proxy sent it (plaintext)
    srv.stop()

A script is a function script(conn) run in its own thread for each
connection the proxy makes; a list of scripts is used one per connection in
order (the last one repeats). Scripts build on the steps below
(conn.prologue() takes a connection from the first byte to "features with
mechanisms sent, after STARTTLS"). Reading is by regular expression over the
bytes received since the last match: enough for the few fixed elements the
proxy sends, which is all a fake server needs to know.

For the cases where the server is the one that decides (cases_bypass_upstream):
plain_then(after) takes any PLAIN and restarts (any stream prefix),
serve_stanzas(binds) answers binds as scripted (bind_result(jid) echoes the
request's id exactly, none when none; bind_error(cond)), echoes messages and
keeps every stanza it read in conn.stanzas; sasl2_then(success) answers
XEP-0388 <authenticate> with the bytes given. conn.mark(name) and
conn.since(name) give what the proxy sent after a point of the script.

Python standard library only (socket, ssl, threading).
"""

import re
import socket
import ssl
import struct
import threading
import time

import harness

NS_STREAM = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-streams"

HEADER_RE = re.compile(rb"<stream:stream\b[^>]*>")
STARTTLS_RE = re.compile(rb"<starttls\b[^>]*/>|<starttls\b[^>]*>\s*</starttls>")
AUTH_RE = re.compile(rb"<auth\b[^>]*/>|<auth\b[^>]*>[^<]*</auth>")
RESPONSE_RE = re.compile(rb"<response\b[^>]*/>|<response\b[^>]*>[^<]*</response>")
BIND_RE = re.compile(rb"<iq\b[^>]*>.*?</iq>", re.S)
MESSAGE_RE = re.compile(rb"<message\b.*?</message>|<message\b[^>]*/>", re.S)
STREAM_END_RE = re.compile(rb"</stream:stream>")
# A stream header with any prefix (or none): relayed client headers after
# SASL are passed on as the client wrote them.
ANY_HEADER_RE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?stream\b[^>]*>")
# One top-level stanza as the proxy relays it (no nesting of the same name).
STANZA_RE = re.compile(rb"<(iq|message|presence)\b(?:[^>]*/>|.*?</\1>)", re.S)
ANY_STREAM_END_RE = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?stream>")
AUTHENTICATE_RE = re.compile(rb"<authenticate\b.*?</authenticate>|<authenticate\b[^>]*/>", re.S)
NS_SASL2 = "urn:xmpp:sasl:2"
NS_BIND2 = "urn:xmpp:bind:0"


def header(stream_id="fake1"):
    return ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='{NS_STREAM}' id='{stream_id}' from='{harness.DOMAIN}' "
            "version='1.0' xml:lang='en'>").encode()


def features_starttls(required=True):
    req = "<required/>" if required else ""
    return f"<stream:features><starttls xmlns='{NS_TLS}'>{req}</starttls></stream:features>".encode()


def features_mechanisms(mechs=("PLAIN", "SCRAM-SHA-1")):
    m = "".join(f"<mechanism>{x}</mechanism>" for x in mechs)
    return f"<stream:features><mechanisms xmlns='{NS_SASL}'>{m}</mechanisms></stream:features>".encode()


def features_sasl2(mechs=("PLAIN",)):
    """SASL1 mechanisms and the XEP-0388 <authentication> (with Bind2 inline)."""
    m = "".join(f"<mechanism>{x}</mechanism>" for x in mechs)
    return (f"<stream:features><mechanisms xmlns='{NS_SASL}'>{m}</mechanisms>"
            f"<authentication xmlns='{NS_SASL2}'>{m}<inline><bind xmlns='{NS_BIND2}'/></inline>"
            "</authentication></stream:features>").encode()


def features_bind():
    return f"<stream:features><bind xmlns='{NS_BIND}'/></stream:features>".encode()


def stream_error(condition, text=None, end=True):
    t = f"<text xmlns='{NS_STANZAS}'>{text}</text>" if text else ""
    out = f"<stream:error><{condition} xmlns='{NS_STANZAS}'/>{t}</stream:error>"
    return (out + ("</stream:stream>" if end else "")).encode()


class Closed(Exception):
    """The proxy closed the connection."""


class Timeout(Exception):
    """What a script waited for did not come in time."""


class FakeConn:
    """One connection from the proxy, with what happened on it.

    received: every plaintext byte the proxy sent (after TLS: decrypted);
    log: the steps the script took, for failure messages; error: the
    exception that ended the script (Closed, Timeout, ...) or None;
    done: set when the script has returned and the socket is closed."""

    def __init__(self, sock, index, server):
        self.sock = sock
        self.index = index
        self.server = server
        self.received = b""
        self.pending = b""  # received but not yet matched
        self.eof = False
        self.tls = False
        self.log = []
        self.error = None
        self.done = threading.Event()
        self.t0 = time.monotonic()
        self.marks = {}  # name -> len(received) when the script noted it
        self.stanzas = []  # top-level stanzas serve_stanzas() read, in order

    # ------------------------------------------------------------ I/O

    def note(self, what):
        self.log.append(f"{time.monotonic() - self.t0:.2f}s {what}")

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.eof = True
            return True
        self.received += data
        self.pending += data
        return True

    def expect(self, pattern, timeout=10.0, what=None):
        """Waits for pattern (a compiled bytes regex) in what came since the
        last match; returns the match's bytes and consumes up to its end."""
        deadline = time.monotonic() + timeout
        while True:
            m = pattern.search(self.pending)
            if m:
                self.pending = self.pending[m.end():]
                return m.group(0)
            if self.eof:
                raise Closed(f"closed while waiting for {what or pattern.pattern!r}")
            if not self._recv(deadline) and time.monotonic() >= deadline:
                raise Timeout(f"no {what or pattern.pattern!r} within {timeout}s; "
                              f"have {self.pending[-200:]!r}")

    def drain(self, timeout=5.0):
        """Reads until the proxy closes (or timeout); True if it closed."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self._recv(deadline) and time.monotonic() >= deadline:
                return False
        return True

    def starttls(self):
        """The server side of a TLS handshake with the lab certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(harness.CERTS / f"{self.server.cert}.pem"),
                            str(harness.CERTS / f"{self.server.cert}.key"))
        self.sock.settimeout(10)
        self.sock = ctx.wrap_socket(self.sock, server_side=True)
        self.tls = True
        self.note(f"TLS {self.sock.version()}")

    def reset(self):
        """Ends the connection with a TCP RST (SO_LINGER 0)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.note("RST")
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------ steps

    def mark(self, name):
        """Remembers how much had been received at this point of the script
        (what the proxy sent after it is received[marks[name]:])."""
        self.marks[name] = len(self.received)

    def since(self, name):
        """What was received after mark name (everything if never marked)."""
        return self.received[self.marks.get(name, 0):]

    def prologue(self, mechs=("PLAIN", "SCRAM-SHA-1"), features=None):
        """Stream header and features with <starttls><required/>, <proceed/>,
        TLS, the restarted stream with the SASL mechanisms (or features,
        bytes sent instead of them)."""
        self.expect(HEADER_RE, what="the proxy's stream header")
        self.send(header("fake-1") + features_starttls(True))
        self.expect(STARTTLS_RE, what="<starttls/>")
        self.send(f"<proceed xmlns='{NS_TLS}'/>")
        self.pending = b""
        self.starttls()
        self.expect(HEADER_RE, what="the stream header after TLS")
        self.send(header("fake-2") + (features if features is not None else features_mechanisms(mechs)))
        self.note("features with mechanisms sent")

    def wait_auth(self):
        """Waits for the relayed <auth>; returns it."""
        auth = self.expect(AUTH_RE, what="<auth>")
        self.note(f"got {auth[:80]!r}")
        return auth

    def succeed_and_serve(self, jid=None):
        """After <auth>: <success/>, the restarted stream with bind, the bind
        result, then every <message> is sent back (an echo) until the
        stream ends."""
        self.send(f"<success xmlns='{NS_SASL}'/>")
        self.expect(HEADER_RE, what="the stream header after SASL")
        self.send(header("fake-3") + features_bind())
        iq = self.expect(BIND_RE, what="the bind iq")
        m = re.search(rb"id=['\"]([^'\"]*)['\"]", iq)
        iq_id = m.group(1).decode() if m else "b1"
        jid = jid or f"alice@{harness.DOMAIN}/fake{self.index}"
        self.send(f"<iq type='result' id='{iq_id}'><bind xmlns='{NS_BIND}'>"
                  f"<jid>{jid}</jid></bind></iq>")
        self.note("bound")
        while True:
            m = None
            try:
                m = self.expect(re.compile(MESSAGE_RE.pattern + rb"|" + STREAM_END_RE.pattern, re.S),
                                timeout=60, what="a message")
            except (Closed, Timeout):
                return
            if m == b"</stream:stream>":
                self.send(b"</stream:stream>")
                return
            self.send(m)


class FakeServer:
    """Listens on 127.0.0.1 (a free port) and runs script for each
    connection, each in its own thread. cert: the lab certificate name used
    for TLS ("server" is trusted by the proxy's upstream_ca, "untrusted"
    is not)."""

    def __init__(self, script, cert="server"):
        self.scripts = script if isinstance(script, (list, tuple)) else [script]
        self.cert = cert
        self.conns = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = None

    def start(self):
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        return self

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                conn = FakeConn(s, len(self.conns), self)
                self.conns.append(conn)
            script = self.scripts[min(conn.index, len(self.scripts) - 1)]
            threading.Thread(target=self._run, args=(conn, script), daemon=True).start()

    def _run(self, conn, script):
        try:
            script(conn)
        except Exception as e:  # recorded; the case decides what it means
            conn.error = e
            conn.note(f"script ended: {type(e).__name__}: {e}")
        finally:
            conn.close()
            conn.done.set()

    def wait_conn(self, index=0, timeout=10.0):
        """The index-th connection's record, once it exists (None if none)."""
        return harness.wait_until(
            lambda: self.conns[index] if len(self.conns) > index else None, timeout)

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        for c in list(self.conns):
            c.close()
        if self.thread is not None:
            self.thread.join(2)

    def describe(self):
        return "\n".join(f"--- fake upstream connection {c.index}: {c.log}; error {c.error!r}; "
                         f"received {c.received[-600:]!r}" for c in self.conns)


# ---------------------------------------------------------------- scripts


def good(conn):
    """A well-behaved server: a full PLAIN login, bind, message echo."""
    conn.prologue()
    conn.wait_auth()
    conn.succeed_and_serve()


def silent(conn):
    """Accepts the TCP connection and never says a word."""
    conn.drain(timeout=60)


def reset_after_auth(conn):
    """A full prologue, then a TCP RST as soon as <auth> arrives."""
    conn.prologue()
    conn.wait_auth()
    conn.reset()


def stream_error_after_auth(condition="system-shutdown"):
    def script(conn):
        conn.prologue()
        conn.wait_auth()
        conn.send(stream_error(condition, "fake server going away"))
        conn.note(f"sent stream error {condition}")
        conn.drain(timeout=10)
    return script


def stream_error_at_start(condition="system-shutdown"):
    def script(conn):
        conn.expect(HEADER_RE, what="the proxy's stream header")
        conn.send(header("fake-1") + stream_error(condition))
        conn.note(f"sent stream error {condition}")
        conn.drain(timeout=10)
    return script


def garbage_after_auth(conn):
    """Answers <auth> with bytes that are not well-formed XML, then listens
    for what the proxy tells it."""
    conn.prologue()
    conn.wait_auth()
    conn.send(b"<success xmlns='" + NS_SASL.encode() + b"'><<&&\x00 not xml")
    conn.note("sent garbage")
    conn.drain(timeout=10)


def challenge_flood(conn):
    """Answers <auth> with an endless stream of <challenge/>s."""
    conn.prologue()
    conn.wait_auth()
    one = f"<challenge xmlns='{NS_SASL}'>cmVhbG09ImxhYi50ZXN0Ig==</challenge>".encode()
    try:
        for _ in range(2000):
            conn.send(one * 10)
    except OSError:
        pass
    conn.note("challenges sent")
    conn.drain(timeout=10)


def endless_features(conn):
    """Starts <stream:features> and never ends it: 1 MiB of nested-free
    filler inside one element (the proxy's pre-login element limit)."""
    conn.expect(HEADER_RE, what="the proxy's stream header")
    conn.send(header("fake-1") + b"<stream:features><filler>")
    try:
        for _ in range(256):
            conn.send(b"x" * 4096)
    except OSError:
        pass
    conn.note("filler sent")
    conn.drain(timeout=10)


def proceed_with_injection(conn):
    """Answers <starttls/> with <proceed/> and, in the same write, a
    plaintext stream header and features offering PLAIN: a STARTTLS
    command injection (CVE-2011-0411 style) from the server's side. Then
    does the TLS handshake as if nothing happened."""
    conn.expect(HEADER_RE, what="the proxy's stream header")
    conn.send(header("fake-1") + features_starttls(True))
    conn.expect(STARTTLS_RE, what="<starttls/>")
    conn.send(f"<proceed xmlns='{NS_TLS}'/>".encode() + header("injected")
              + features_mechanisms(("PLAIN",)))
    conn.note("proceed + injected plaintext sent")
    conn.pending = b""
    try:
        conn.starttls()
    except (ssl.SSLError, OSError) as e:
        conn.note(f"TLS failed: {e}")
        return
    conn.drain(timeout=10)


def endless_features_after_login(conn):
    """A good login up to <success/>; then the restarted stream's features
    never end (1 MiB). The proxy holds those features to rewrite them."""
    conn.prologue()
    conn.wait_auth()
    conn.send(f"<success xmlns='{NS_SASL}'/>")
    conn.expect(HEADER_RE, what="the stream header after SASL")
    conn.send(header("fake-3") + b"<stream:features><filler>")
    try:
        for _ in range(256):
            conn.send(b"y" * 4096)
    except OSError:
        pass
    conn.note("post-login filler sent")
    conn.drain(timeout=10)


def close_after_login_header(conn):
    """A good login up to <success/>; then only the restarted stream's
    header, and the connection closes (the server died between the two)."""
    conn.prologue()
    conn.wait_auth()
    conn.send(f"<success xmlns='{NS_SASL}'/>")
    conn.expect(HEADER_RE, what="the stream header after SASL")
    conn.send(header("fake-3"))
    conn.note("header sent, closing")
    time.sleep(0.2)


def login_then(after):
    """A good login through bind, then after(conn) instead of the echo."""
    def script(conn):
        conn.prologue()
        conn.wait_auth()
        conn.send(f"<success xmlns='{NS_SASL}'/>")
        conn.expect(HEADER_RE, what="the stream header after SASL")
        conn.send(header("fake-3") + features_bind())
        iq = conn.expect(BIND_RE, what="the bind iq")
        m = re.search(rb"id=['\"]([^'\"]*)['\"]", iq)
        conn.send(f"<iq type='result' id='{m.group(1).decode() if m else 'b1'}'>"
                  f"<bind xmlns='{NS_BIND}'><jid>alice@{harness.DOMAIN}/fake{conn.index}</jid>"
                  "</bind></iq>")
        conn.note("bound")
        after(conn)
    return script


def never_read(conn):
    """Stops reading (for 30 s, or until the proxy closes the connection)."""
    conn.note("not reading any more")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not conn.server.stopping:
        time.sleep(0.1)


def big_stanza(size):
    def after(conn):
        try:
            conn.send(f"<message to='alice@{harness.DOMAIN}/fake{conn.index}' type='chat'><body>".encode()
                      + b"w" * size + b"</body></message>")
        except OSError:
            pass
        conn.note(f"sent a {size}-byte message")
        conn.drain(timeout=10)
    return after


# ---------------------------------------------------------------- bound identity, prefixes


def iq_id_attr(stanza):
    """The id attribute of a stanza's start tag exactly as written
    (b" id='...'", quotes included), or b"" when it has none."""
    start = re.match(rb"<\w+\b([^>]*)>", stanza)
    m = re.search(rb"\sid=(['\"])(.*?)\1", start.group(1)) if start else None
    return b" id=" + m.group(1) + m.group(2) + m.group(1) if m else b""


def bind_result(jid):
    """A bind answer: the result binding jid, the request's id echoed
    exactly (none when it had none)."""
    def reply(iq):
        return (b"<iq type='result'" + iq_id_attr(iq) + b">"
                + f"<bind xmlns='{NS_BIND}'><jid>{jid}</jid></bind></iq>".encode())
    return reply


def bind_error(condition="conflict", kind="cancel"):
    def reply(iq):
        return (b"<iq type='error'" + iq_id_attr(iq) + b">"
                + f"<bind xmlns='{NS_BIND}'/><error type='{kind}'>"
                  f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>".encode())
    return reply


def plain_then(after, header_re=ANY_HEADER_RE, restart=None):
    """Accepts any PLAIN <auth> (whatever the password), <success/>, waits
    for the restarted stream's header (any prefix), answers with restart
    (default: our header and bind features), then after(conn). Marks:
    "success" (what came after our <success/>), "restart" (after the
    client's new header)."""
    def script(conn):
        conn.prologue(mechs=("PLAIN",))
        conn.wait_auth()
        conn.mark("success")
        conn.send(f"<success xmlns='{NS_SASL}'/>")
        try:
            conn.expect(header_re, what="the stream header after SASL")
        except Closed:
            conn.note("closed before the restarted stream's header")
            return
        conn.mark("restart")
        conn.send(restart if restart is not None else header("fake-3") + features_bind())
        conn.note("restarted, bind offered")
        after(conn)
    return script


def serve_stanzas(binds=()):
    """after(): reads stanzas until the stream ends; the n-th bind request
    is answered by binds[n](iq) (the last one repeats), a message is echoed,
    any other iq get/set gets an empty result. Every stanza read is kept
    in conn.stanzas."""
    binds = list(binds)

    def after(conn):
        nbind = 0
        pattern = re.compile(STANZA_RE.pattern + rb"|" + ANY_STREAM_END_RE.pattern, re.S)
        while True:
            try:
                st = conn.expect(pattern, timeout=30, what="a stanza")
            except (Closed, Timeout):
                return
            if st.startswith(b"</"):
                conn.note("stream end")
                try:
                    conn.send(b"</stream:stream>")
                except OSError:
                    pass
                return
            conn.stanzas.append(st)
            conn.note(f"got {st[:80]!r}")
            try:
                if st.startswith(b"<iq") and re.search(rb"<bind\b[^>]*" + NS_BIND.encode(), st):
                    if binds:
                        conn.send(binds[min(nbind, len(binds) - 1)](st))
                    nbind += 1
                elif st.startswith(b"<message"):
                    conn.send(st)
                elif st.startswith(b"<iq") and re.search(rb"type=['\"](get|set)['\"]", st[:200]):
                    conn.send(b"<iq type='result'" + iq_id_attr(st) + b"/>")
            except OSError:
                return
    return after


def drain_after(conn):
    """after(): listens until the proxy closes (or 30 s)."""
    conn.drain(timeout=30)


def sasl2_then(success, after=drain_after):
    """Offers SASL2 next to SASL1 (after STARTTLS), answers the first
    <authenticate> with success (bytes: the SASL2 <success> and whatever
    follows it in the same write), then after(conn). Mark "authenticate":
    before the <authenticate> arrived."""
    def script(conn):
        conn.prologue(features=features_sasl2())
        conn.mark("authenticate")
        try:
            a = conn.expect(AUTHENTICATE_RE, what="<authenticate>")
        except Closed:
            conn.note("closed before <authenticate>")
            return
        conn.note(f"got {a[:80]!r}")
        conn.send(success)
        conn.note("SASL2 success sent")
        after(conn)
    return script
