"""SASL inspection (issue 3): channel binding through the proxy, with a raw
SCRAM-SHA-1 client whose GS2 flag the case chooses.

On TLS 1.2 Prosody offers SCRAM-SHA-1-PLUS. The proxy cannot carry channel
binding (its two TLS sessions differ), so it removes -PLUS from the offer.
A client without channel binding says "n" and logs in; a client that
supports it says "y" (RFC 5802 section 6: "I could, but you did not
offer"), which a server that did offer -PLUS must refuse: the proxy logs
that as a detected downgrade.
"""

import base64
import hashlib
import hmac
import os

import raw
from cases import case, USERS


def scram_sha1(c, user, password, gs2):
    """Runs SCRAM-SHA-1 on an open, encrypted stream with GS2 header gs2
    ("n,," or "y,,"). Returns the server's last element (<success> or
    <failure>)."""
    cnonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={user},r={cnonce}"
    c.auth("SCRAM-SHA-1", base64.b64encode((gs2 + first_bare).encode()).decode())
    el = c.next_element()
    if el is None or raw.local(el.tag) != "challenge":
        return el
    server_first = base64.b64decode(el.text or "").decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha1").digest()
    stored_key = hashlib.sha1(client_key).digest()
    final_bare = f"c={base64.b64encode(gs2.encode()).decode()},r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.new(stored_key, auth_message, "sha1").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    final = base64.b64encode(f"{final_bare},p={proof}".encode()).decode()
    c.send(f"<response xmlns='{raw.NS_SASL}'>{final}</response>")
    el = c.next_element()
    if el is not None and raw.local(el.tag) == "challenge":  # v= in a challenge
        c.send(f"<response xmlns='{raw.NS_SASL}'/>")
        el = c.next_element()
    return el


def scram_session(ctx, gs2):
    px = ctx.proxy()
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    mechs = raw.mechanisms(c.open_stream())
    ctx.check("SCRAM-SHA-1" in mechs, f"SCRAM-SHA-1 not offered: {mechs}")
    ctx.check(not any(m.endswith("-PLUS") for m in mechs), f"-PLUS offered through the proxy: {mechs}")
    el = scram_sha1(c, "alice", USERS["alice"], gs2)
    c.close()
    s = ctx.session(px)
    strip = s.first("policy", rule="channel_binding", action="strip")
    ctx.check(strip and "SCRAM-SHA-1-PLUS" in strip.get("detail", ""),
              f"no strip of SCRAM-SHA-1-PLUS logged: {s.all('policy')}")
    f = [e for e in s.all("features") if e.get("tls") and e.get("offered")]
    ctx.check(f and "SCRAM-SHA-1-PLUS" in f[-1].get("mechanisms", []),
              f"the server's SCRAM-SHA-1-PLUS missing from mechanisms: {f}")
    return el, s


@case("channel_binding_client_n", prosody="tls12")
def channel_binding_client_n(ctx):
    """TLS 1.2 upstream offering SCRAM-SHA-1-PLUS: the proxy strips it, a
    client without channel binding (GS2 "n") logs in, the strip is logged."""
    el, s = scram_session(ctx, "n,,")
    ctx.check(el is not None and raw.local(el.tag) == "success", f"login failed: {raw.local(el.tag) if el is not None else None}")
    auth = s.expect(ctx, "auth", mechanism="SCRAM-SHA-1")
    if auth:
        ctx.check(auth.get("cb") == "n", f"auth cb {auth.get('cb')!r}")
        ctx.check(auth.get("username") == "alice", f"auth username {auth.get('username')!r}")
    s.expect(ctx, "auth_result", outcome="success", by="upstream")
    login = s.expect(ctx, "login", outcome="success")
    if login:
        ctx.check(not login.get("cb_downgrade"), f"a downgrade reported for 'n': {login}")
    ctx.check(not s.first("policy", rule="channel_binding", action="log"),
              "downgrade logged for a client that does not do channel binding")


@case("channel_binding_client_y_downgrade", prosody="tls12")
def channel_binding_client_y_downgrade(ctx):
    """The same with a client that supports channel binding (GS2 "y"): the
    server refuses it (RFC 5802 6) and the proxy logs the downgrade it
    caused, in a policy event and in the login record."""
    el, s = scram_session(ctx, "y,,")
    ctx.check(el is not None and raw.local(el.tag) == "failure",
              f"a server that offered -PLUS accepted 'y': {raw.local(el.tag) if el is not None else None}")
    d = s.expect(ctx, "policy", rule="channel_binding", action="log")
    if d:
        ctx.check("downgrade" in d.get("detail", ""), f"policy detail {d.get('detail')!r}")
    s.expect(ctx, "auth_result", outcome="failure", by="upstream")
    login = s.expect(ctx, "login", outcome="failure")
    if login:
        ctx.check(login.get("cb_downgrade") is True and login.get("cb") == "y",
                  f"login record without the downgrade: {login}")
