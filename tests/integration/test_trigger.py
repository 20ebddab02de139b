"""Durable trigger path (issue 2): concurrent triggers, headers, wait mode,
read-your-writes and listen-address exactness."""
import json
import subprocess
import threading
import time

from conftest import raw_exchange, responses


def post_many(server, nthreads, per_thread, path="/trigger/echo/poll"):
    """nthreads keep-alive connections, per_thread triggers each."""
    results, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(nthreads)

    def worker(i):
        conn = server.conn(timeout=30)
        try:
            barrier.wait(10)
            for k in range(per_thread):
                r = server.post(path, {"t": i, "k": k}, conn=conn)
                with lock:
                    results.append(r)
        except Exception as e:          # reported below, never swallowed
            with lock:
                errors.append(repr(e))
        finally:
            conn.close()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts), "workers hung"
    assert not errors, errors[:3]
    return results


def test_thousand_concurrent_triggers(server):
    t0 = time.time()
    rs = post_many(server, 100, 10)
    assert time.time() - t0 < 60
    assert len(rs) == 1000
    assert [r.status for r in rs] == [202] * 1000
    ids = set()
    for r in rs:
        job = r.json()
        assert job["status"] == "queued" and job["job"] == "echo"
        assert r.headers["location"] == "/jobs/%d" % job["id"]
        assert int(r.headers["x-log-seq"]) == job["id"]
        ids.add(job["id"])
    assert len(ids) == 1000
    events = server.dump()      # readonly, beside the running server
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), "seqs not contiguous"
    enq = [e for e in events if e["type"] == "job.enqueued"]
    assert len(enq) == 1000
    assert set(e["job_id"] for e in enq) == ids
    assert all(e["seq"] == e["job_id"] for e in enq)
    assert all(e["actor"] == "env" for e in enq)


def test_poll_default_and_payloads(server):
    r = server.post("/trigger/echo", {"a": [1, 2, {"b": None}]})
    assert r.status == 202
    job = r.json()
    assert job["payload"] == {"a": [1, 2, {"b": None}]}
    assert job["idempotency_key"] is None and job["attempts"] == 0
    r = server.post("/trigger/echo/poll")              # empty body = null
    assert r.status == 202 and r.json()["payload"] is None
    r = server.post("/trigger/echo/poll", b'  "x"  ')
    assert r.status == 202 and r.json()["payload"] == "x"


def test_chunked_body(server):
    body = b'{"chunked": true}'
    c = server.conn()
    c.putrequest("POST", "/trigger/echo/poll")
    c.putheader("Authorization", "Bearer " + server.token)
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    for part in (body[:5], body[5:]):
        c.send(b"%x\r\n%s\r\n" % (len(part), part))
    c.send(b"0\r\n\r\n")
    r = c.getresponse()
    data = r.read()
    c.close()
    assert r.status == 202, data
    assert b'"chunked":true' in data


def test_wait_returns_finished_job(server):
    r = server.post("/trigger/echo/wait?timeout=10", {"w": 1})
    assert r.status == 200, r.body
    job = r.json()
    assert job["status"] == "succeeded" and job["result"] == {"w": 1}
    assert r.headers["location"] == "/jobs/%d" % job["id"]


def test_wait_timeout_zero_is_poll(server):
    r = server.post("/trigger/echo/wait?timeout=0", {"w": 0})
    assert r.status in (200, 202)
    assert r.json()["status"] in ("queued", "running", "succeeded")


def test_wait_times_out_with_202(make_server):
    s = make_server(config={"jobs": {"slow": {"command": ["/bin/sleep", "5"]}},
                            "limits": {"max_wait_s": 1}})
    t0 = time.time()
    r = s.post("/trigger/slow/wait?timeout=30")         # capped at max_wait_s
    assert r.status == 202, r.body
    assert 0.8 < time.time() - t0 < 4
    assert r.json()["status"] in ("queued", "running")


def test_wait_timeouts_fire_in_any_order(make_server):
    """A shorter wait parked after a longer one must not delay the longer
    one's timeout (lws 4.1 arms its libev timer only for the first)."""
    s = make_server(config={"jobs": {"slow": {"command": ["/bin/sleep", "8"]}}})
    out = {}

    def long_wait():
        t = time.time()
        r = s.post("/trigger/slow/wait?timeout=3")
        out["long"] = (r.status, time.time() - t)
    th = threading.Thread(target=long_wait)
    th.start()
    time.sleep(0.2)
    t0 = time.time()
    r = s.post("/trigger/slow/wait?timeout=1")
    assert r.status == 202 and 0.8 < time.time() - t0 < 1.7
    th.join(10)
    status, took = out["long"]
    assert status == 202 and 2.8 < took < 3.7, took


def test_read_your_writes(server):
    c = server.conn()
    try:
        for i in range(50):
            r = server.post("/trigger/echo/poll", {"i": i}, conn=c)
            assert r.status == 202
            jid = r.json()["id"]
            g = server.get("/jobs/%d" % jid, conn=c)
            assert g.status == 200, g.body
            assert g.json()["id"] == jid and g.json()["payload"] == {"i": i}
    finally:
        c.close()


def test_job_events_and_list(server):
    jid = server.post("/trigger/echo/wait", {"e": 1}).json()["id"]
    ev = server.get("/jobs/%d/events" % jid)
    assert ev.status == 200
    evs = ev.json()["events"]
    assert [e["type"] for e in evs] == ["job.enqueued", "job.started", "job.succeeded"]
    assert evs[0]["payload"] == {"e": 1}
    # Lists come from the read model, which may lag the log a moment.
    deadline = time.time() + 5
    while True:
        lst = server.get("/jobs?job=echo&status=succeeded&limit=5")
        assert lst.status == 200
        if jid in [j["id"] for j in lst.json()["jobs"]] or time.time() > deadline:
            break
        time.sleep(0.05)
    assert jid in [j["id"] for j in lst.json()["jobs"]]


def test_healthz_and_metrics(server):
    h = server.get("/healthz", token=None)
    assert h.status == 200 and h.json()["status"] == "ok"
    server.post("/trigger/echo")
    m = server.get("/metrics")
    assert m.status == 200
    text = m.body.decode()
    assert 'jobgate_enqueues_total{job="echo",outcome="accepted"} 1' in text
    assert "jobgate_log_commit_batch_size_bucket" in text
    assert 'jobgate_http_responses_total{code="202"} 1' in text
    assert server.get("/metrics", token=None).status == 401


def test_listen_address_is_exact(server):
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    mine = [l.split()[3] for l in out.splitlines() if l.split()[3].endswith(":%d" % server.port)]
    assert mine == ["127.0.0.1:%d" % server.port], mine


def raw_trigger(server, extra_headers, body=b"{}"):
    """POST /trigger/echo with raw header lines; (status, headers, body)."""
    out, _ = raw_exchange(server.port, b"POST /trigger/echo HTTP/1.1\r\nHost: x\r\n"
                          b"Authorization: Bearer " + server.token.encode() + b"\r\n" +
                          extra_headers + b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                          % len(body) + body, timeout=10, want=1)
    return responses(out)[0]


def test_idempotency_key_whitespace_is_trimmed(server):
    st, _, body = raw_trigger(server, b"Idempotency-Key: k1\r\n")
    assert st == 202
    first = json.loads(body)
    for spelling in (b"Idempotency-Key:  k1 \r\n", b"Idempotency-Key:\tk1\t \r\n",
                     b"Idempotency-Key: k1   \r\n"):
        st, hdrs, body = raw_trigger(server, spelling)
        assert st == 200, (spelling, st, body)
        assert hdrs.get("idempotent-replayed") == "true"
        assert json.loads(body)["id"] == first["id"]
        assert json.loads(body)["idempotency_key"] == "k1"
    st, _, body = raw_trigger(server, b"Idempotency-Key:    \r\n")
    assert st == 400 and json.loads(body)["error"] == "bad_request"


def curl_post(server, path, body_file, token=True, expect=True):
    """curl --data-binary @file; (http code, seconds) as curl measured."""
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
           "--max-time", "10", "--data-binary", "@" + body_file,
           "-H", "Content-Type: application/json"]
    if expect:
        cmd += ["-H", "Expect: 100-continue"]
    if token:
        cmd += ["-H", "Authorization: Bearer " + server.token]
    out = subprocess.run(cmd + ["http://127.0.0.1:%d%s" % (server.port, path)],
                         capture_output=True, text=True, timeout=30).stdout.split()
    return int(out[0]), float(out[1])


def test_expect_100_continue_is_answered(server, tmp_path):
    """curl sends Expect: 100-continue on bigger uploads and waits 1 s for
    the interim answer before sending the body anyway: without it every
    such trigger took 1.0 s."""
    import shutil
    if not shutil.which("curl"):
        import pytest
        pytest.skip("no curl")
    body = tmp_path / "5k.json"
    body.write_text(json.dumps({"a": "x" * 5000}))
    for _ in range(3):
        code, secs = curl_post(server, "/trigger/echo", str(body))
        assert code == 202 and secs < 0.8, (code, secs)
    # curl's own choice of headers (it may or may not add Expect).
    code, secs = curl_post(server, "/trigger/echo", str(body), expect=False)
    assert code == 202 and secs < 0.8, (code, secs)
    # Refused requests are answered at once, without waiting for the body.
    code, secs = curl_post(server, "/trigger/echo", str(body), token=False)
    assert code == 401 and secs < 0.8, (code, secs)
    code, secs = curl_post(server, "/trigger/nosuch", str(body))
    assert code == 404 and secs < 0.8, (code, secs)
    big = tmp_path / "big.json"
    big.write_text(json.dumps("x" * (2 << 20)))
    code, secs = curl_post(server, "/trigger/echo", str(big))
    assert code == 413 and secs < 0.8, (code, secs)
    assert server.post("/trigger/echo", {"after": 1}).status == 202


def test_expect_100_continue_raw(server):
    """The 100 comes after the header checks, before the body is read;
    the final answer follows the body on the same connection."""
    import socket
    body = b'{"k":"v"}'
    sk = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sk.sendall(b"POST /trigger/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                   + server.token.encode() + b"\r\nExpect: 100-continue\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body))
        got = sk.recv(4096)
        assert got == b"HTTP/1.1 100 Continue\r\n\r\n", got
        sk.sendall(body)
        got = b""
        while b"\r\n\r\n" not in got:
            got += sk.recv(4096)
        assert got.startswith(b"HTTP/1.1 202"), got[:60]
        # Refused at its headers (no token on a route that is not a
        # trigger): the final answer instead of a 100, then close.
        sk2 = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sk2.sendall(b"POST /jobs/1/cancel HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 10\r\n\r\n")
        got = b""
        while True:
            d = sk2.recv(4096)
            if not d:
                break
            got += d
        sk2.close()
        assert got.startswith(b"HTTP/1.1 401"), got[:60]
        assert b"connection: close" in got.lower()
        # A trigger without a token is read in full whatever the job (its
        # answer must not depend on whether the job takes signatures): 100,
        # the body, then 401 on a connection that stays open.
        sk3 = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sk3.sendall(b"POST /trigger/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 2\r\n\r\n")
        got = sk3.recv(4096)
        assert got == b"HTTP/1.1 100 Continue\r\n\r\n", got
        sk3.sendall(b"{}")
        got = b""
        while b"\r\n\r\n" not in got:
            got += sk3.recv(4096)
        assert got.startswith(b"HTTP/1.1 401"), got[:60]
        assert b"connection: close" not in got.lower()
        sk3.close()
    finally:
        sk.close()
