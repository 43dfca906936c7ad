"""The benchmark's own parts, briefly (issue 14): the C load generator
(tools/loadgen.c) logs in through the proxy to the real Prosody and to the
fast upstream (tools/fastupstream.c), and tells failures apart. The
benchmark itself (tools/bench --compare) is not part of the suite.
"""

import json
import os
import socket
import subprocess
import threading

import harness
from cases import USERS, case

TOOLS = harness.REPO / "build" / "release" / "tools"
LOADGEN = TOOLS / "loadgen"
FASTUP = TOOLS / "fastupstream"


def loadgen(ctx, port, password, *extra, timeout=60):
    """Runs the load generator; returns (exit status, its JSON result)."""
    argv = [str(LOADGEN), "--port", str(port), "--user", "alice", "--password", password,
            "--ca", str(harness.CA), "--timeout", "10"] + [str(a) for a in extra]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    lines = r.stdout.strip().splitlines()
    ctx.require(lines and lines[-1].startswith("{"),
                f"loadgen {' '.join(map(str, extra))}: no JSON line (rc {r.returncode}): "
                f"{r.stderr[-500:]}")
    ctx.note(f"loadgen {' '.join(map(str, extra))}: {lines[0]}")
    return r.returncode, json.loads(lines[-1])


def need_tools(ctx):
    for f in (LOADGEN, FASTUP):
        if not os.access(f, os.X_OK):
            ctx.skip(f"{f} not built (make tools)")


@case("bench_loadgen_prosody")
def bench_loadgen_prosody(ctx):
    """20 PLAIN logins at concurrency 5 through the proxy to Prosody, then 10
    SCRAM-SHA-1 logins with a message round trip each and 5 held: no
    failure, the proxy's CPU and RSS read; a wrong password is counted as
    an auth failure and the exit status says so."""
    need_tools(ctx)
    px = ctx.proxy(event_log=None, keylog=None)
    pw = USERS["alice"]
    rc, res = loadgen(ctx, px.port, pw, "--logins", 20, "--concurrency", 5, "--pid", px.proc.pid)
    ctx.check(rc == 0 and res["ok"] == 20 and res["failed"] == 0,
              f"PLAIN through the proxy: {res['ok']} ok, {res['failed']} failed {res['fail']}")
    ctx.check(len(res["pids"]) == 1 and res["pids"][0]["pid"] == px.proc.pid,
              f"the proxy's figures missing: {res['pids']}")
    ctx.check(res["p50_ms"] > 0 and res["p99_ms"] >= res["p50_ms"],
              f"latencies {res['p50_ms']} / {res['p99_ms']}")
    rc, res = loadgen(ctx, px.tls_port, pw, "--direct-tls", "--mech", "scram", "--logins", 10,
                      "--concurrency", 5, "--msgs", 1, "--hold", 5, "--pid", px.proc.pid)
    ctx.check(rc == 0 and res["ok"] == 10 and res["held"] == 5 and res["failed"] == 0,
              f"SCRAM, Direct TLS, messages, held: {res['ok']} ok, {res['held']} held, "
              f"{res['failed']} failed {res['fail']}")
    ctx.check(res["msg_rtt_p50_ms"] > 0, f"no message round trip measured: {res}")
    ctx.check(res["pids"][0]["rss_held_kib"] > 0, f"no RSS read: {res['pids']}")
    rc, res = loadgen(ctx, px.port, pw + "-wrong", "--logins", 3, "--concurrency", 3)
    ctx.check(rc == 1 and res["ok"] == 0 and res["fail"]["auth"] == 3,
              f"wrong password: rc {rc}, {res['ok']} ok, {res['fail']}")


@case("bench_fastupstream", prosody=None)
def bench_fastupstream(ctx):
    """The fast upstream behind the proxy: 20 PLAIN and 20 SCRAM-SHA-1 logins
    (the proxy follows both to success), messages echoed; straight to it, a
    stall is a stall: a port that accepts and never answers ends every login
    as `stall` within the timeout; one that closes at once as `closed`, one
    that sends a stream error as `stream_error`."""
    need_tools(ctx)
    pw = "Bench-fast-pw-1"
    port, tls_port = harness.free_port(), harness.free_port()
    out = open(os.devnull, "wb")
    fu = subprocess.Popen([str(FASTUP), "--port", str(port), "--tls-port", str(tls_port),
                           "--cert", str(harness.CERTS / "server.pem"),
                           "--key", str(harness.CERTS / "server.key"), "--password", pw],
                          stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                          start_new_session=True, preexec_fn=harness._die_with_parent)
    silent = None
    try:
        harness.wait_listening([port, tls_port], 10, fu, "fastupstream")
        px = ctx.proxy(upstream_port=port, event_log=None, keylog=None)
        for mech in ("plain", "scram"):
            rc, res = loadgen(ctx, px.port, pw, "--mech", mech, "--logins", 20,
                              "--concurrency", 4, "--msgs", 2)
            ctx.check(rc == 0 and res["ok"] == 20 and res["failed"] == 0,
                      f"{mech} through the proxy to the fast upstream: {res['ok']} ok, "
                      f"{res['fail']}")
        rc, res = loadgen(ctx, tls_port, pw, "--direct-tls", "--logins", 5, "--concurrency", 5)
        ctx.check(rc == 0 and res["ok"] == 5, f"Direct TLS to the fast upstream: {res['fail']}")
        # a listener that never answers: each login must end as a stall
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        argv = [str(LOADGEN), "--port", str(silent.getsockname()[1]), "--password", pw,
                "--ca", str(harness.CA), "--logins", "2", "--concurrency", "2", "--timeout", "1"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        ctx.check(r.returncode == 1 and res["stalls"] == 2 and res["stalled_at"] == {"features": 2},
                  f"silent server: rc {r.returncode}, {res['fail']}, {res['stalled_at']}")
        # a server that closes at once, and one that answers with a stream
        # error: each login fails, counted by kind, and nothing hangs
        for reply, kind in ((None, "closed"),
                            (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                             b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
                             b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:"
                             b"xmpp-streams'/></stream:error></stream:stream>", "stream_error")):
            srv = socket.socket()
            srv.bind(("127.0.0.1", 0))
            srv.listen(16)
            done = threading.Event()

            def serve(srv=srv, reply=reply, done=done):
                while not done.is_set():
                    try:
                        c, _ = srv.accept()
                    except OSError:
                        return
                    if reply:
                        c.recv(4096)
                        c.sendall(reply)
                    c.close()
            t = threading.Thread(target=serve, daemon=True)
            t.start()
            argv = [str(LOADGEN), "--port", str(srv.getsockname()[1]), "--password", pw,
                    "--ca", str(harness.CA), "--logins", "4", "--concurrency", "2",
                    "--timeout", "5"]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            done.set()
            srv.close()
            t.join(5)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            ctx.check(r.returncode == 1 and res["fail"][kind] == 4 and res["stalls"] == 0,
                      f"server that gives {kind}: rc {r.returncode}, {res['fail']}")
    finally:
        if silent is not None:
            silent.close()
        harness.stop_process(fu, timeout=5)
        out.close()
