"""forge_ca (issue 11 part 3): a certificate per domain the client asks for.

Real Prosody upstream (lab.test, anon.lab.test), real clients that trust
only the forging CA (certs/lab/forge-ca.pem: slixmpp, openssl s_client with
-verify_return_error, Python's ssl), raw clients for hostile names. The
proxy has no static cert at all in most cases: every certificate a client
sees is forged.
"""

import os
import re
import socket
import ssl
import struct
import subprocess

import harness
from cases import case, ALICE
from harness import CERTS

FORGE_CA = CERTS / "forge-ca.pem"
FORGE_KEY = CERTS / "forge-ca.key"


def forge_proxy(ctx, upstream_port=None, upstream_tls="starttls", **extra):
    keys = {"forge_ca": str(FORGE_CA), "forge_ca_key": str(FORGE_KEY),
            "cert": None, "key": None}
    keys.update(extra)
    return ctx.proxy(upstream_port=upstream_port, upstream_tls=upstream_tls, **keys)


def s_client(port, servername=None, ca=FORGE_CA, verify_host=None, starttls=None,
             xmpphost=None):
    """openssl s_client against the proxy; returns (returncode, output, leaf PEM)."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca),
           "-verify_return_error", "-showcerts"]
    if servername is not None:
        cmd += ["-servername", servername]
    else:
        cmd += ["-noservername"]
    if verify_host:
        cmd += ["-verify_hostname", verify_host]
    if starttls:
        cmd += ["-starttls", starttls]
        if xmpphost:
            cmd += ["-xmpphost", xmpphost]
    r = subprocess.run(cmd, input=b"", capture_output=True, timeout=15)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    return r.returncode, out, m.group(0) if m else ""


def cert_text(pem):
    r = subprocess.run(["openssl", "x509", "-noout", "-subject", "-serial", "-ext",
                        "subjectAltName"], input=pem.encode(), capture_output=True, timeout=10)
    return r.stdout.decode()


def serial(pem):
    m = re.search(r"serial=([0-9A-F]+)", cert_text(pem))
    return m.group(1) if m else None


def hello_with_sni(port, name):
    """A hand-made TLS 1.2 ClientHello whose SNI is name (any bytes, any
    length: OpenSSL's and Python's clients refuse more than 255), and the
    subject of the leaf the server answers with (TLS 1.2 sends it in the
    clear). Returns the leaf's DER, or b'' if none came."""
    def ext(t, body):
        return struct.pack("!HH", t, len(body)) + body
    sni = struct.pack("!BH", 0, len(name)) + name
    exts = (ext(0, struct.pack("!H", len(sni)) + sni)
            + ext(10, struct.pack("!HH", 2, 23))            # secp256r1
            + ext(11, b"\x01\x00")                          # uncompressed points
            + ext(13, struct.pack("!HHH", 4, 0x0403, 0x0804)))  # ecdsa/rsa-pss sha256
    suites = struct.pack("!HHH", 4, 0xC02B, 0xC02F)        # ECDHE-ECDSA/RSA-AES128-GCM
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + suites + b"\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    rec = b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sk:
        sk.sendall(rec)
        data = b""
        msgs = b""
        while True:
            while len(data) < 5 or len(data) < 5 + struct.unpack("!H", data[3:5])[0]:
                chunk = sk.recv(65536)
                if not chunk:
                    return b""
                data += chunk
            n = struct.unpack("!H", data[3:5])[0]
            typ, frag, data = data[0], data[5:5 + n], data[5 + n:]
            if typ != 22:
                return b""
            msgs += frag
            while len(msgs) >= 4:
                mlen = struct.unpack("!I", b"\x00" + msgs[1:4])[0]
                if len(msgs) < 4 + mlen:
                    break
                mtype, mbody, msgs = msgs[0], msgs[4:4 + mlen], msgs[4 + mlen:]
                if mtype == 11:  # Certificate: list length, then length-prefixed DERs
                    clen = struct.unpack("!I", b"\x00" + mbody[3:6])[0]
                    return mbody[6:6 + clen]


def der_text(der):
    r = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-ext",
                        "subjectAltName"], input=der, capture_output=True, timeout=10)
    return r.stdout.decode()


def client_tls_events(px):
    return [e for e in px.events.read() if e.get("event") == "tls" and e.get("leg") == "client"]


@case("forge_starttls_slixmpp")
def forge_starttls_slixmpp(ctx):
    """STARTTLS: slixmpp trusting only the forging CA logs in; the leaf names
    the stream's 'to'; the tls event says forged and the names; the upstream
    leg is still verified against lab.test."""
    px = forge_proxy(ctx)
    r = ctx.client(px.port, ca=FORGE_CA)
    ctx.require(r.get("ok"), f"login through a forged certificate failed: {r}")
    s = ctx.session(px)
    cl = [e for e in s.events if e.get("event") == "tls" and e.get("leg") == "client"]
    up = [e for e in s.events if e.get("event") == "tls" and e.get("leg") == "upstream"]
    ctx.check(cl and cl[0].get("forged") is True, f"client tls event not forged: {cl}")
    ctx.check(cl and cl[0].get("names") == ["lab.test"], f"names: {cl}")
    ctx.check(up and up[0].get("verified") is True and up[0].get("sni") == "lab.test",
              f"upstream not verified against lab.test: {up}")
    # the same client trusting the lab CA only (not the forging CA) fails
    r2 = ctx.client(px.port, ca=CERTS / "ca.pem")
    ctx.check(not r2.get("ok"), "a client not trusting the forging CA logged in")


@case("forge_direct_tls_sni")
def forge_direct_tls_sni(ctx):
    """Direct TLS: openssl s_client -verify_return_error with SNI lab.test and a
    third domain (one no server has) both verify against the forging CA,
    each leaf naming its SNI (dNSName and xmppAddr); slixmpp over Direct TLS
    logs in."""
    px = forge_proxy(ctx)
    rc, out, pem = s_client(px.tls_port, "third.example", verify_host="third.example")
    ctx.check(rc == 0 and "Verify return code: 0 (ok)" in out,
              f"s_client third.example did not verify: {out[-800:]}")
    t = cert_text(pem)
    ctx.check("DNS:third.example" in t and "CN = third.example" in t,
              f"leaf for third.example: {t}")
    ctx.check("1.3.6.1.5.5.7.8.5" in t or "xmppAddr" in t.lower() or "othername" in t.lower(),
              f"no xmppAddr in {t}")
    rc, out, pem = s_client(px.tls_port, "lab.test", verify_host="lab.test")
    ctx.check(rc == 0, f"s_client lab.test: {out[-500:]}")
    r = ctx.client(px.tls_port, ca=FORGE_CA, direct_tls=True)
    ctx.check(r.get("ok"), f"Direct TLS login: {r}")
    names = [e.get("names") for e in client_tls_events(px)]
    ctx.check(["third.example"] in names and ["lab.test"] in names, f"tls names: {names}")


@case("forge_starttls_other_domain")
def forge_starttls_other_domain(ctx):
    """Raw STARTTLS naming another domain the server hosts (anon.lab.test)
    gets a certificate for that name, verified by Python's ssl against the
    forging CA alone."""
    px = forge_proxy(ctx)
    c = ctx.raw(px.port, ca=FORGE_CA, sni="anon.lab.test")
    c.open_stream(to="anon.lab.test")
    c.starttls()  # verifies the chain and the host name anon.lab.test
    leaf = c.sock.getpeercert()
    sans = [v for k, v in leaf.get("subjectAltName", ()) if k == "DNS"]
    ctx.check(sans == ["anon.lab.test"], f"SANs {sans}")
    c.close()
    ev = px.events.wait_for(lambda e: e.get("event") == "tls" and e.get("leg") == "client")
    ctx.check(ev and ev.get("names") == ["anon.lab.test"], f"event {ev}")


@case("forge_hostile_names")
def forge_hostile_names(ctx):
    """SNI names a certificate must not carry ('*', a wildcard, an IPv4 and
    an IPv6 address, a 2 KB name, a 64-byte label, bytes that are no
    domain): each is refused with a policy event and the leaf is made for
    default_domain instead; an upper-case name is folded. Without
    default_domain the static certificate is used."""
    px = forge_proxy(ctx, default_domain="lab.test")
    hostile = ["*", "*.lab.test", "10.1.2.3", "::1", "a" * 64 + ".test",
               ".".join(["a" * 63] * 4), "bad_name.test", "a..test"]
    for name in hostile:
        rc, out, pem = s_client(px.tls_port, name, verify_host="lab.test")
        t = cert_text(pem)
        ctx.check(rc == 0 and "DNS:lab.test" in t and "CN = lab.test" in t,
                  f"SNI {name[:40]!r}: not the default_domain leaf: rc={rc} {t} {out[-300:]}")
    # the event log is written by its own thread: wait for the lines
    refused = harness.wait_until(lambda: (lambda r: r if len(r) >= len(hostile) else None)(
        px.events.find("policy", rule="forge_name")), 5) or []
    ctx.check(len(refused) >= len(hostile) - 1,
              f"{len(refused)} forge_name policy events for {len(hostile)} hostile names")
    # past what any client library sends: a 2 KB name and bytes no name has
    # (OpenSSL itself ends a handshake whose SNI is over 255 bytes or holds
    # a NUL, after the callback has refused the name: no leaf at all)
    for name, refused_by_openssl in ((b".".join([b"a" * 60] * 34), True),
                                     (b"a\xff\xfe.test", False),
                                     (b"lab.test\x00.evil", True)):
        der = hello_with_sni(px.tls_port, name)
        t = der_text(der) if der else ""
        ctx.check("CN = lab.test" in t or (refused_by_openssl and not der),
                  f"raw SNI {name[:20]!r}...: leaf {t!r}")
    ctx.check(px.alive(), "proxy died on a hostile SNI")
    details = [e.get("detail", "") for e in px.events.find("policy", rule="forge_name")]
    ctx.check(any("an IP address; using default_domain" in d for d in details)
              and any("longer than a domain" in d for d in details)
              and not any("(null)" in d for d in details), f"forge_name details: {details}")
    want = len(refused) + 3
    got = harness.wait_until(lambda: (lambda r: r if len(r) >= want else None)(
        px.events.find("policy", rule="forge_name")), 5) or []
    ctx.check(len(got) >= want, f"raw hostile SNIs not all logged ({len(got)} of {want})")
    rc, out, pem = s_client(px.tls_port, "LAB.Test", verify_host="lab.test")
    ctx.check(rc == 0 and "DNS:lab.test" in cert_text(pem), f"upper case not folded: {out[-300:]}")
    # no default_domain: the static certificate (the lab CA's)
    px2 = forge_proxy(ctx, cert=str(CERTS / "server.pem"), key=str(CERTS / "server.key"))
    rc, out, pem = s_client(px2.tls_port, "10.1.2.3", ca=CERTS / "ca.pem")
    ctx.check(rc == 0, f"static certificate not used for an IP SNI: {out[-300:]}")
    ev = px2.events.wait("policy", rule="forge_name")
    ctx.check(ev and "static" in ev.get("detail", ""), f"policy event {ev}")


@case("forge_mirror")
def forge_mirror(ctx):
    """forge_mirror: the leaf copies the subject and the names of the server's
    certificate (lab.test, *.lab.test, anon.lab.test, localhost; its IP
    entry is not copied), over Direct TLS (the client's handshake waits for
    the upstream's) and STARTTLS; real logins pass."""
    for upstream_tls in ("starttls", "direct"):
        px = forge_proxy(ctx, forge_mirror="yes", upstream_tls=upstream_tls)
        rc, out, pem = s_client(px.tls_port, "lab.test", verify_host="anon.lab.test")
        t = cert_text(pem)
        ctx.check(rc == 0, f"{upstream_tls}: s_client: {out[-400:]}")
        for n in ("DNS:lab.test", "DNS:*.lab.test", "DNS:anon.lab.test", "DNS:localhost"):
            ctx.check(n in t, f"{upstream_tls}: {n} not mirrored: {t}")
        ctx.check("127.0.0.1" not in t, f"{upstream_tls}: IP copied: {t}")
        r = ctx.client(px.tls_port, ca=FORGE_CA, direct_tls=True)
        ctx.check(r.get("ok"), f"{upstream_tls}: Direct TLS login with mirror: {r}")
        r = ctx.client(px.port, ca=FORGE_CA)
        ctx.check(r.get("ok"), f"{upstream_tls}: STARTTLS login with mirror: {r}")
        evs = client_tls_events(px)
        ctx.check(evs and all(e.get("mirrored") is True for e in evs if e.get("ok")),
                  f"{upstream_tls}: not mirrored: {evs}")
        ctx.check(any("anon.lab.test" in (e.get("names") or []) for e in evs),
                  f"{upstream_tls}: names {evs}")


@case("forge_mirror_upstream_down", prosody=None)
def forge_mirror_upstream_down(ctx):
    """forge_mirror with the server unreachable: the Direct TLS client's
    handshake, paused for the server's certificate, finishes with a plain
    forged leaf and the client hears remote-connection-failed."""
    px = forge_proxy(ctx, forge_mirror="yes", upstream_port=harness.port_refusing())
    c = ctx.raw(px.tls_port, direct_tls=True, ca=FORGE_CA, sni="lab.test")
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='lab.test' version='1.0'>")
    el = c.next_element()
    ctx.check(el is not None and "remote-connection-failed" in c.received.decode(errors="replace"),
              f"no remote-connection-failed: {c.received[-300:]!r}")
    ev = px.events.wait_for(lambda e: e.get("event") == "tls" and e.get("leg") == "client")
    ctx.check(ev and ev.get("forged") is True and not ev.get("mirrored"), f"tls {ev}")

    # a server that takes the connection and hangs up on the proxy's
    # ClientHello: the client's handshake was paused waiting for it
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)

    def serve():
        try:
            conn, _ = lsock.accept()
            conn.recv(4096)
            conn.close()
        except OSError:
            pass
    import threading
    threading.Thread(target=serve, daemon=True).start()
    px2 = forge_proxy(ctx, upstream_port=lsock.getsockname()[1], upstream_tls="direct",
                      forge_mirror="yes")
    c = ctx.raw(px2.tls_port, direct_tls=True, ca=FORGE_CA, sni="lab.test")
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='lab.test' version='1.0'>")
    c.next_element()
    ctx.check("remote-connection-failed" in c.received.decode(errors="replace"),
              f"paused handshake: no remote-connection-failed: {c.received[-300:]!r}")
    up = px2.events.wait("tls", leg="upstream")
    ctx.check(up and up.get("ok") is False, f"upstream TLS did not fail: {up}")
    lsock.close()


@case("forge_cache_bound", prosody=None)
def forge_cache_bound(ctx):
    """forge_cache = 2: a name used again at once gets the same leaf (serial);
    one pushed out by two others gets a new one; SIGHUP flushes the cache."""
    # one cache: each worker keeps its own forge_cache (workers = N), and
    # the kernel picks the worker of each connection
    px = forge_proxy(ctx, forge_cache="2", upstream_port=harness.port_refusing(), workers="1")

    def ser(name):
        rc, out, pem = s_client(px.tls_port, name, verify_host=name)
        ctx.check(rc == 0, f"{name}: {out[-300:]}")
        return serial(pem)

    a1 = ser("a.example")
    ctx.check(a1 is not None and ser("a.example") == a1, "cache hit gave another serial")
    ser("b.example")
    ser("c.example")  # a.example is the least recently used: evicted
    a2 = ser("a.example")
    ctx.check(a2 is not None and a2 != a1, "evicted leaf came back from the cache")
    ctx.check(ser("a.example") == a2, "re-made leaf not cached")
    px.reload()
    ok = harness.wait_until(lambda: px.events.find("reload", detail="ok") or None, 5)
    a3 = ser("a.example")
    ctx.check(a3 != a2, f"SIGHUP did not flush the forge cache ({ok})")

    # a new CA on SIGHUP: leaves verify against it, not the old one; a
    # reload whose key does not match is refused and the running CA kept
    ca2, key2 = px.dir / "ca2.pem", px.dir / "ca2.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=second forging CA",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                    "keyUsage=critical,keyCertSign", "-keyout", str(key2), "-out", str(ca2)],
                   capture_output=True, check=True, timeout=30)
    px.reload(forge_ca=str(ca2), forge_ca_key=str(key2))
    harness.wait_until(lambda: len(px.events.find("reload", detail="ok")) >= 2 or None, 5)
    rc, out, pem = s_client(px.tls_port, "a.example", ca=ca2, verify_host="a.example")
    ctx.check(rc == 0, f"leaf not signed by the reloaded CA: {out[-300:]}")
    rc, out, pem = s_client(px.tls_port, "a.example", ca=FORGE_CA, verify_host="a.example")
    ctx.check(rc != 0, "leaf still verifies against the old CA after the reload")
    px.reload(forge_ca=str(FORGE_CA))   # key2 does not match it
    harness.wait_until(lambda: px.events.find("reload", detail="failed") or None, 5)
    rc, out, pem = s_client(px.tls_port, "b.example", ca=ca2, verify_host="b.example")
    ctx.check(rc == 0, f"a refused reload changed the running CA: {out[-300:]}")
    # the forged keys never reach a file
    key2.unlink()
    for f in px.written_files():
        ctx.check(b"PRIVATE KEY" not in f.read_bytes(), f"a private key in {f.name}")
