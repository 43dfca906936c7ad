"""Review 14: holes found in the fast relay after login and in what it
was merged with (the parser released between stanzas).

A CDATA section at the stream level (text inside the stream element, which
XML allows) ends in events like any text, so the idle sweep took the parser
there for idle and released it; the parser made again was outside the
section, and read its text as markup: an <auth> that the server reads as a
top-level SASL element after login went by as the child of a "stanza" <x>
whose attribute held the section's "]]>".
"""

import time

import fakeserver
from cases import case
from cases_bypass_upstream import server_done
from cases_hostile import send_quietly, told, with_fake
from cases_relay_throughput import logged_in

# The idle sweep (src/bounds.h IDLE_SWEEP, 1 s) releases a parser on its own
# timer and says nothing: two and a half sweeps are waited for.
IDLE_WAIT = 2.5


@case("review14_auth_inside_stream_cdata", prosody=None)
@with_fake
def review14_auth_inside_stream_cdata(ctx):
    """A logged-in client opens a CDATA section at the stream level, idles
    past the sweep, then closes it inside an attribute and sends a SASL
    <auth>: the proxy sees a top-level login element after login
    (policy-violation, rule after_login) and the server never gets it."""
    srv, px, c, jid = logged_in(ctx, fakeserver.good)
    c.send(b"<![CDATA[x")
    time.sleep(IDLE_WAIT)
    send_quietly(c, b"<x a=']]>'><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                    b"mechanism='PLAIN'>AG1hbGxvcnkAc2VjcmV0</auth>")
    told(ctx, c, "policy-violation", timeout=10)
    s = ctx.session(px, 0)
    ctx.check(s.all("policy", rule="after_login", action="reject"),
              f"no policy event rule after_login (have {s.all('policy')})")
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, "auth inside a stream-level CDATA section")
    tail = conn.received.split(b"<![CDATA[x", 1)[-1]
    ctx.check(b"<auth" not in tail, f"the server got the <auth> after login: {tail[:200]!r}")
