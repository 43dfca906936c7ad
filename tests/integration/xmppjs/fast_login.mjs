// tests/integration/xmppjs/fast_login.mjs: two logins with xmpp.js
// (@xmpp/client 0.14.0, pinned by package-lock.json beside this file), as
// a client of today does them, for cases_fast_real.py:
//   1. SASL2 + Bind2 with the password, asking for a FAST token
//      (XEP-0484 <request-token>); the server's <token> is kept
//   2. a new connection with no password at all: SASL2 with the token
//      (HT-SHA-256-NONE and <fast/>), Bind2 again
// Both use one user-agent id: a FAST token is bound to it.
//
// Run from the directory the suite installs it into (build/xmppjs, where
// node_modules is), with the lab CA in NODE_EXTRA_CA_CERTS:
//   node fast_login.mjs [--token-fd N] < config.json
// config: {"host", "port", "direct_tls", "domain", "username", "password",
//          "resource", "timeout_ms"} on standard input (so the password is
// in no argument list). Prints one JSON line on stdout and exits 0 if both
// logins did what they should, 1 otherwise:
//   {"ok": bool, "error": ..., "logins": [{"mechanism", "fast_offered",
//    "sasl2_mechanisms", "bind2_offered", "token_requested",
//    "token_received", "fast_used", "jid", "rfc6120_bind", "error" (why
//    it did not get online), "errors" (every error event)}, ...]}
// The token itself is secret: it is kept in this process's memory only
// and never printed on stdout or stderr. With --token-fd N it is written,
// one per line, to file descriptor N, a pipe the test reads into memory so
// it can search every file the run produced for it; nothing else gets it.

import fs from "node:fs";
import { randomUUID } from "node:crypto";
import { client, xml } from "@xmpp/client";

const NS_STREAM = "http://etherx.jabber.org/streams";
const NS_SASL2 = "urn:xmpp:sasl:2";
const NS_FAST = "urn:xmpp:fast:0";
const NS_BIND2 = "urn:xmpp:bind:0";
const NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind";

const argv = process.argv.slice(2);
const tokenFd = argv[0] === "--token-fd" ? Number(argv[1]) : null;
const cfg = JSON.parse(fs.readFileSync(0, "utf8"));
const secrets = [cfg.password].filter(Boolean);

// The token lives here, between the two connections, and nowhere else.
let memToken = null;
const userAgent = xml("user-agent", { id: randomUUID() }, [
  xml("software", {}, "xmpp-inspect integration tests"),
  xml("device", {}, "fast_login.mjs"),
]);

// Error texts go to stdout in the JSON line: never with a secret in them.
function redact(text) {
  let s = String(text);
  for (const secret of [...secrets, memToken?.token].filter(Boolean)) {
    s = s.split(secret).join("[redacted]");
  }
  return s.slice(0, 500);
}

// xmpp.js 0.14's iq caller attaches its handler for the reply only once
// its own write has completed (IQCaller.request awaits entity.send first);
// when the reply comes sooner -- seen under load on Direct TLS -- the
// rejection for the refused RFC 6120 bind (see "error" below) has no
// handler yet and node 20 would end the process for it. It is the same
// error the "error" event reports a moment later: record it and go on.
let current = null; // the login under way
process.on("unhandledRejection", (err) => {
  const text = redact(err?.condition ? `${err.condition}: ${err.message}` : err);
  if (current) current.errors.push(text);
  else process.stderr.write(`unhandled rejection between logins: ${text}\n`);
});

function giveToken(token) {
  if (tokenFd === null || !token?.token) return;
  fs.writeSync(tokenFd, token.token + "\n");
}

async function login(password) {
  const rec = {
    mechanism: null,
    sasl2_mechanisms: null,
    fast_offered: null,
    bind2_offered: false,
    token_requested: false,
    token_received: false,
    fast_used: false,
    jid: null,
    rfc6120_bind: false,
    error: null,
    errors: [],
  };
  current = rec;
  const scheme = cfg.direct_tls ? "xmpps" : "xmpp";
  const xmpp = client({
    service: `${scheme}://${cfg.host}:${cfg.port}`,
    domain: cfg.domain,
    username: cfg.username,
    password,
    resource: cfg.resource || "xi-fast",
    userAgent,
    timeout: cfg.timeout_ms || 5000,
  });
  xmpp.reconnect.stop(); // one attempt: a failure is the result
  // Direct TLS: name the domain (SNI, certificate check) although the
  // address is 127.0.0.1, as STARTTLS does (@xmpp/starttls uses the domain).
  const socketParameters = xmpp.socketParameters.bind(xmpp);
  xmpp.socketParameters = (service) => {
    const p = socketParameters(service);
    if (p && cfg.direct_tls) p.servername = cfg.domain;
    return p;
  };
  // FAST token storage: this process's memory (xmpp.js keeps it per client
  // object by default, and the second login is a new client object).
  xmpp.fast.fetchToken = async () => memToken;
  xmpp.fast.saveToken = async (t) => {
    memToken = t;
    rec.token_received = true;
    giveToken(t);
  };
  xmpp.fast.deleteToken = async () => {
    memToken = null;
  };

  // Every error event, for the record: with Prosody 0.12 xmpp.js also
  // tries an RFC 6120 bind after the Bind2 one (0.12 still lists <bind/>
  // in the post-login features) and gets an iq error, reported here; after
  // a token login that can come before "online" (xmpp.js checks the
  // server's HMAC asynchronously and reads the features meanwhile).
  xmpp.on("error", (err) => {
    rec.errors.push(redact(err?.condition ? `${err.condition}: ${err.message}` : err));
  });
  xmpp.on("online", (jid) => {
    rec.jid = String(jid);
  });
  xmpp.on("send", (el) => {
    if (el.is("iq") && el.getChild("bind", NS_BIND)) rec.rfc6120_bind = true;
    if (!el.is("authenticate", NS_SASL2)) return;
    rec.mechanism = el.attrs.mechanism;
    rec.token_requested = !!el.getChild("request-token", NS_FAST);
    rec.fast_used = !!el.getChild("fast", NS_FAST);
  });
  xmpp.on("element", (el) => {
    if (!el.is("features", NS_STREAM)) return;
    const auth = el.getChild("authentication", NS_SASL2);
    if (!auth) return;
    rec.sasl2_mechanisms = auth.getChildren("mechanism", NS_SASL2).map((m) => m.text());
    const inline = auth.getChild("inline", NS_SASL2);
    const fast = inline?.getChild("fast", NS_FAST);
    rec.fast_offered = fast ? fast.getChildren("mechanism", NS_FAST).map((m) => m.text()) : [];
    rec.bind2_offered = !!inline?.getChild("bind", NS_BIND2);
  });

  // Online is the "online" event (Bind2's <bound/>), not start()'s promise:
  // that one is rejected by any error event, the iq error above included.
  // A StanzaError (an iq answered with an error) ends nothing; any other
  // error before "online", the connection's end or the deadline does.
  let timer;
  const outcome = await new Promise((resolve) => {
    timer = setTimeout(() => resolve(new Error("timed out")), cfg.timeout_ms || 5000);
    xmpp.once("online", () => resolve(null));
    xmpp.once("disconnect", () => resolve(new Error("disconnected before online")));
    xmpp.start().catch((err) => {
      if (err?.name !== "StanzaError") resolve(err);
    });
  });
  clearTimeout(timer);
  if (outcome) rec.error = redact(outcome.condition ? `${outcome.condition}: ${outcome.message}` : outcome);
  try {
    if (xmpp.status !== "offline") await xmpp.stop();
  } catch {
    // the result is already recorded
  }
  return rec;
}

const out = { ok: false, logins: [] };
try {
  const first = await login(cfg.password);
  out.logins.push(first);
  if (!memToken) {
    out.error = first.error || "first login: no FAST token received";
  } else {
    const second = await login(undefined);
    out.logins.push(second);
    if (!second.jid) out.error = `second login: ${second.error || "not online"}`;
    else if (second.mechanism !== "HT-SHA-256-NONE" || !second.fast_used)
      out.error = `second login used ${second.mechanism} (fast: ${second.fast_used})`;
    else if (!first.jid) out.error = `first login: ${first.error || "not online"}`;
    else out.ok = true;
  }
} catch (err) {
  out.error = redact(err?.stack || err);
}
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(out.ok ? 0 : 1);
