"""transcript_dir (issue 11 part 4): a redacted, decrypted transcript per
session. Real Prosody and slixmpp (PLAIN after STARTTLS, SCRAM-SHA-1 over
Direct TLS), xmpp.js with SASL2 + FAST when node is there, raw clients for
the bound; harness.find_secrets on every transcript."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import harness
import raw
from cases import case, USERS, ALL_PASSWORDS, ALICE

REPORT = Path(__file__).resolve().parents[2] / "tools" / "report"
LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (client|upstream|note) "
                  r"(recv|send|-) (\d+|-) (.*)$")
# a secret element whose content is anything but one marker
LEAK = re.compile(r"<(?:[\w.-]+:)?(auth|response|challenge|success|initial-response|"
                  r"additional-data|password|digest)\b(?:[^>'\"]|'[^']*'|\"[^\"]*\")*(?<!/)>"
                  r"(?!\[redacted \d+ bytes\]</|</)")


def transcript_proxy(ctx, upstream_tls="starttls", **extra):
    px = ctx.proxy(start=False, upstream_tls=upstream_tls, **extra)
    tdir = px.dir / "transcripts"
    tdir.mkdir(mode=0o700)
    px.keys["transcript_dir"] = str(tdir)
    try:
        px.start()
    except harness.HarnessError as e:
        ctx.require(False, f"proxy did not start: {e}")
    return px, tdir


def transcript_of(ctx, px, tdir, index):
    """The index-th session's login record and its transcript's lines."""
    s = ctx.session(px, index)
    lg = s.first("login")
    ctx.require(lg is not None, f"session {s.sid}: no login event")
    name = lg.get("transcript")
    ctx.require(name, f"session {s.sid}: login event without transcript: {lg}")
    path = tdir / name
    ctx.require(path.exists(), f"{path} missing")
    # the writer thread may still hold the session's last lines: wait
    # until the file stops growing
    last = [-1]

    def settled():
        size = path.stat().st_size
        done = size == last[0]
        last[0] = size
        return done or None
    harness.wait_until(settled, 3, interval=0.1)
    return lg, path, path.read_text(errors="replace").splitlines()


def check_transcript(ctx, label, path, lines, mechanism):
    mode = stat.S_IMODE(path.stat().st_mode)
    ctx.check(mode == 0o600, f"{label}: mode {oct(mode)}")
    ctx.check(re.match(r"^\d{8}T\d{6}\.\d{3}Z-\d+\.txt$", path.name), f"{label}: name {path.name}")
    body = [ln for ln in lines if not ln.startswith("#")]
    bad = [ln for ln in body if not LINE.match(ln)]
    ctx.check(not bad, f"{label}: lines not in the format: {bad[:3]}")
    kinds = {tuple(LINE.match(ln).group(2, 3)) for ln in body if LINE.match(ln)}
    for k in (("client", "recv"), ("client", "send"), ("upstream", "recv"), ("upstream", "send")):
        ctx.check(k in kinds, f"{label}: no {k} line")
    text = "\n".join(lines)
    up_feats = [ln for ln in body if " upstream recv " in ln and "<mechanisms" in ln]
    cl_feats = [ln for ln in body if " client send " in ln and "<mechanisms" in ln]
    ctx.check(up_feats and cl_feats, f"{label}: features before and after rewriting missing")
    ctx.check(any("features follow, rewritten" in ln for ln in body), f"{label}: no rewrite note")
    ctx.check(re.search(rf"client recv \d+ <auth [^>]*mechanism=.{mechanism}.>\[redacted \d+ bytes\]</auth>", text)
              or re.search(rf"client recv \d+ .*<authenticate [^>]*mechanism=.{mechanism}", text),
              f"{label}: the client's {mechanism} auth not recorded redacted")
    ctx.check(re.search(rf"upstream send \d+ <auth [^>]*mechanism=.{mechanism}.>\[redacted", text)
              or "upstream send" in text and "<authenticate" in text,
              f"{label}: the auth the proxy forwarded not recorded")
    leaks = LEAK.findall(text)
    ctx.check(not leaks, f"{label}: secret elements with content shown: {leaks[:3]}")
    ctx.check("<message" in text and "xi-probe-" in text, f"{label}: stanzas after login not recorded")
    bad = harness.find_secrets([path], USERS["alice"], list(USERS))
    ctx.check(not bad, f"{label}: {bad}")
    for pw in ALL_PASSWORDS:
        ctx.check(pw not in text, f"{label}: a password in the transcript")


@case("transcript_login")
def transcript_login(ctx):
    """PLAIN after STARTTLS and SCRAM-SHA-1 over Direct TLS, slixmpp through
    the proxy to Prosody: each session's login record names its
    transcript (0600, a name that sorts by time), which has all four
    directions, the server's features and the rewritten ones, the auth
    with its payload replaced by a marker, the stanzas after login, and no
    form of the password nor any SASL payload (SCRAM proofs included)."""
    px, tdir = transcript_proxy(ctx)
    r = ctx.client(px.port, mech="PLAIN")
    ctx.check(r.get("ok"), f"PLAIN login: {r}")
    r = ctx.client(px.tls_port, mech="SCRAM-SHA-1", direct_tls=True)
    ctx.check(r.get("ok"), f"SCRAM login: {r}")
    lg, path, lines = transcript_of(ctx, px, tdir, 0)
    check_transcript(ctx, "PLAIN", path, lines, "PLAIN")
    text = "\n".join(lines)
    ctx.check(" client recv " in text and "<starttls" in text and "<proceed" in text,
              "PLAIN: STARTTLS not recorded")
    lg2, path2, lines2 = transcript_of(ctx, px, tdir, 1)
    check_transcript(ctx, "SCRAM", path2, lines2, "SCRAM-SHA-1")
    text2 = "\n".join(lines2)
    for part in ("<challenge", "<response", "<success"):
        ctx.check(re.search(part + r"[^>]*>\[redacted \d+ bytes\]<", text2), f"SCRAM: {part} not redacted")
    ctx.check(not re.search(r"[rsip]=[A-Za-z0-9+/]{8}", text2), "SCRAM: an attribute of a SCRAM message shown")
    ctx.check(sorted(os.listdir(tdir)) == sorted([path.name, path2.name]), f"files {os.listdir(tdir)}")
    ctx.check(path.name < path2.name, "names do not sort by time")
    # tools/report points at them
    rep = subprocess.run([sys.executable, str(REPORT), "--transcripts", str(tdir), str(px.event_log)],
                         capture_output=True, text=True, timeout=30)
    ctx.check(rep.returncode == 0 and str(path) in rep.stdout and str(path2) in rep.stdout
              and "(missing)" not in rep.stdout, f"report: {rep.stdout[-600:]} {rep.stderr[-300:]}")
    rep = subprocess.run([sys.executable, str(REPORT), "--json", "--transcripts", str(tdir),
                          str(px.event_log)], capture_output=True, text=True, timeout=30)
    rows = json.loads(rep.stdout).get("transcripts", []) if rep.returncode == 0 else []
    ctx.check([r["file"] for r in rows] == [str(path), str(path2)]
              and all(r["exists"] and r["user"] == "alice" for r in rows), f"report --json: {rows}")
    path2.unlink()
    rep = subprocess.run([sys.executable, str(REPORT), "--transcripts", str(tdir), str(px.event_log)],
                         capture_output=True, text=True, timeout=30)
    ctx.check(f"{path2} (missing)" in rep.stdout, f"report: a removed transcript not marked: {rep.stdout[-400:]}")


@case("transcript_bound", prosody=None)
def transcript_bound(ctx):
    """transcript_max = 1k against a login that says more: the file stops
    at the bound with one marker line and nothing after it, while the
    session itself goes on to its end."""
    p = ctx.prosody("default")
    px, tdir = transcript_proxy(ctx, upstream_port=p.port, transcript_max="1k")
    r = ctx.client(px.port, mech="PLAIN")
    ctx.check(r.get("ok"), f"login with a full transcript: {r}")
    lg, path, lines = transcript_of(ctx, px, tdir, 0)
    size = path.stat().st_size
    ctx.check(size <= 1024 + 200, f"transcript of {size} bytes for transcript_max 1k")
    marks = [ln for ln in lines if "transcript_max (1024 bytes) reached" in ln]
    ctx.check(len(marks) == 1 and lines[-1] == marks[0], f"marker lines {marks}, last {lines[-1:]}")
    ctx.check(lg.get("outcome") == "success", f"login {lg}")


@case("transcript_unusable_dir", prosody=None)
def transcript_unusable_dir(ctx):
    """A transcript_dir that is missing, writable by others or a file: the
    session still logs in, the login record has transcript null and
    transcript_error, and stderr says why once."""
    p = ctx.prosody("default")
    for kind in ("missing", "world-writable", "file"):
        px = ctx.proxy(upstream_port=p.port, start=False)
        d = px.dir / "t"
        if kind == "world-writable":
            d.mkdir()
            os.chmod(d, 0o777)
        elif kind == "file":
            d.write_text("")
        px.keys["transcript_dir"] = str(d)
        px.start()
        r = ctx.client(px.port, mech="PLAIN")
        ctx.check(r.get("ok"), f"{kind}: login failed: {r}")
        s = ctx.session(px, 0)
        lg = s.first("login")
        ctx.check(lg and lg.get("transcript") is None and lg.get("transcript_error"),
                  f"{kind}: login record {lg}")
        ctx.check("no transcript" in px.stderr(), f"{kind}: stderr: {px.stderr()[-300:]}")
        if kind != "file":
            ctx.check(not d.exists() or not os.listdir(d), f"{kind}: a file was written")


@case("transcript_sasl2_fast", prosody="fast")
def transcript_sasl2_fast(ctx):
    """xmpp.js with SASL2 and FAST through the proxy to Prosody (the fast
    cases' set-up): the transcripts of the password login and of the token
    login have the SASL2 exchange with its initial-response, success
    (additional-data, the token) redacted: no token and no password."""
    import cases_fast_real as fr
    fr.need_xmppjs(ctx)
    out = fr.Outputs(ctx)
    tokens = []
    try:
        px, tdir = transcript_proxy(ctx)
        r, tokens = fr.fast_login(ctx, out, "transcript", px.port)
        ctx.check(r.get("ok"), f"fast logins: {r.get('error')}")
        ctx.check(tokens, "no token issued")
        files = []
        for i in range(2):
            lg, path, lines = transcript_of(ctx, px, tdir, i)
            text = "\n".join(lines)
            files.append(path)
            ctx.check("<authenticate" in text and "<initial-response>[redacted" in text,
                      f"session {i}: SASL2 authenticate not recorded redacted")
            ctx.check(not fr_leak(text), f"session {i}: secret content shown")
        fr.no_secrets(ctx, files, tokens)
    finally:
        tokens = None
        out.remove()


def fr_leak(text):
    return LEAK.findall(text)
