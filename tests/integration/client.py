#!/usr/bin/python3
"""A real XMPP client login (slixmpp), run as a subprocess by the tests.

Logs in, binds a resource, sends one message to its own full JID, waits for
it to come back, closes the stream, and prints exactly one JSON line:
  {"ok": true, "jid": "user@lab.test/res", "mechanism": "PLAIN", "ms": 42}
  {"ok": false, "error": "sasl failure: not-authorized", "condition": "not-authorized",
   "stage": "auth", ...}
Exit status 0 on ok, 1 otherwise. Diagnostics go to stderr (--debug for all
of slixmpp's).

Run it with /usr/bin/python3 (Debian's python3-slixmpp 1.8.3).
"""

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import time
from pathlib import Path

import slixmpp
from slixmpp.util.sasl import mechanisms as sasl_mechanisms


def _patch_scram_final_challenge():
    """slixmpp 1.8.3 bug: when the SCRAM server-final message (v=...) comes in
    a <challenge> and <success/> is empty (legal, RFC 6120 6.3.10; Prosody with
    Cyrus does it), slixmpp runs its last SCRAM step again on the empty data
    and raises ValueError. The signature was already checked, so an empty
    final step after mutual authentication is a no-op."""
    orig = sasl_mechanisms.SCRAM.process_3

    def process_3(self, challenge=b""):
        if not challenge and getattr(self, "_mutual_auth", False):
            return b""
        return orig(self, challenge)

    sasl_mechanisms.SCRAM.process_3 = process_3


_patch_scram_final_challenge()


class Client(slixmpp.ClientXMPP):
    def __init__(self, args):
        jid = args.jid
        super().__init__(jid, args.password, sasl_mech=args.mech)
        self.args = args
        self.result = None
        self.stage = "connect"
        self.mechanism = None
        self.token = "xi-probe-%d-%d" % (os.getpid(), int(time.time() * 1000))
        self.t0 = time.monotonic()
        self.done = asyncio.get_event_loop().create_future()
        self.whitespace_keepalive = False
        self.closing = False

        # slixmpp takes the TLS server name from the address it connects to;
        # for an IP address that is '' which means no SNI and no hostname
        # check at all. Name the JID's domain, as a real client does.
        self.default_domain = args.sni or self.boundjid.domain
        if args.ca and not args.insecure:
            self.ca_certs = Path(args.ca)
        if args.insecure:
            self.ssl_context.check_hostname = False
            self.ssl_context.verify_mode = ssl.CERT_NONE

        mechs = self.plugin["feature_mechanisms"]
        if args.no_tls:
            # A client that never upgrades: allow every mechanism in clear.
            for k in ("unencrypted_plain", "unencrypted_digest", "unencrypted_cram",
                      "unencrypted_scram"):
                mechs.config[k] = True
                setattr(mechs, k, True)

        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("failed_all_auth", self.on_failed_all_auth)
        self.add_event_handler("auth_success", self.on_auth_success)
        self.add_event_handler("stream_error", self.on_stream_error)
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("ssl_invalid_chain", self.on_invalid_chain)
        self.add_event_handler("tls_success", lambda _: self.set_stage("tls-done"))
        self.add_event_handler("session_bind", self.on_bind)

    def disconnect(self, *args, **kwargs):
        """Closes the stream once. slixmpp 1.8.3 sends another
        </stream:stream> on every call (it calls disconnect itself after a
        SASL failure too), and bytes after the end of the stream are not
        well-formed XML: a strict peer rightly reports them."""
        if self.closing and self.transport is not None:
            fut = asyncio.get_event_loop().create_future()
            fut.set_result(None)
            return fut
        self.closing = True
        return super().disconnect(*args, **kwargs)

    # No DNS: the tests give the address; slixmpp would still look up the
    # JID's domain (and wait for a resolver that is not there).
    async def get_dns_records(self, domain, port=None):
        return [(domain, self.args.host, self.args.port)]

    def set_stage(self, stage):
        self.stage = stage

    def finish(self, ok, **fields):
        if self.result is None:
            self.result = {"ok": ok, **fields}
            if not ok:
                self.result.setdefault("stage", self.stage)
            self.result["ms"] = int((time.monotonic() - self.t0) * 1000)
        if not self.done.done():
            self.done.set_result(True)

    def fail(self, error, **fields):
        self.finish(False, error=error, **fields)
        self.disconnect()

    def on_auth_success(self, stanza):
        self.set_stage("bind")
        mech = self.plugin["feature_mechanisms"].mech
        self.mechanism = getattr(mech, "name", None)

    def on_bind(self, jid):
        self.set_stage("session")

    async def on_session_start(self, event):
        self.set_stage("message")
        msg = self.make_message(mto=self.boundjid.full, mbody=self.token, mtype="chat")
        msg.send()

    def on_message(self, msg):
        if msg["body"] == self.token:
            self.set_stage("close")
            self.finish(True, jid=str(self.boundjid.full), mechanism=self.mechanism)
            self.disconnect()

    def on_failed_auth(self, stanza):
        try:
            condition = stanza["condition"]
            text = stanza["text"]
        except (KeyError, TypeError):
            condition, text = None, None
        self.fail(f"sasl failure: {condition}", condition=condition, text=text or None,
                  stage="auth")

    def on_failed_all_auth(self, event):
        # Reached without failed_auth when no offered mechanism was usable
        # (the forced one was not offered).
        self.fail("no usable SASL mechanism offered", stage="auth")

    def on_stream_error(self, error):
        condition = error["condition"]
        self.fail(f"stream error: {condition}", condition=condition,
                  text=error["text"] or None, stream_error=True)

    def on_connection_failed(self, error):
        self.fail(f"connection failed: {error}")

    def on_invalid_chain(self, error):
        self.fail(f"certificate verification failed: {error}", stage="tls")

    def on_disconnected(self, reason):
        if self.result is None:
            self.fail(f"disconnected during {self.stage}: {reason}")
        elif not self.done.done():
            self.done.set_result(True)


async def login(args):
    client = Client(args)
    client.connect((args.host, args.port), use_ssl=args.direct_tls,
                   force_starttls=not args.no_tls and not args.direct_tls,
                   disable_starttls=args.no_tls or args.direct_tls)
    # connect() takes an IPv6 literal (which inet_aton refuses) for the TLS
    # server name; the connection starts later, so name the domain again
    client.default_domain = args.sni or client.boundjid.domain
    try:
        await asyncio.wait_for(asyncio.shield(client.done), args.timeout)
    except asyncio.TimeoutError:
        client.finish(False, error=f"timeout after {args.timeout}s during {client.stage}")
    # Let the closing </stream:stream> and TCP shutdown go out, bounded.
    if client.transport is not None:
        client.disconnect(wait=1.0)
        try:
            await asyncio.wait_for(asyncio.shield(client.disconnected), 3.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
    client.abort()
    return client.result or {"ok": False, "error": "no outcome"}


async def run(args):
    """One login, or --count logins at once in this process (cheaper than
    that many interpreters): then ok is true only if all succeeded."""
    if args.count <= 1:
        return await login(args)
    results = await asyncio.gather(*(login(args) for _ in range(args.count)))
    failed = [r for r in results if not r.get("ok")]
    out = {"ok": not failed, "results": results}
    if failed:
        out["error"] = f"{len(failed)}/{len(results)} failed: {failed[0].get('error')}"
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--jid", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5222)
    p.add_argument("--mech", help="force one SASL mechanism (no fallback to another)")
    p.add_argument("--direct-tls", action="store_true", help="TLS from the first byte (XEP-0368)")
    p.add_argument("--no-tls", action="store_true", help="never STARTTLS; allow every mechanism in clear")
    p.add_argument("--ca", help="CA file to verify the server with (else the system store)")
    p.add_argument("--sni", help="TLS server name to send and verify (default: the JID's domain)")
    p.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    p.add_argument("--anonymous", action="store_true", help="SASL ANONYMOUS on the JID's domain")
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--count", type=int, default=1, help="this many concurrent logins")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    if args.anonymous:
        args.mech = "ANONYMOUS"
        args.jid = args.jid.split("@")[-1].split("/")[0]
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        result = loop.run_until_complete(run(args))
    except Exception as e:  # a harness bug or a slixmpp crash: still one line
        result = {"ok": False, "error": f"client exception: {type(e).__name__}: {e}"}
    # slixmpp leaves its filter task pending; cancel it quietly.
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    if result is None:
        result = {"ok": False, "error": "no outcome"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
