#!/usr/bin/python3
"""Runs the integration cases: one line per case on stdout,
  PASS: name | FAIL: name (why) | SKIP: name (why)
then a summary line "integration: N passed, N failed[, N skipped]".
Details of failures (proxy stderr, event log tail, client output) go to
stderr. Exit status 0 only if nothing failed.

  tests/integration/run.py [--bin PATH] [-k NAME]... [--keep] [-v] [--list]

--bin defaults to $XI_BIN, else ./xmpp-inspect in the repository. Run it
with the sanitizer build (build/asan/xmpp-inspect) too: a case fails when
the proxy's stderr has an AddressSanitizer/LeakSanitizer/UBSan report.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import cases  # noqa: E402
import cases_sasl2  # noqa: E402,F401  (registers the SASL2 cases)
import cases_sasl  # noqa: E402,F401  (channel binding with a raw SCRAM client)
import cases_policy  # noqa: E402,F401  (registers the policy cases, issue 4)
import cases_review  # noqa: E402,F401  (regressions from the code review)
import cases_bypass  # noqa: E402,F401  (issue 8: routes around policy, real Prosody)
import cases_bypass_upstream  # noqa: E402,F401  (issue 8: bound identity, scripted upstream)
import cases_memory  # noqa: E402,F401  (issue 8: secrets in the process's memory)
import cases_review8  # noqa: E402,F401  (issue 8 review: the holes it found)
import cases_review14  # noqa: E402,F401  (issue 14 review: the fast relay and the idle release)
import cases_fast  # noqa: E402,F401  (FAST, XEP-0484: scripted mod_sasl2_fast upstream, raw SASL2 client)
import cases_fast_real  # noqa: E402,F401  (SASL2+Bind2+FAST with real parts: Prosody + prosody-modules, xmpp.js)
import cases_durability  # noqa: E402,F401  (issue 15: the event log on a full disk)
import cases_proxyproto  # noqa: E402,F401  (issue 12: PROXY header toward ejabberd and HAProxy)
import cases_daemon  # noqa: E402,F401  (issue 12: systemd notify and unit, logrotate, descriptor limits)
import cases_review13  # noqa: E402,F401  (issue 13 review: PROXY in, shared state, metrics)
import cases_deploy  # noqa: E402,F401  (issue 12: the fail2ban filter over a real event log)
import cases_forge  # noqa: E402,F401  (issue 11: a certificate per domain, forge_ca)
import cases_transcript  # noqa: E402,F401  (issue 11: a redacted decrypted transcript per session)
import cases_lab  # noqa: E402,F401  (issue 11: REDIRECT and TPROXY on a lab router, network namespaces)
import cases_shared  # noqa: E402,F401  (issue 13: shared_state in Redis, two instances behind HAProxy)
import cases_proxyin  # noqa: E402,F401  (issue 13: PROXY headers from a balancer)
import cases_metrics  # noqa: E402,F401  (issue 13: Prometheus metrics, promtool)
import cases_bench  # noqa: E402,F401  (issue 14: the load generator and the fast upstream, briefly)
import cases_perf  # noqa: E402,F401  (issue 14: what the cheaper proxy must keep: upstream resumption)
import cases_workers  # noqa: E402,F401  (issue 14: workers = N, one proxy over forked event loops)
import cases_idle_memory  # noqa: E402,F401  (issue 14: a held session's parsers released and remade)
import cases_relay_throughput  # noqa: E402,F401  (issue 14: the fast relay after login keeps its checks)


class Runner:
    def __init__(self, binary, keep=False, verbose=False):
        self.binary = binary
        self.keep = keep
        self.verbose = verbose
        self.servers = {}

    def prosody(self, variant):
        """The shared Prosody of a variant, started on first use (and again
        if it died)."""
        p = self.servers.get(variant)
        if p is not None and p.proc is not None and p.proc.poll() is None:
            return p
        if p is not None:
            p.stop()
        opts = dict(cases.PROSODY_VARIANTS[variant])
        p = harness.Prosody(name=f"prosody-{variant}", keep=self.keep, **opts)
        self.servers[variant] = p
        p.start()
        return p

    def release(self, variant):
        p = self.servers.pop(variant, None)
        if p is not None:
            p.stop()

    def stop_all(self):
        for variant in list(self.servers):
            self.release(variant)


def one_line(text, limit=600):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def run_case(runner, c):
    """Returns (status, reason, diagnostics)."""
    if c.needs_proxy and not os.access(runner.binary, os.X_OK):
        return "FAIL", f"proxy binary {runner.binary} not found or not executable (run make)", ""
    ctx = cases.Ctx(runner, c)
    status, reason = "PASS", ""
    try:
        if c.prosody:
            try:
                runner.prosody(c.prosody)
            except harness.HarnessError as e:
                if c.prosody == "cyrus" and "not installed" in str(e):
                    raise cases.CaseSkipped(str(e))
                ctx.problems.append(f"harness: Prosody ({c.prosody}) did not start: {e}")
                raise cases.CaseFailed()
        c.fn(ctx)
    except cases.CaseSkipped as e:
        status, reason = "SKIP", str(e)
    except cases.CaseFailed:
        pass
    except harness.HarnessError as e:
        ctx.problems.append(f"harness: {e}")
    except AssertionError as e:
        ctx.problems.append(str(e) or "assertion failed")
    except Exception as e:  # a bug in the case or the harness: show where
        ctx.problems.append(f"{type(e).__name__}: {e}")
        ctx.note(traceback.format_exc())
    finally:
        try:
            ctx.teardown()
        except Exception as e:
            ctx.problems.append(f"teardown: {type(e).__name__}: {e}")
            ctx.note(traceback.format_exc())
    diag = ""
    if ctx.problems and status != "SKIP":
        status, reason = "FAIL", "; ".join(ctx.problems)
        diag = ctx.diagnostics()
        if c.prosody and c.prosody in runner.servers:
            diag += "\n" + runner.servers[c.prosody].diagnostics()
    for px in ctx.proxies:
        if status == "PASS" or not runner.keep:
            px.cleanup()
        elif runner.keep:
            diag += f"\n(kept {px.dir})"
    return status, reason, diag


def main():
    ap = argparse.ArgumentParser(description="xmpp-inspect integration tests")
    ap.add_argument("--bin", default=os.environ.get("XI_BIN") or str(harness.REPO / "xmpp-inspect"),
                    help="proxy binary (default $XI_BIN or ./xmpp-inspect)")
    ap.add_argument("-k", action="append", default=[], metavar="NAME",
                    help="run only cases whose name contains NAME (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep temp dirs of failed cases and servers")
    ap.add_argument("-v", "--verbose", action="store_true", help="timings and details on stderr")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args()

    selected = [c for c in cases.CASES if not args.k or any(k in c.name for k in args.k)]
    if args.list:
        for c in selected:
            print(f"{c.name:32} {c.doc.splitlines()[0] if c.doc else ''}")
        return 0
    if not selected:
        print(f"no case matches {args.k}", file=sys.stderr)
        return 2

    binary = str(Path(args.bin).resolve()) if os.sep in args.bin or Path(args.bin).exists() else args.bin
    if not (harness.CA.exists() and (harness.CERTS / "untrusted.pem").exists()):
        r = subprocess.run(["make", "-s", "-C", str(harness.REPO / "certs")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL: certificates (make -C certs: {one_line(r.stderr)})")
            return 1

    # SIGTERM (a CI timeout) unwinds like ^C so every server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    # Cases sharing a Prosody variant run together; a variant's server is
    # stopped once its last case is done.
    order = []
    for c in selected:
        if c.prosody not in order:
            order.append(c.prosody)
    selected.sort(key=lambda c: order.index(c.prosody))
    last_use = {c.prosody: i for i, c in enumerate(selected)}

    runner = Runner(binary, keep=args.keep, verbose=args.verbose)
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    t_all = time.monotonic()
    if args.verbose:
        print(f"proxy binary: {binary}; prosody {harness.prosody_version()}", file=sys.stderr)
    try:
        for i, c in enumerate(selected):
            t0 = time.monotonic()
            status, reason, diag = run_case(runner, c)
            counts[status] += 1
            line = f"{status}: {c.name}" + (f" ({one_line(reason)})" if reason else "")
            print(line, flush=True)
            if args.verbose:
                print(f"    {c.name}: {time.monotonic() - t0:.2f}s", file=sys.stderr)
            if status == "FAIL" and diag.strip():
                print(f"---- {c.name}: {reason}\n{diag}\n---- end {c.name}", file=sys.stderr, flush=True)
            if last_use.get(c.prosody) == i:
                runner.release(c.prosody)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        counts["FAIL"] += 1
    finally:
        runner.stop_all()
    summary = f"integration: {counts['PASS']} passed, {counts['FAIL']} failed"
    if counts["SKIP"]:
        summary += f", {counts['SKIP']} skipped"
    print(summary + f" ({time.monotonic() - t_all:.1f}s)", flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
