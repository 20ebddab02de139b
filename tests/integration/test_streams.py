"""Live job status streams (SPEC §4 Streams, issue 5): GET /ws and GET /events.

Every subscriber is a cursor into the log, so these tests compare what a
stream delivers with `jobgate log dump` (minus payloads): same events, seq
order, no gaps, no duplicates, exactly resumable.  Every wait is bounded in
time and every loop in count.
"""
import asyncio
import base64
import http.client
import json
import os
import signal
import socket
import struct
import threading
import time

import pytest
import websockets

from conftest import TOKEN

SLOW_CONFIG = {
    "jobs": {
        "echo": {"builtin": "echo"},
        "slow": {"command": ["/bin/sleep", "1"], "timeout_s": 30},
        "fail": {"command": ["/bin/false"], "max_attempts": 1},
    }
}
FINAL = ("succeeded", "failed", "canceled")


# ---- helpers ----

def without_payload(ev):
    ev = dict(ev)
    ev.pop("payload", None)
    return ev


def log_seq(server):
    r = server.get("/healthz", token=False)
    assert r.status == 200, r.body
    return r.json()["log_seq"]


def wait_log(server, seq, timeout=60):
    """Wait until the log head reaches seq (bounded)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log_seq(server) >= seq:
            return
        time.sleep(0.05)
    raise AssertionError("log head stuck at %d, wanted %d" % (log_seq(server), seq))


def trigger(server, n, job="echo"):
    ids = []
    for i in range(n):
        r = server.post("/trigger/" + job, {"i": i})
        assert r.status == 202, r.body
        ids.append(r.json()["id"])
    return ids


def settle(server, njobs_echo):
    """Each echo job leaves exactly 3 events (enqueued, started, succeeded)."""
    wait_log(server, 3 * njobs_echo)
    time.sleep(0.2)
    assert log_seq(server) == 3 * njobs_echo


def ws_url(server, query="", token=None):
    q = query
    if token:
        q = (q + "&" if q else "") + "access_token=" + token
    return "ws://127.0.0.1:%d/ws%s" % (server.port, "?" + q if q else "")


def auth():
    return {"Authorization": "Bearer " + TOKEN}


async def ws_read(url, count=None, until_close=False, timeout=30, headers=None,
                  quiet=None):
    """Read up to count messages (or until the server closes).  With quiet,
    also assert that nothing else arrives within quiet seconds."""
    out = []
    code = None
    async with websockets.connect(url, extra_headers=auth() if headers is None else headers,
                                  max_size=None, ping_interval=None,
                                  open_timeout=10) as ws:
        deadline = time.time() + timeout
        try:
            while count is None or len(out) < count:
                left = deadline - time.time()
                assert left > 0, "timed out after %d messages" % len(out)
                out.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
            if quiet:
                with pytest.raises(asyncio.TimeoutError):
                    extra = await asyncio.wait_for(ws.recv(), quiet)
                    raise AssertionError("unexpected extra message %r" % extra)
        except websockets.ConnectionClosed:
            assert until_close, "closed early after %d messages" % len(out)
        if until_close:
            await asyncio.wait_for(ws.wait_closed(), timeout)
        code = ws.close_code
    return out, code


def run(coro):
    return asyncio.run(coro)


def check_order(msgs, first=None):
    seqs = [m["seq"] for m in msgs]
    assert seqs == sorted(set(seqs)), "out of order or duplicated"
    if first is not None and seqs:
        assert seqs == list(range(first, first + len(seqs))), "gap in seqs"


class RawWS:
    """A minimal WebSocket client over a plain socket, so a test can control
    the receive buffer and simply stop reading."""

    def __init__(self, port, path, rcvbuf=None, token=TOKEN, timeout=10):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n" % (path, port, key))
        if token:
            req += "Authorization: Bearer %s\r\n" % token
        self.s.sendall((req + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(4096)
            assert d, "closed during handshake"
            self.buf += d
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ", 2)[1])

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self.s.settimeout(max(0.01, deadline - time.time()))
            d = self.s.recv(1 << 20)
            if not d:
                raise EOFError
            self.buf += d

    def frame(self, timeout=10):
        """(opcode, payload) of the next frame."""
        deadline = time.time() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, off = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
        assert not b1 & 0x80, "server frames are never masked"
        assert b0 & 0x80, "one frame per message expected"
        self._need(off + n, deadline)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return b0 & 0x0F, payload

    def close(self):
        self.s.close()


def sse_open(server, query="", headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    h = auth()
    h.update(headers or {})
    c.request("GET", "/events" + ("?" + query if query else ""), headers=h)
    return c, c.getresponse()


def sse_records(resp, count=None, deadline=None):
    """Parse SSE records: (id or None, data or None, comment lines)."""
    out = []
    rec = {"id": None, "data": None, "comments": []}
    while count is None or len(out) < count:
        assert deadline is None or time.time() < deadline, "SSE read timed out"
        line = resp.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if line == "":
            out.append(rec)
            rec = {"id": None, "data": None, "comments": []}
        elif line.startswith(":"):
            rec["comments"].append(line)
        elif line.startswith("id: "):
            rec["id"] = int(line[4:])
        elif line.startswith("data: "):
            rec["data"] = json.loads(line[6:])
        else:
            raise AssertionError("unexpected SSE line %r" % line)
    return out


# ---- tests ----

def test_ws_replay_equals_log_dump(server):
    trigger(server, 20)
    settle(server, 20)
    dump = server.dump()
    assert len(dump) == 60
    msgs, _ = run(ws_read(ws_url(server, "from_seq=1"), count=len(dump), quiet=0.5))
    check_order(msgs, first=1)
    assert msgs == [without_payload(e) for e in dump]
    assert all("payload" not in m for m in msgs)


def test_ws_live_only_then_resume_exactly(server):
    trigger(server, 30)
    settle(server, 30)

    async def first_50_then_live():
        async with websockets.connect(ws_url(server, "from_seq=1"), extra_headers=auth(),
                                      max_size=None, ping_interval=None) as ws:
            got = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(50)]
        return got

    got = run(first_50_then_live())
    check_order(got, first=1)
    last = got[-1]["seq"]

    # Live only (no from_seq): starts after the head, sees nothing old.
    async def live():
        async with websockets.connect(ws_url(server), extra_headers=auth(),
                                      max_size=None, ping_interval=None) as ws:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)
            trigger(server, 1)
            return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]

    live_msgs = run(live())
    assert [m["seq"] for m in live_msgs] == [91, 92, 93]

    trigger(server, 19)
    settle(server, 50)
    dump = server.dump()
    missed = [without_payload(e) for e in dump if e["seq"] > last]
    msgs, _ = run(ws_read(ws_url(server, "from_seq=%d" % (last + 1)),
                          count=len(missed), quiet=0.5))
    assert msgs == missed


def test_many_live_subscribers_get_identical_complete_streams(server):
    """Several WS and SSE subscribers at the same cursor (the server renders a
    batch once and writes it to all of them): each gets every event once."""
    NWS, NJOBS = 6, 40

    async def go():
        conns = [await websockets.connect(ws_url(server), extra_headers=auth(),
                                          max_size=None, ping_interval=None)
                 for _ in range(NWS)]
        c, r = sse_open(server)
        try:
            await asyncio.get_running_loop().run_in_executor(None, trigger, server, NJOBS)
            await asyncio.get_running_loop().run_in_executor(None, settle, server, NJOBS)
            out = []
            for ws in conns:
                out.append([json.loads(await asyncio.wait_for(ws.recv(), 10))
                            for _ in range(3 * NJOBS)])
            sse = await asyncio.get_running_loop().run_in_executor(
                None, lambda: sse_records(r, count=3 * NJOBS, deadline=time.time() + 20))
            return out, sse
        finally:
            c.close()
            for ws in conns:
                await ws.close()

    out, sse = run(go())
    dump = [without_payload(e) for e in server.dump()]
    assert len(dump) == 3 * NJOBS
    for msgs in out:
        assert msgs == dump
    assert [x["data"] for x in sse] == dump


@pytest.mark.parametrize("nws", [19, 45])
def test_every_subscriber_reaches_the_head_after_each_burst(server, nws):
    """Stress: after each burst of concurrent triggers goes quiet, every
    subscriber gets to the head without a later commit.  19 subscribers
    are woken at each commit; 45 share wakes 2 ms apart (the deferred
    timer).  The narrow stale-batch race is pinned down by the cached-batch
    test below; this one watches the wake paths as a whole."""
    NWS, ROUNDS, THREADS, PER = nws, 10, 2, 3

    def burst():
        ts = [threading.Thread(target=trigger, args=(server, PER)) for _ in range(THREADS)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)

    async def reader(ws, seen):
        try:
            async for m in ws:
                seen.append(json.loads(m)["seq"])
        except websockets.ConnectionClosed:
            pass

    async def go():
        loop = asyncio.get_running_loop()
        conns = [await websockets.connect(ws_url(server), extra_headers=auth(),
                                          max_size=None, ping_interval=None)
                 for _ in range(NWS)]
        seen = [[] for _ in conns]
        tasks = [asyncio.ensure_future(reader(ws, x)) for ws, x in zip(conns, seen)]
        stalled = []
        try:
            for rnd in range(ROUNDS):
                await loop.run_in_executor(None, burst)
                await loop.run_in_executor(None, settle, server, THREADS * PER * (rnd + 1))
                head = log_seq(server)
                deadline = time.time() + 5
                while time.time() < deadline and any(not x or x[-1] < head for x in seen):
                    await asyncio.sleep(0.02)
                stalled += [(rnd, i, x[-1] if x else None, head)
                            for i, x in enumerate(seen) if not x or x[-1] < head]
                if stalled:
                    break
        finally:
            for ws in conns:
                await ws.close()
            await asyncio.gather(*tasks, return_exceptions=True)
        return seen, stalled

    seen, stalled = run(go())
    assert not stalled, "subscribers short of the head after a quiet burst: %r" % stalled
    for x in seen:
        assert x == list(range(x[0], x[0] + len(x)))


def test_replay_from_the_cursor_of_a_cached_batch_gets_everything(make_server):
    """The shared batch of plain subscribers is cached by its start seq.  A
    new subscriber replaying from that seq gets the cached (older) batch
    first; the events committed since, whose wake ran before it existed,
    must follow at once, not at the next commit or ping (tester, session 5)."""
    s = make_server(SLOW_CONFIG, env={"JOBGATE_STREAM_PING_MS": "25000"})
    a = RawWS(s.port, "/ws")
    assert a.status == 101
    ids = trigger(s, 1, job="slow")  # seq 3 lands a second after 2: a batch of its own
    got = [json.loads(a.frame()[1])["seq"] for _ in range(3)]
    assert got == [1, 2, 3]
    a.s.close()
    ids += trigger(s, 1)
    wait_log(s, 6)
    b = RawWS(s.port, "/ws?from_seq=3")
    assert b.status == 101
    got = [json.loads(b.frame(timeout=3)[1])["seq"] for _ in range(4)]
    b.s.close()
    assert got == [3, 4, 5, 6], (ids, got)


def test_ws_filters_job_name_and_job_id(make_server):
    s = make_server(config=SLOW_CONFIG)
    ids = trigger(s, 3) + trigger(s, 2, job="fail")
    wait_log(s, 3 * 5)
    time.sleep(0.3)
    dump = s.dump()
    fails = [without_payload(e) for e in dump if e["job"] == "fail"]
    msgs, _ = run(ws_read(ws_url(s, "job=fail&from_seq=1"), count=len(fails), quiet=0.5))
    assert msgs == fails
    jid = ids[1]
    mine = [without_payload(e) for e in dump if e["job_id"] == jid]
    assert mine[-1]["status"] in FINAL
    msgs, code = run(ws_read(ws_url(s, "job_id=%d&from_seq=1" % jid), until_close=True))
    assert msgs == mine
    assert code == 1000


def test_ws_job_id_stream_ends_after_final_event(make_server):
    s = make_server(config=SLOW_CONFIG)
    jid = trigger(s, 1, job="slow")[0]
    # Live job stream opened while the job runs: ends with its final event.
    msgs, code = run(ws_read(ws_url(s, "job_id=%d&from_seq=%d" % (jid, jid)),
                             until_close=True, timeout=30))
    assert code == 1000
    assert [m["type"] for m in msgs] == ["job.enqueued", "job.started", "job.succeeded"]
    assert msgs[-1]["status"] == "succeeded"
    assert all(m["job_id"] == jid for m in msgs)
    dump = [without_payload(e) for e in s.dump() if e["job_id"] == jid]
    assert msgs == dump
    # A job stream that starts after the job's final event ends at once.
    msgs, code = run(ws_read(ws_url(s, "job_id=%d" % jid), until_close=True, timeout=10))
    assert msgs == [] and code == 1000
    # One opened while the job runs but from a seq past all its events
    # ends when the job does, with nothing to deliver.
    # Also when the final event lands just below the cursor (a slow job's
    # events are jid, jid+1, jid+2: from_seq jid+3 sees none of them).  The
    # job takes 1 s; a close that only came with the first ping (18-24 s of
    # quiet) would miss the 10 s.
    for ahead in (1000, 3):
        jid = trigger(s, 1, job="slow")[0]
        start = log_seq(s) + 1000 if ahead == 1000 else jid + 3
        msgs, code = run(ws_read(ws_url(s, "job_id=%d&from_seq=%d" % (jid, start)),
                                 until_close=True, timeout=10))
        assert msgs == [] and code == 1000, ahead
        evs = [e for e in s.dump() if e["job_id"] == jid]
        assert evs[-1]["type"] == "job.succeeded" and evs[-1]["seq"] < start


def test_ws_auth_refused_without_token_and_access_token_works(server):
    trigger(server, 1)
    settle(server, 1)
    # A raw client sees the refused upgrade's status line, whatever its
    # HTTP version; it must be 401, never 101.
    for path, token in (("/ws?from_seq=1", None), ("/ws?from_seq=1", "wrong"),
                        ("/ws?from_seq=1&access_token=wrong", None)):
        w = RawWS(server.port, path, token=token)
        assert w.status == 401, (path, token, w.status)
        w.close()
    msgs, _ = run(ws_read(ws_url(server, "from_seq=1", token=TOKEN), count=3, headers={}))
    assert [m["seq"] for m in msgs] == [1, 2, 3]
    msgs, _ = run(ws_read(ws_url(server, "from_seq=1"), count=3))
    assert [m["seq"] for m in msgs] == [1, 2, 3]


@pytest.mark.parametrize("query", ["job_id=abc", "job_id=0", "from_seq=-1", "from_seq=1x",
                                   "job=bad%20name", "job=echo&job_id=1",
                                   "job_id=99999999"])
def test_bad_params(server, query):
    trigger(server, 1)
    settle(server, 1)
    r = server.get("/events?" + query)
    want = 404 if query == "job_id=99999999" else 400
    assert r.status == want, (query, r.status, r.body)
    assert r.json()["error"] == ("not_found" if want == 404 else "bad_request")
    assert r.headers["content-type"].startswith("application/json")

    # WS: refused at the upgrade with the same status, or opened and closed
    # at once with 1008 and a reason.
    w = RawWS(server.port, "/ws?" + query)
    try:
        if w.status == 101:
            op, payload = w.frame(timeout=10)
            assert op == 8, op
            code = struct.unpack(">H", payload[:2])[0]
            assert code == 1008 and len(payload) > 2, (code, payload)
        else:
            assert w.status == want, (query, w.status)
    finally:
        w.close()


def test_sse_stream_ids_and_last_event_id(make_server):
    s = make_server(config=SLOW_CONFIG)
    ids = trigger(s, 5)
    wait_log(s, 15)
    time.sleep(0.2)
    dump = [without_payload(e) for e in s.dump()]

    c, r = sse_open(s, "from_seq=1")
    assert r.status == 200
    assert r.getheader("content-type").startswith("text/event-stream")
    recs = sse_records(r, count=15, deadline=time.time() + 20)
    c.close()
    assert [x["id"] for x in recs] == list(range(1, 16))
    assert [x["data"] for x in recs] == dump
    assert all(x["id"] == x["data"]["seq"] for x in recs)

    # Last-Event-ID resumes after that seq, and wins over from_seq.
    c, r = sse_open(s, "from_seq=1", headers={"Last-Event-ID": "7"})
    recs = sse_records(r, count=8, deadline=time.time() + 20)
    c.close()
    assert [x["data"] for x in recs] == dump[7:]

    # A job_id stream ends (end of response) after the job's final event.
    jid = ids[2]
    mine = [e for e in dump if e["job_id"] == jid]
    c, r = sse_open(s, "job_id=%d" % jid, headers={"Last-Event-ID": str(jid)})
    recs = sse_records(r, deadline=time.time() + 20)   # until the server ends it
    c.close()
    assert [x["data"] for x in recs] == mine[1:]
    assert recs[-1]["data"]["status"] == "succeeded"

    # Live job stream over SSE for a running job.
    jid = trigger(s, 1, job="slow")[0]
    c, r = sse_open(s, "job_id=%d&from_seq=%d" % (jid, jid))
    recs = sse_records(r, deadline=time.time() + 30)
    c.close()
    assert [x["data"]["type"] for x in recs] == ["job.enqueued", "job.started",
                                                 "job.succeeded"]

    for bad in ("x", "01", "-1", "7 8", "99999999999999999999"):
        r = s.get("/events?from_seq=1", headers={"Last-Event-ID": bad})
        assert r.status == 400, bad
    # Whitespace around the value is not part of it (RFC 9110 5.5).
    c, r = sse_open(s, "from_seq=1", headers={"Last-Event-ID": "14 "})
    assert r.status == 200
    recs = sse_records(r, count=1, deadline=time.time() + 20)
    c.close()
    assert recs[0]["id"] == 15


RETRY_CONFIG = {
    "jobs": {
        # Attempt 1 fails at once; a retried attempt runs for 2 s, then succeeds.
        "flaky": {"command": ["/bin/sh", "-c",
                              '[ "$JOBGATE_ATTEMPT" = 1 ] && exit 1; sleep 2'],
                  "max_attempts": 1},
    }
}


def test_job_stream_goes_on_past_a_failure_that_was_retried(make_server):
    s = make_server(config=RETRY_CONFIG)
    r = s.post("/trigger/flaky/wait?timeout=20")
    assert r.status == 200 and r.json()["status"] == "failed", r.body
    jid = r.json()["id"]
    r = s.post("/jobs/%d/retry" % jid)
    assert r.status == 200, r.body
    # Replayed from the start while attempt 2 runs: the first failure is not
    # the end; the stream ends after the last attempt's final event.
    first = [e["type"] for e in s.dump() if e["job_id"] == jid]
    assert "job.succeeded" not in first
    c, resp = sse_open(s, "job_id=%d&from_seq=%d" % (jid, jid))
    msgs, code = run(ws_read(ws_url(s, "job_id=%d&from_seq=%d" % (jid, jid)),
                             until_close=True, timeout=30))
    recs = sse_records(resp, deadline=time.time() + 30)
    c.close()
    want = ["job.enqueued", "job.started", "job.failed", "job.retried",
            "job.started", "job.succeeded"]
    assert [m["type"] for m in msgs] == want and code == 1000
    assert [x["data"]["type"] for x in recs] == want
    dump = [without_payload(e) for e in s.dump() if e["job_id"] == jid]
    assert msgs == dump and [x["data"] for x in recs] == dump
    # Replayed once more, now that the job is final: the same, then the end.
    msgs, code = run(ws_read(ws_url(s, "job_id=%d&from_seq=1" % jid),
                             until_close=True, timeout=10))
    assert msgs == dump and code == 1000


def test_sse_job_stream_with_nothing_left_is_204(make_server):
    s = make_server(config=SLOW_CONFIG)
    jid = trigger(s, 1)[0]
    wait_log(s, 3)
    last = [e for e in s.dump() if e["job_id"] == jid][-1]
    assert last["status"] == "succeeded"
    # An EventSource reconnects after the end with the last id it saw:
    # 204 tells it to stop.  So does a live-only stream of a finished job.
    for query, hdrs in (("job_id=%d&from_seq=%d" % (jid, jid), {"Last-Event-ID": str(last["seq"])}),
                        ("job_id=%d" % jid, {})):
        c, r = sse_open(s, query, headers=hdrs)
        assert r.status == 204, (query, r.status)
        assert r.read() == b""
        c.close()
    # One event before the end: 200 and that event.
    c, r = sse_open(s, "job_id=%d" % jid, headers={"Last-Event-ID": str(last["seq"] - 1)})
    assert r.status == 200
    recs = sse_records(r, deadline=time.time() + 20)
    c.close()
    assert [x["id"] for x in recs] == [last["seq"]]


def test_stream_access_token_on_both_routes_and_no_stale_credential(server):
    trigger(server, 1)
    settle(server, 1)
    # /events takes access_token like /ws (an EventSource cannot set headers).
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    c.request("GET", "/events?from_seq=1&access_token=" + TOKEN)
    r = c.getresponse()
    assert r.status == 200
    assert [x["id"] for x in sse_records(r, count=3, deadline=time.time() + 20)] == [1, 2, 3]
    c.close()
    # A wrong credential beside a good one is refused on both routes.
    for path in ("/events?from_seq=1&access_token=garbage",
                 "/events?from_seq=1&access_token=",
                 "/events?from_seq=1&access_token=" + "y" * 600):   # too long to copy
        r = server.get(path)
        assert r.status == 401, (path, r.status)
        assert r.json()["error"] == "unauthorized"
    r = server.get("/events?from_seq=1&access_token=" + TOKEN, token="garbage")
    assert r.status == 401
    # A header too long to be any token is a bad credential, not an absent one.
    r = server.get("/events?from_seq=1&access_token=" + TOKEN, token="x" * 600)
    assert r.status == 401
    for path, token in (("/ws?from_seq=1&access_token=garbage", TOKEN),
                        ("/ws?from_seq=1&access_token=" + TOKEN, "garbage"),
                        ("/ws?from_seq=1&access_token=" + TOKEN, "x" * 600)):
        w = RawWS(server.port, path, token=token)
        assert w.status == 401, (path, token, w.status)
        w.close()


def test_access_token_counts_beside_another_auth_scheme(server):
    """A browser behind a Basic-auth proxy sends `Authorization: Basic ...`
    with every EventSource and WebSocket: the access_token then counts
    alone.  Such a header made every stream 401 (helper 46).  A Bearer
    header is still judged, and a Basic one alone is no credential."""
    trigger(server, 1)
    settle(server, 1)
    basic = {"Authorization": "Basic " + base64.b64encode(b"user:pass").decode()}
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    c.request("GET", "/events?from_seq=1&access_token=" + TOKEN, headers=basic)
    r = c.getresponse()
    assert r.status == 200
    assert [x["id"] for x in sse_records(r, count=3, deadline=time.time() + 20)] == [1, 2, 3]
    c.close()
    msgs, _ = run(ws_read(ws_url(server, "from_seq=1", token=TOKEN), count=3, headers=basic))
    assert [m["seq"] for m in msgs] == [1, 2, 3]
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for path in ("/events?from_seq=1", "/jobs"):
        c.request("GET", path, headers=basic)
        r = c.getresponse()
        r.read()
        assert r.status == 401, path
    # Another scheme's parameters that merely begin with "bearer" are not
    # a Bearer header (helper 50).
    for h in ('Digest username="u", realm="r", bearer_format="jwt"',
              'Digest username="ann, bearer of news", realm="r"'):
        c.request("GET", "/events?from_seq=1&access_token=" + TOKEN, headers={"Authorization": h})
        r = c.getresponse()
        assert r.status == 200, h
        c.close()
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for h in ('Digest realm="r", bearer = "jwt"',):      # a parameter (helper 52)
        c.request("GET", "/events?from_seq=1&access_token=" + TOKEN, headers={"Authorization": h})
        r = c.getresponse()
        assert r.status == 200, h
        c.close()
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    # Two Authorization headers, a stale Bearer behind the Basic one: the
    # Bearer is still judged (lws joins the two; helper 49), also behind an
    # escaped backslash or an open quote in the first (helper 52).
    for first, second in ((basic["Authorization"], "Bearer stale"),
                          ("Bearer stale", basic["Authorization"]),
                          ('Digest realm="a\\\\"', "Bearer stale"),
                          ('Basic "x', "Bearer stale")):
        c.putrequest("GET", "/events?from_seq=1&access_token=" + TOKEN)
        c.putheader("Authorization", first)
        c.putheader("Authorization", second)
        c.endheaders()
        r = c.getresponse()
        r.read()
        assert r.status == 401, (first, second)
    c.close()


def test_pings_on_idle_streams(make_server):
    """An idle stream is never quiet for longer than the ping period (300 ms
    here; the allowance is for a loaded test machine), and the one sweep
    timer starts again for a subscriber that comes after all others left."""
    P = 0.3
    s = make_server(env={"JOBGATE_STREAM_PING_MS": "300"})
    c, r = sse_open(s)
    t0 = time.time()
    recs = sse_records(r, count=3, deadline=t0 + 10)
    c.close()
    assert all(x["comments"] == [": ping"] and x["data"] is None for x in recs)
    assert time.time() - t0 < 5

    w = RawWS(s.port, "/ws")
    assert w.status == 101
    times = [time.time()]
    for _ in range(4):
        assert w.frame(timeout=5)[0] == 9
        times.append(time.time())
    w.close()
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) < P + 0.3, gaps

    time.sleep(2 * P)  # no subscriber: the sweep stops
    w = RawWS(s.port, "/ws")
    t0 = time.time()
    assert w.frame(timeout=5)[0] == 9
    w.close()
    assert time.time() - t0 < P + 0.3


def test_metrics_subscribers(server):
    async def go():
        async with websockets.connect(ws_url(server), extra_headers=auth(),
                                      ping_interval=None):
            c, r = sse_open(server)
            try:
                m = server.get("/metrics").body.decode()
            finally:
                c.close()
        return m

    m = run(go())
    assert 'jobgate_subscribers{kind="ws"} 1' in m
    assert 'jobgate_subscribers{kind="sse"} 1' in m
    assert "jobgate_stream_events_delivered_total" in m
    assert "jobgate_stream_slowest_lag_events" in m


def test_sse_client_close_is_noticed_at_once(server):
    """lws 4.1 does not read an open SSE response's socket; the server must
    still see the client go (not at the next ping, 25 s later) and must not
    spin on the readable socket meanwhile."""
    def sse_gauge():
        m = server.get("/metrics").body.decode()
        return [l for l in m.splitlines() if l.startswith('jobgate_subscribers{kind="sse"}')]
    for i in range(3):
        c, r = sse_open(server)
        assert r.status == 200
        r.close()
        c.close()
    deadline = time.time() + 5
    while time.time() < deadline and sse_gauge() != ['jobgate_subscribers{kind="sse"} 0']:
        time.sleep(0.02)
    assert sse_gauge() == ['jobgate_subscribers{kind="sse"} 0']
    # The api thread is idle again (a spin on the closed socket would show).
    def cpu_ticks():
        pid = server.proc.pid
        with open("/proc/%d/task/%d/stat" % (pid, pid)) as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        return int(fields[11]) + int(fields[12])
    t0 = cpu_ticks()
    time.sleep(1.0)
    assert cpu_ticks() - t0 < 50, "api thread busy while idle"


def test_shutdown_closes_streams_going_away(make_server):
    """SIGTERM ends WebSocket streams with close code 1001 (going away), so
    clients know to reconnect and resume, and SSE bodies end cleanly."""
    s = make_server()

    async def go():
        async with websockets.connect(ws_url(s), extra_headers=auth(),
                                      ping_interval=None) as ws:
            c, r = sse_open(s)
            s.proc.send_signal(signal.SIGTERM)
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as e:
                code = e.code
            rest = r.read()		# returns: the SSE body ended with the close
            c.close()
            return code, rest
    code, rest = run(go())
    assert code == 1001
    assert s.proc.wait(30) == 0


def test_no_new_websocket_while_stopping(make_server):
    """After SIGTERM, while owed answers drain, a new /ws upgrade is refused
    with 503, or not accepted at all once the listener is closed (it would
    otherwise miss the 1001 close the others got)."""
    s = make_server(config={"jobs": {"stubborn": {"command": [
        "/bin/sh", "-c", "trap '' TERM; sleep 30"]}}})
    jid = s.post("/trigger/stubborn").json()["id"]
    deadline = time.time() + 10
    while time.time() < deadline and s.get("/jobs/%d" % jid).json()["status"] != "running":
        time.sleep(0.02)
    # The cancel is owed until the process dies (SIGKILL after a grace):
    # the server stays in its drain while we try to subscribe.
    th = threading.Thread(target=lambda: s.post("/jobs/%d/cancel" % jid))
    th.start()
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)

    async def go():
        try:
            async with websockets.connect(ws_url(s), extra_headers=auth(),
                                          ping_interval=None):
                return 101
        except websockets.InvalidStatusCode as e:
            return e.status_code
        except ConnectionRefusedError:
            return "refused"	# the listener is already closed: fine too
    status = run(go())
    th.join(30)
    assert status in (503, "refused")
    assert s.proc.wait(30) == 0


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def sanitized(pid):
    with open("/proc/%d/maps" % pid) as f:
        return any("libasan" in l or "libtsan" in l for l in f)


def test_stalled_subscriber_bounded_memory_then_catches_up(server):
    NJOBS = int(os.environ.get("JG_STALL_JOBS", "30000"))
    pid = server.proc.pid
    w = RawWS(server.port, "/ws?from_seq=1", rcvbuf=4096, timeout=30)
    assert w.status == 101
    rss0 = rss_kb(pid)
    peak = [rss0]
    errors = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.1)

    def worker(n, base):
        c = server.conn(timeout=30)
        body = json.dumps({"n": 0})
        h = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"}
        try:
            for i in range(n):
                for attempt in range(50):      # bounded retry on 503 overloaded
                    c.request("POST", "/trigger/echo", body=body, headers=h)
                    r = c.getresponse()
                    r.read()
                    if r.status != 503:
                        break
                    time.sleep(0.05)
                if r.status != 202:
                    errors.append(r.status)
                    return
        except Exception as e:          # surfaced below
            errors.append(repr(e))
        finally:
            c.close()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    nthreads = 16
    per = NJOBS // nthreads
    ts = [threading.Thread(target=worker, args=(per, k), daemon=True)
          for k in range(nthreads)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    assert not any(t.is_alive() for t in ts), "triggers did not finish in 300 s"
    assert not errors, errors[:5]
    total = per * nthreads
    # Every trigger was acknowledged, so its event is durable; let the
    # runner's status events settle (bounded), then compare with the head.
    wait_log(server, total, timeout=60)
    deadline = time.time() + 300
    head, still = log_seq(server), 0
    while time.time() < deadline and still < 20 and head < 3 * total:
        time.sleep(0.1)
        h = log_seq(server)
        still = still + 1 if h == head else 0
        head = h
    trig_s = time.time() - t0
    stop.set()
    sampler.join(5)
    peak[0] = max(peak[0], rss_kb(pid))
    grow_mb = (peak[0] - rss0) / 1024.0
    print("stalled subscriber: %d jobs, %d events in %.1f s, RSS %d -> peak %d kB (+%.1f MB)"
          % (total, head, trig_s, rss0, peak[0], grow_mb))
    if not sanitized(pid):      # ASan's quarantine and shadow make RSS meaningless
        assert grow_mb < 64, "server RSS grew %.1f MB with a stalled subscriber" % grow_mb
    # The subscriber really is behind (the kernel buffers did fill up).
    lag = [l for l in server.get("/metrics").body.decode().splitlines()
           if l.startswith("jobgate_stream_slowest_lag_events ")]
    assert lag and int(lag[0].split()[1]) > 0, lag

    # Now read: every event, in order, no gaps, no duplicates.
    head = log_seq(server)
    expect = 1
    deadline = time.time() + 300
    frames = 0
    while expect <= head:
        assert time.time() < deadline, "catch-up timed out at seq %d" % expect
        frames += 1
        assert frames < head + 10000
        op, payload = w.frame(timeout=30)
        if op == 9:         # ping
            continue
        assert op == 1, "unexpected opcode %d" % op
        ev = json.loads(payload)
        assert ev["seq"] == expect, (ev["seq"], expect)
        expect += 1
    w.close()


def test_sse_session_logs_no_error(server):
    """SSE on HTTP/1.1 must not call h2-only lws helpers (which log
    "lws_mux_mark_immortal: not h2 substream" at ERROR)."""
    trigger(server, 2)
    settle(server, 2)
    for query in ("from_seq=1", "job_id=1&from_seq=1", ""):
        c, r = sse_open(server, query)
        assert r.status == 200
        if query:
            recs = sse_records(r, count=2, deadline=time.time() + 20)
            assert len(recs) == 2
        c.close()
    time.sleep(0.3)
    assert server.get("/healthz", token=None).status == 200
    errors = [l for l in server.log_lines() if l.get("level") == "ERROR"]
    assert errors == [], errors
