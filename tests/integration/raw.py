"""A raw-socket XMPP client for misbehaving-client cases.

It sends exactly the bytes it is told to (PLAIN before STARTTLS, DTDs,
garbage, half a login) and parses what comes back with an incremental
XML parser, so a case can wait for "the next top-level element" or "a stream
error" with a deadline. Python stdlib only (socket, ssl, xml.etree).
"""

import base64
import select
import socket
import ssl
import time
import xml.etree.ElementTree as ET

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-streams"


def q(ns, name):
    return "{%s}%s" % (ns, name)


def local(tag):
    return tag.rsplit("}", 1)[-1]


def header(to="lab.test", version="1.0"):
    return ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='{NS_STREAM}' to='{to}' version='{version}' xml:lang='en'>")


def plain_payload(user, password, authzid=""):
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


class Closed(Exception):
    """The peer closed the connection."""


class RawClient:
    """One TCP (or Direct TLS) connection with an incremental XML reader.

    elements: the top-level (depth 1) elements received, in order, since the
    last stream (re)start; stream_header: the attributes of the last stream
    header seen; eof: the peer closed; stream_closed: </stream:stream> seen.
    """

    def __init__(self, port, host="127.0.0.1", direct_tls=False, ca=None,
                 sni="lab.test", timeout=5.0, source=None, preamble=None):
        """source: the local address to connect from (another loopback
        address, 127.0.0.2, for a client the server must tell apart).
        preamble: bytes sent first, before any TLS (a PROXY header, as a
        balancer would send it)."""
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if preamble:
            self.sock.sendall(preamble)
        self.ca = ca
        self.sni = sni
        self.received = b""  # everything, for diagnostics
        self.eof = False
        self.tls = False
        self._reset_parser()
        if direct_tls:
            self._wrap_tls(alpn=["xmpp-client"])

    def _reset_parser(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.elements = []
        self.stream_header = None
        self.stream_closed = False
        self.parse_error = None

    def _wrap_tls(self, alpn=None):
        ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.ca is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.sni)
        self.tls = True

    # ------------------------------------------------------------ output

    def send(self, data):
        """Sends str (UTF-8) or bytes as they are."""
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def open_stream(self, to="lab.test"):
        """Sends a stream header and returns the <features> element."""
        self._reset_parser()
        self.send(header(to))
        return self.expect("features")

    def starttls(self):
        """<starttls/> -> <proceed/> -> TLS handshake (verified if ca was
        given). Returns the <proceed/> element; raises on <failure/>."""
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        el = self.next_element()
        if el is None or local(el.tag) != "proceed":
            raise AssertionError(f"expected <proceed/>, got {self.describe(el)}")
        self.sock.settimeout(self.timeout)
        self._wrap_tls()
        self._reset_parser()
        return el

    def auth(self, mechanism, payload=None):
        """Sends <auth mechanism=...>payload</auth> (payload: base64 text,
        '' for '=' meaning empty, None for no initial response)."""
        if payload is None:
            self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'/>")
        else:
            self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{payload or '='}</auth>")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ input

    def _read(self, deadline):
        """Reads once (waiting until deadline); False on timeout."""
        if self.eof:
            return False
        pending = self.tls and self.sock.pending()
        if not pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return False
        try:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.eof = True
            return True
        self.received += data
        self._feed(data)
        return True

    def _feed(self, data):
        if self.parse_error:
            return
        try:
            self.parser.feed(data)
            for kind, el in self.parser.read_events():
                if kind == "start":
                    self.depth += 1
                    if self.depth == 1:
                        self.stream_header = dict(el.attrib)
                        self.stream_header["tag"] = el.tag
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.elements.append(el)
                    elif self.depth == 0:
                        self.stream_closed = True
        except ET.ParseError as e:
            self.parse_error = str(e)

    def next_element(self, timeout=None):
        """Pops the next top-level element, waiting up to timeout; None if
        none came (timeout, EOF or stream close)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.elements:
            if self.eof or self.stream_closed or self.parse_error:
                return None
            if not self._read(deadline) and time.monotonic() >= deadline:
                return None
        return self.elements.pop(0)

    def expect(self, name, timeout=None):
        """The next element, which must have local name name."""
        el = self.next_element(timeout)
        if el is None or local(el.tag) != name:
            raise AssertionError(f"expected <{name}>, got {self.describe(el)}")
        return el

    def wait_closed(self, timeout=None):
        """Reads until EOF; True if the peer closed in time (elements that
        arrive meanwhile are kept)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.eof:
            if not self._read(deadline) and time.monotonic() >= deadline:
                return False
        return True

    def stream_error(self, timeout=None):
        """Waits for a stream error; returns its condition (local name of the
        first child in the streams namespace), or None."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for el in self.elements:
                if el.tag == q(NS_STREAM, "error"):
                    return stream_error_condition(el)
            if self.eof or self.stream_closed or self.parse_error:
                return None
            if not self._read(deadline) and time.monotonic() >= deadline:
                return None

    def describe(self, el=None):
        if el is not None:
            return ET.tostring(el, encoding="unicode")[:300]
        state = "EOF" if self.eof else ("</stream>" if self.stream_closed else "timeout")
        if self.parse_error:
            state = f"unparsable ({self.parse_error})"
        tail = self.received[-300:].decode("utf-8", "replace")
        return f"nothing ({state}; last bytes: {tail!r})"


def stream_error_condition(el):
    for child in el:
        if child.tag.startswith("{%s}" % NS_STANZAS) and local(child.tag) != "text":
            return local(child.tag)
    return "unknown"


def sasl_condition(el):
    """The condition of a SASL <failure/>."""
    for child in el:
        if local(child.tag) != "text":
            return local(child.tag)
    return None


def mechanisms(features):
    """The mechanism names in a <features> element."""
    return [m.text for m in features.iter(q(NS_SASL, "mechanism"))]


def has_starttls(features):
    st = features.find(q(NS_TLS, "starttls"))
    if st is None:
        return "none"
    return "required" if st.find(q(NS_TLS, "required")) is not None else "offered"


def login_plain(c, user, password, to="lab.test", bind=True, resource="raw"):
    """A complete PLAIN login on an open RawClient (STARTTLS first if
    offered), then optionally a resource bind. Returns the bound JID or
    True; raises AssertionError with what went wrong."""
    f = c.open_stream(to)
    if has_starttls(f) != "none" and not c.tls:
        c.starttls()
        f = c.open_stream(to)
    c.auth("PLAIN", plain_payload(user, password))
    el = c.next_element()
    if el is None or local(el.tag) != "success":
        raise AssertionError(f"expected <success/>, got {c.describe(el)}")
    c.open_stream(to)
    if not bind:
        return True
    c.send(f"<iq type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>{resource}</resource></bind></iq>")
    el = c.expect("iq")
    jid = el.find(f"{q(NS_BIND, 'bind')}/{q(NS_BIND, 'jid')}")
    if jid is None:
        raise AssertionError(f"bind failed: {c.describe(el)}")
    return jid.text


