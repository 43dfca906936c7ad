"""SASL2 + Bind2 + FAST as today's clients use them, with real parts only:
Prosody 0.12.3 with prosody-modules' mod_sasl2, mod_sasl2_bind2 and
mod_sasl2_fast (the Prosody variant "fast"; prosody-plugins/ says what its
copies change for 0.12) and xmpp.js (@xmpp/client 0.14.0 from the npm
registry, pinned by xmppjs/package-lock.json, installed into build/xmppjs).

xmppjs/fast_login.mjs logs in twice in one node process: SASL2 with the
password, asking for a FAST token, Bind2; then a new connection with no
password, SASL2 with the token (HT-SHA-256-NONE). The token stays in that
process's memory; it reaches this test only through a pipe (never a file),
so every file the case produced -- event log, proxy stderr and key log,
Prosody's log, the client's output -- can be searched for it, and for the
password. (Prosody's own token store in its data directory holds it, as a
server must.)

  fast_real_direct_prosody   the baseline: the same two logins straight to
                             Prosody's STARTTLS and Direct TLS ports, and
                             Prosody offers FAST only to a stream header
                             with from (the rule the proxy must keep)
  fast_real_proxy_starttls   through the proxy's STARTTLS port
  fast_real_proxy_direct_tls through the proxy's Direct TLS port

Through the proxy the client must see what it saw without it (same
mechanisms, FAST offered, token issued, token login, a bound JID) and the
event log must tell the story: features with fast and bind2 inline, the
password auth with fast_request, login fast=issued, then the token auth
(HT-SHA-256-NONE) and login fast=used.

If node or npm is missing, or npm cannot reach the registry, the cases SKIP
saying so.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import harness
import raw
from cases import ALICE, DOMAIN, USERS, case

HT_NONE = "HT-SHA-256-NONE"
LEGACY_BIND_ERROR = "service-unavailable: service-unavailable"
SRC = harness.HERE / "xmppjs"
DEST = harness.REPO / "build" / "xmppjs"
PACKAGE_FILES = ("package.json", "package-lock.json", ".npmrc")
SCRIPT = "fast_login.mjs"
STAMP = ".xi-installed"
NODE_MIN = (20, 10)  # @xmpp/client 0.14's engines
# npm's words for "the registry cannot be reached" (errno codes it prints)
NETWORK_ERRORS = re.compile(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|"
                            r"EHOSTUNREACH|network|proxy|socket hang up|request to .* failed", re.I)

_installed = None  # (status, why) after the first attempt: "ok", "skip" or "fail"


def _package_digest():
    h = hashlib.sha256()
    for name in PACKAGE_FILES:
        h.update(name.encode() + b"\0" + (SRC / name).read_bytes() + b"\0")
    return h.hexdigest()


def npm_reason(err):
    """npm's own one-line reason (its "code" and the first FetchError or
    other message line), addresses left out."""
    lines = [re.sub(r"^npm (error|ERR!) ?", "", line).strip() for line in err.splitlines()]
    lines = [line for line in lines if line]
    code = next((line for line in lines if line.startswith("code ")), "")
    msg = next((line for line in lines if not re.match(r"(code|syscall|errno|at) ", line)), "")
    text = re.sub(r"\w+://\S+", "<url>", f"{code}: {msg}" if code else msg)
    return text[:300] or " ".join(err.split())[-300:]


def ensure_xmppjs():
    """The pinned xmpp.js in build/xmppjs, installed with `npm ci` when what
    is there was not installed from the current package files (a stamp of
    their digest), else left alone (~1 ms). The script is copied beside its
    node_modules each time. Returns (status, why): "ok", "skip" (node or npm
    missing, or the registry unreachable) or "fail"."""
    global _installed
    if _installed is not None:
        return _installed
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _installed = ("skip", f"{'node' if node is None else 'npm'} not installed (xmpp.js needs node >= 20.10 and npm)")
        return _installed
    try:
        v = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        if tuple(int(x) for x in v.lstrip("v").split(".")[:2]) < NODE_MIN:
            _installed = ("skip", f"node {v} is older than @xmpp/client 0.14 needs (20.10)")
            return _installed
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        _installed = ("skip", f"node --version: {e}")
        return _installed
    digest = _package_digest()
    stamp = DEST / STAMP
    have = (DEST / "node_modules" / "@xmpp" / "client" / "package.json").exists()
    if not (have and stamp.exists() and stamp.read_text().strip() == digest):
        # Install beside, then swap, so an interrupted install leaves no
        # half tree that the stamp would vouch for.
        tmp = DEST.parent / f"xmppjs.new-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in PACKAGE_FILES:
            shutil.copy(SRC / name, tmp / name)
        cmd = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", "--fetch-retries=1",
               "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=10000", "--fetch-timeout=30000"]
        try:
            r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=240,
                               stdin=subprocess.DEVNULL)
            rc, err = r.returncode, (r.stderr or "") + (r.stdout or "")
        except subprocess.TimeoutExpired:
            rc, err = -1, "npm ci: no answer within 240 s (network)"
        if rc != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            last = npm_reason(err)
            if NETWORK_ERRORS.search(err):
                _installed = ("skip", f"npm cannot reach the registry to install @xmpp/client: {last}")
            else:
                _installed = ("fail", f"npm ci of tests/integration/xmppjs failed (status {rc}): {last}")
            return _installed
        (tmp / STAMP).write_text(digest + "\n")
        shutil.rmtree(DEST, ignore_errors=True)
        tmp.rename(DEST)
    src = (SRC / SCRIPT).read_bytes()
    if not (DEST / SCRIPT).exists() or (DEST / SCRIPT).read_bytes() != src:
        (DEST / SCRIPT).write_bytes(src)
    _installed = ("ok", "")
    return _installed


def need_xmppjs(ctx):
    status, why = ensure_xmppjs()
    if status == "skip":
        ctx.skip(why)
    ctx.require(status == "ok", why)


class Outputs:
    """A temporary directory for what the case's clients printed (stdout and
    stderr: files to search for the secrets like the proxy's), removed at
    the end unless --keep."""

    def __init__(self, ctx):
        self.dir = Path(tempfile.mkdtemp(prefix=f"xi-{ctx.case.name}-client-"))
        self.keep = ctx.runner.keep
        self.files = []

    def write(self, name, text):
        path = self.dir / name
        path.write_text(text)
        self.files.append(path)

    def remove(self):
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def fast_login(ctx, out, label, port, direct_tls=False, timeout=15.0):
    """Runs fast_login.mjs against port (alice's two logins). Returns
    (result dict, tokens): the tokens the server issued, read from a pipe
    into this process only. The client's stdout and stderr go to out."""
    cfg = {"host": "127.0.0.1", "port": port, "direct_tls": bool(direct_tls), "domain": DOMAIN,
           "username": "alice", "password": USERS["alice"], "resource": "xi-fast",
           "timeout_ms": 5000}
    rd, wr = os.pipe()
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(harness.CA))
    try:
        p = subprocess.Popen(["node", SCRIPT, "--token-fd", str(wr)], cwd=DEST, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             pass_fds=(wr,), text=True, start_new_session=True)
    except OSError as e:
        os.close(rd)
        os.close(wr)
        ctx.require(False, f"{label}: node did not start: {e}")
    os.close(wr)
    try:
        stdout, stderr = p.communicate(json.dumps(cfg), timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        stdout, stderr = p.communicate()
        stderr += f"\n(killed after {timeout} s)"
    chunks = []
    while True:
        chunk = os.read(rd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rd)
    tokens = [t for t in b"".join(chunks).decode("utf-8", "replace").split("\n") if t]
    out.write(f"{label}.stdout", stdout)
    out.write(f"{label}.stderr", stderr)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"ok": False, "error": f"no JSON line from fast_login.mjs (status {p.returncode})",
                  "logins": []}
    result["status"] = p.returncode
    if not result.get("ok"):
        note = f"{label}: {json.dumps(result)}\n{label} stderr: {stderr[-2000:]}"
        for secret in tokens + [USERS["alice"]]:
            note = note.replace(secret, "[redacted]")
        ctx.note(note)
    return result, tokens


def logins_ok(ctx, label, r, tokens):
    """What a good run is, whoever is between: a password login that asked
    for a token and got one, then a token login with no password, both
    bound to alice. Returns the run's "shape" (for comparing runs)."""
    logins = r.get("logins") or []
    ctx.check(r.get("ok") and r.get("status") == 0,
              f"{label}: fast_login.mjs failed: {r.get('error')} (status {r.get('status')})")
    ctx.check(tokens, f"{label}: no token came through the pipe")
    if len(logins) < 2:
        ctx.check(False, f"{label}: {len(logins)} logins ran, want 2: {logins}")
        return None
    first, second = logins[0], logins[1]
    ctx.check(first.get("mechanism") not in (None, HT_NONE), f"{label}: first login used {first.get('mechanism')!r}")
    ctx.check(HT_NONE in (first.get("fast_offered") or []),
              f"{label}: first login: FAST offered {first.get('fast_offered')!r}, want {HT_NONE}")
    ctx.check(first.get("bind2_offered"), f"{label}: first login: no Bind2 offered")
    ctx.check(first.get("token_requested"), f"{label}: first login asked for no token")
    ctx.check(first.get("token_received"), f"{label}: first login got no token")
    ctx.check(not first.get("fast_used"), f"{label}: first login used FAST")
    ctx.check(second.get("mechanism") == HT_NONE and second.get("fast_used"),
              f"{label}: second login used {second.get('mechanism')!r} (fast {second.get('fast_used')!r}), "
              f"want {HT_NONE} with <fast/>")
    for n, lg in (("first", first), ("second", second)):
        ctx.check(str(lg.get("jid") or "").startswith(ALICE + "/"),
                  f"{label}: {n} login bound {lg.get('jid')!r}, want {ALICE}/...")
        ctx.check(lg.get("error") is None, f"{label}: {n} login error {lg.get('error')!r}")
        # Prosody 0.12 lists <bind/> in the features after a Bind2 login
        # too; xmpp.js then also sends an RFC 6120 bind, which is refused
        # (service-unavailable): the one error event a good run has.
        known = {LEGACY_BIND_ERROR} if lg.get("rfc6120_bind") else set()
        ctx.check(set(lg.get("errors") or []) <= known, f"{label}: {n} login errors {lg.get('errors')!r}")
    return shape(r)


def shape(r):
    """What the client saw, without what differs between runs anyway
    (resource suffixes, mechanism order)."""
    return [{"mechanism": lg.get("mechanism"),
             "sasl2_mechanisms": sorted(lg.get("sasl2_mechanisms") or []),
             "fast_offered": sorted(lg.get("fast_offered") or []),
             "bind2_offered": lg.get("bind2_offered"),
             "token_requested": lg.get("token_requested"),
             "token_received": lg.get("token_received"),
             "fast_used": lg.get("fast_used"),
             "rfc6120_bind": lg.get("rfc6120_bind"),
             "errors": sorted(set(lg.get("errors") or [])),
             "bare_jid": str(lg.get("jid") or "").split("/")[0]}
            for lg in r.get("logins") or []]


def secret_forms(tokens):
    forms = {}
    for t in tokens:
        b = t.encode()
        forms[b] = "the FAST token"
        forms[base64.b64encode(b)] = "the FAST token (base64)"
        forms[b.hex().encode()] = "the FAST token (hex)"
    for form in harness.secret_forms(USERS["alice"], list(USERS)):
        forms[form] = "alice's password"
    return forms


def no_secrets(ctx, files, tokens):
    """No token (raw, base64, hex) and no form of the password in files."""
    forms = secret_forms(tokens)
    bad = []
    for f in files:
        try:
            data = Path(f).read_bytes()
        except OSError:
            continue
        for form, what in forms.items():
            if form in data:
                bad.append(f"{Path(f).name} ({f}) has {what}")
                break
    ctx.check(not bad, "secret in a file the case produced: " + "; ".join(sorted(set(bad))))


def prosody_files(p):
    return [p.log, p.dir / "prosody.stderr"]


_baseline = {}  # Prosody's dir -> the shape of a good direct run (no secret in it)


def baseline(ctx, out, p, label="direct"):
    """The shape of the two logins straight to Prosody's STARTTLS port:
    they must work before anything is asked of the proxy. The run of
    fast_real_direct_prosody against this same server is reused (an
    xmpp.js SCRAM login costs ~0.8 s of CPU); else it runs here.
    Returns (shape, tokens)."""
    if str(p.dir) in _baseline:
        return _baseline[str(p.dir)], []
    r, tokens = fast_login(ctx, out, label, p.port)
    sh = logins_ok(ctx, f"{label} to Prosody", r, tokens)
    ctx.require(sh is not None and not ctx.problems,
                "the baseline (xmpp.js straight to Prosody) failed, so nothing is proved through the proxy")
    _baseline[str(p.dir)] = sh
    return sh, tokens


# ================================================================ cases


@case("fast_real_direct_prosody", prosody="fast", proxy=False)
def fast_real_direct_prosody(ctx):
    """The baseline, no proxy: xmpp.js logs in to Prosody (SASL2, Bind2,
    password, token requested and issued), then again with the token alone
    (HT-SHA-256-NONE), on Prosody's STARTTLS port and on its Direct TLS
    port; Prosody offers FAST only when the stream header has from."""
    need_xmppjs(ctx)
    p = ctx.prosody()
    out = Outputs(ctx)
    tokens = []
    try:
        r, t = fast_login(ctx, out, "starttls", p.port)
        tokens += t
        sh = logins_ok(ctx, "STARTTLS to Prosody", r, t)
        r2, t = fast_login(ctx, out, "direct-tls", p.tls_port, direct_tls=True)
        tokens += t
        sh2 = logins_ok(ctx, "Direct TLS to Prosody", r2, t)
        ctx.check(sh == sh2, f"Prosody's STARTTLS and Direct TLS ports differ:\n  {sh}\n  {sh2}")
        ctx.check(len(set(tokens)) == len(tokens), "the same token issued twice")
        if sh is not None and not ctx.problems:
            _baseline[str(p.dir)] = sh  # the proxied cases compare with it
        # The rule the proxy must keep: no from, no FAST (a raw client).
        for frm in (ALICE, None):
            c = ctx.raw(p.port)
            c.open_stream()
            c.starttls()
            attr = f" from='{frm}'" if frm else ""
            c.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{raw.NS_STREAM}' "
                   f"to='{DOMAIN}'{attr} version='1.0' xml:lang='en'>")
            f = c.next_element()
            ctx.require(f is not None and raw.local(f.tag) == "features",
                        f"from={frm!r}: no post-TLS features: {c.describe(f)}")
            fast = f.find("{urn:xmpp:sasl:2}authentication/{urn:xmpp:sasl:2}inline/{urn:xmpp:fast:0}fast")
            if frm:
                ctx.check(fast is not None, f"Prosody offers no FAST to a header with from={frm}: {c.describe(f)}")
            else:
                ctx.check(fast is None, f"Prosody offers FAST to a header without from: {c.describe(f)}")
            c.close()
    finally:
        # also after a failure: a leak is worth knowing about either way
        no_secrets(ctx, out.files + prosody_files(p), tokens)
        tokens = None
        out.remove()


def through_proxy(ctx, direct_tls):
    need_xmppjs(ctx)
    p = ctx.prosody()
    out = Outputs(ctx)
    tokens = []
    label = "proxy-direct-tls" if direct_tls else "proxy-starttls"
    try:
        want, t = baseline(ctx, out, p)
        tokens += t
        px = ctx.proxy()
        r, t = fast_login(ctx, out, label, px.tls_port if direct_tls else px.port, direct_tls=direct_tls)
        tokens += t
        got = logins_ok(ctx, f"through the proxy ({'Direct TLS' if direct_tls else 'STARTTLS'})", r, t)
        if got is not None:
            ctx.check(got == want, f"the client saw something else through the proxy:\n  direct: {want}\n"
                                   f"  proxy:  {got}")
        logins = r.get("logins") or []

        # The password login, session #0
        s = ctx.session(px, 0)
        s.expect(ctx, "connect", port_kind="direct_tls" if direct_tls else "starttls")
        feats = [f for f in s.all("features") if not f.get("authenticated") and "inline" in f]
        ctx.check(any({"fast", "bind2"} <= set(f.get("inline") or []) for f in feats),
                  f"no features event with fast and bind2 inline: {s.all('features')}")
        a = [e for e in s.all("auth") if e.get("fast_request")]
        if ctx.check(a, f"no auth event with fast_request: {s.all('auth')}"):
            ctx.check(a[0].get("fast_request") == HT_NONE, f"auth fast_request {a[0].get('fast_request')!r}")
            if logins:
                ctx.check(a[0].get("mechanism") == logins[0].get("mechanism"),
                          f"auth mechanism {a[0].get('mechanism')!r}, the client used {logins[0].get('mechanism')!r}")
        lg = s.expect(ctx, "login", outcome="success")
        if lg:
            ctx.check(lg.get("fast") == "issued", f"password login: login fast {lg.get('fast')!r}, want 'issued'")
        if logins and logins[0].get("jid"):
            s.expect(ctx, "bind", jid=logins[0]["jid"])
        s.expect_order(ctx, "connect", "features", "auth", ("login", {"outcome": "success"}), "close")

        # The token login, session #1: no password anywhere in it
        s = ctx.session(px, 1)
        s.expect(ctx, "auth", mechanism=HT_NONE)
        lg = s.expect(ctx, "login", outcome="success")
        if lg:
            ctx.check(lg.get("fast") == "used", f"token login: login fast {lg.get('fast')!r}, want 'used'")
            ctx.check(lg.get("mechanism") == HT_NONE, f"token login: login mechanism {lg.get('mechanism')!r}")
        if len(logins) > 1 and logins[1].get("jid"):
            s.expect(ctx, "bind", jid=logins[1]["jid"])
        s.expect_order(ctx, "connect", ("auth", {"mechanism": HT_NONE}), ("login", {"outcome": "success"}), "close")
    finally:
        # also after a failure; the proxy stopped first, so its logs are whole
        files = out.files + prosody_files(p)
        for px in ctx.proxies:
            px.stop()
            files += px.written_files()
        no_secrets(ctx, files, tokens)
        tokens = None
        out.remove()


@case("fast_real_proxy_starttls", prosody="fast")
def fast_real_proxy_starttls(ctx):
    """xmpp.js through the proxy's STARTTLS port to Prosody: the password
    login with a token requested, the token issued, then a token login
    (HT-SHA-256-NONE, no password) -- the client sees what it sees without
    the proxy; the event log has the FAST offer, fast_request, fast=issued,
    the token auth and fast=used; no token or password in any file."""
    through_proxy(ctx, direct_tls=False)


@case("fast_real_proxy_direct_tls", prosody="fast")
def fast_real_proxy_direct_tls(ctx):
    """The same through the proxy's Direct TLS port (XEP-0368)."""
    through_proxy(ctx, direct_tls=True)
