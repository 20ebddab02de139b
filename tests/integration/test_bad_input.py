"""Every bad input of SPEC §4/§7 gets its status and JSON error, appends
nothing to the log, and leaves the server healthy."""
import hashlib
import hmac
import json
import socket
import time

import pytest

from conftest import raw_exchange

SECRET = "from-github"
CONFIG = {
    "tokens": [{"name": "ci", "token": "ci-secret"},
               {"name": "ops", "token": "ops-secret", "jobs": ["echo"]}],
    "jobs": {"echo": {"builtin": "echo"},
             "other": {"builtin": "echo"},
             "hook": {"builtin": "echo", "hmac_secret": SECRET,
                      "hmac_header": "X-Hub-Signature-256"}},
    "limits": {"max_payload_bytes": 1024, "max_wait_s": 5},
}


@pytest.fixture
def srv(make_server):
    return make_server(config=CONFIG)


def log_seq(s):
    h = s.get("/healthz", token=None)
    assert h.status == 200
    return h.json()["log_seq"]


def sign(body):
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def raw(s, data, timeout=5):
    """Send raw bytes; return what came back up to the first whole answer,
    the server's close, or the timeout."""
    return raw_exchange(s.port, data, timeout, want=1)[0]


def parse(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        hdrs[k.strip().lower().decode()] = v.strip().decode()
    return status, hdrs, body


def check_error(r, status, code):
    assert r.status == status, (r.status, r.body)
    assert r.headers["content-type"] == "application/json"
    e = r.json()
    assert e["error"] == code and isinstance(e["message"], str) and e["message"]


CASES = [
    # (name, method, path, body, headers, token, status, code)
    ("no token", "POST", "/trigger/echo", b"{}", {}, None, 401, "unauthorized"),
    ("wrong token", "POST", "/trigger/echo", b"{}", {}, "nope", 401, "unauthorized"),
    ("lower-case scheme, wrong", "POST", "/trigger/echo", b"{}", {"Authorization": "bearer x"}, None, 401, "unauthorized"),
    ("token not allowed the job", "POST", "/trigger/other", b"{}", {}, "ops-secret", 403, "forbidden"),
    ("unknown job", "POST", "/trigger/nosuch", b"{}", {}, "ci-secret", 404, "unknown_job"),
    ("bad name bytes", "POST", "/trigger/%C3%28", b"{}", {}, "ci-secret", 404, "unknown_job"),
    ("bad json", "POST", "/trigger/echo", b"{nope", {}, "ci-secret", 400, "invalid_json"),
    ("trailing garbage json", "POST", "/trigger/echo", b"{} x", {}, "ci-secret", 400, "invalid_json"),
    ("bad utf-8 json", "POST", "/trigger/echo", b'"\xff"', {}, "ci-secret", 400, "invalid_json"),
    ("bad mode", "POST", "/trigger/echo/fast", b"{}", {}, "ci-secret", 400, "bad_request"),
    ("bad timeout", "POST", "/trigger/echo/wait?timeout=-1", b"{}", {}, "ci-secret", 400, "bad_request"),
    ("long idempotency key", "POST", "/trigger/echo", b"{}", {"Idempotency-Key": "k" * 256}, "ci-secret", 400, "bad_request"),
    ("bad hmac", "POST", "/trigger/hook", b"{}", {"X-Hub-Signature-256": "sha256=" + "0" * 64}, None, 401, "unauthorized"),
    ("hmac of other body", "POST", "/trigger/hook", b"{}", {"X-Hub-Signature-256": sign(b"[]")}, None, 401, "unauthorized"),
    ("missing hmac", "POST", "/trigger/hook", b"{}", {}, None, 401, "unauthorized"),
    ("malformed hmac", "POST", "/trigger/hook", b"{}", {"X-Hub-Signature-256": "sha1=abc"}, None, 401, "unauthorized"),
    ("unknown route", "GET", "/nope", None, {}, "ci-secret", 404, "not_found"),
    ("trailing slash", "GET", "/jobs/", None, {}, "ci-secret", 404, "not_found"),
    ("id not decimal", "GET", "/jobs/abc", None, {}, "ci-secret", 404, "not_found"),
    ("id leading zero", "GET", "/jobs/01", None, {}, "ci-secret", 404, "not_found"),
    ("id overflow", "GET", "/jobs/99999999999999999999999", None, {}, "ci-secret", 404, "not_found"),
    ("unknown id", "GET", "/jobs/424242", None, {}, "ci-secret", 404, "not_found"),
    ("unknown id events", "GET", "/jobs/424242/events", None, {}, "ci-secret", 404, "not_found"),
    ("cancel unknown", "POST", "/jobs/424242/cancel", None, {}, "ci-secret", 404, "not_found"),
    ("retry unknown", "POST", "/jobs/424242/retry", None, {}, "ci-secret", 404, "not_found"),
    ("events stream unknown id", "GET", "/events?job_id=424242", None, {}, "ci-secret", 404, "not_found"),
    ("bad limit", "GET", "/jobs?limit=0", None, {}, "ci-secret", 400, "bad_request"),
    ("big limit", "GET", "/jobs?limit=1001", None, {}, "ci-secret", 400, "bad_request"),
    ("bad status", "GET", "/jobs?status=bogus", None, {}, "ci-secret", 400, "bad_request"),
    ("bad cursor", "GET", "/jobs?cursor=zz", None, {}, "ci-secret", 400, "bad_request"),
    ("long path", "GET", "/" + "a" * 3000, None, {}, "ci-secret", 400, "bad_request"),
    ("jobs without token", "GET", "/jobs", None, {}, None, 401, "unauthorized"),
    ("ws without upgrade", "GET", "/ws", None, {}, "ci-secret", 400, "bad_request"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request(srv, case):
    _, method, path, body, headers, token, status, code = case
    before = log_seq(srv)
    r = srv.request(method, path, body=body, headers=headers,
                    token=token if token else False)
    check_error(r, status, code)
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    assert log_seq(srv) == before
    assert srv.post("/trigger/echo", {"ok": 1}, token="ci-secret").status == 202


def test_wrong_method_has_allow(srv):
    before = log_seq(srv)
    for method, path, allow in [("GET", "/trigger/echo", "POST"), ("PUT", "/jobs/1", "GET, HEAD"),
                                ("DELETE", "/trigger/echo/poll", "POST"),
                                ("POST", "/healthz", "GET, HEAD"), ("HEAD", "/trigger/echo", "POST"), ("HEAD", "/events", "GET"), ("GET", "/jobs/1/cancel", "POST")]:
        r = srv.request(method, path, token="ci-secret")
        if method == "HEAD":    # same headers, no body
            assert r.status == 405 and r.body == b""
        else:
            check_error(r, 405, "method_not_allowed")
        assert r.headers["allow"] == allow
    assert log_seq(srv) == before


def test_errors_keep_the_connection(srv):
    c = srv.conn()
    try:
        r = srv.post("/trigger/echo", b"{bad", token="ci-secret", conn=c)
        check_error(r, 400, "invalid_json")
        r = srv.post("/trigger/nosuch", b"{}", token="ci-secret", conn=c)
        check_error(r, 404, "unknown_job")
        r = srv.post("/trigger/echo", b"{}", token="nope", conn=c)
        check_error(r, 401, "unauthorized")
        r = srv.post("/trigger/echo", b"{}", token="ci-secret", conn=c)
        assert r.status == 202
    finally:
        c.close()


def test_good_hmac_is_accepted(srv):
    body = b'{"ref":"main"}'
    r = srv.post("/trigger/hook", body, token=False,
                 headers={"X-Hub-Signature-256": sign(body)})
    assert r.status == 202, r.body
    assert r.json()["payload"] == {"ref": "main"}
    # Whitespace around the header's value is not part of it (RFC 9110 §5.5).
    resp = raw(srv, b"POST /trigger/hook HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                    b"X-Hub-Signature-256: \t%s \t\r\n\r\n%s" % (len(body), sign(body).encode(), body))
    assert parse(resp)[0] == 202, resp


def expect_continue(s, path, body, extra=b""):
    """POST with Expect: 100-continue, no token: (interim status or None,
    final status, final JSON)."""
    sk = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    try:
        sk.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra +
                   b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
        out = sk.recv(65536)
        interim = None
        if out.startswith(b"HTTP/1.1 100"):
            interim = 100
            out = out.partition(b"\r\n\r\n")[2]
            sk.sendall(body)
        while b"\r\n\r\n" not in out:
            d = sk.recv(65536)
            assert d, "closed without an answer"
            out += d
        head, _, rest = out.partition(b"\r\n\r\n")
        n = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
             if l.lower().startswith(b"content-length:")][0]
        while len(rest) < n:
            d = sk.recv(65536)
            assert d
            rest += d
        return interim, int(head.split()[1]), json.loads(rest[:n])
    finally:
        sk.close()


def test_callers_without_a_token_learn_nothing_about_job_names(srv):
    """A signed job, a plain one and a missing one answer an unauthenticated
    caller alike, whatever else is wrong with the request."""
    before = log_seq(srv)
    probes = [
        ("POST", "/trigger/{}", b"{}", {}),
        ("POST", "/trigger/{}/bogus", b"{}", {}),
        ("POST", "/trigger/{}/wait?timeout=x", b"{}", {}),
        ("POST", "/trigger/{}/poll?timeout=1", b"{}", {}),
        ("POST", "/trigger/{}", b"{}", {"Idempotency-Key": "k" * 256}),
        ("POST", "/trigger/{}", b"{nope", {}),
        ("POST", "/trigger/{}", b"", {}),
        ("POST", "/trigger/{}", b'"' + b"a" * 1100 + b'"', {}),
        ("POST", "/trigger/{}", b"{}", {"Authorization": "Bearer nope"}),
        ("POST", "/trigger/{}", b"{}", {"X-Hub-Signature-256": "sha256=" + "0" * 64}),
    ]
    for method, path, body, headers in probes:
        seen = {}
        for name in ("hook", "echo", "nosuch"):
            r = srv.request(method, path.format(name), body=body, headers=headers, token=False)
            seen[name] = (r.status, r.body)
        assert len(set(seen.values())) == 1, (path, headers, seen)
        status = seen["hook"][0]
        assert status in (401, 413), (path, seen)
    for name in ("hook", "echo", "nosuch"):
        assert expect_continue(srv, "/trigger/%s/bogus" % name, b"{}") == \
            (100, 401, {"error": "unauthorized",
                        "message": "missing or invalid bearer token or signature"})
    assert log_seq(srv) == before
    # With a good signature the request is judged on its merits.
    body = b"{}"
    for path, status in (("/trigger/hook/bogus", 400), ("/trigger/hook/wait?timeout=x", 400),
                         ("/trigger/hook/poll", 202)):
        r = srv.post(path, body, token=False, headers={"X-Hub-Signature-256": sign(body)})
        assert r.status == status, (path, r.status, r.body)


def test_oversize_refused_without_reading(srv):
    before = log_seq(srv)
    t0 = time.time()
    resp = raw(srv, b"POST /trigger/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ci-secret\r\n"
                    b"Content-Length: 100000000\r\n\r\n" + b"[" * 100)
    assert time.time() - t0 < 3
    status, hdrs, body = parse(resp)
    assert status == 413
    assert json.loads(body)["error"] == "payload_too_large"
    assert hdrs.get("connection") == "close"
    # Just over the limit, sent whole: still 413.
    r = srv.post("/trigger/echo", b'"' + b"a" * 1100 + b'"', token="ci-secret")
    check_error(r, 413, "payload_too_large")
    assert log_seq(srv) == before


def test_oversize_chunked(srv):
    before = log_seq(srv)
    chunk = b"a" * 600
    resp = raw(srv, b"POST /trigger/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ci-secret\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" +
                    (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 2)
    status, _, body = parse(resp)
    assert status == 413 and json.loads(body)["error"] == "payload_too_large"
    resp = raw(srv, b"POST /trigger/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ci-secret\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    status, _, body = parse(resp)
    assert status == 400 and json.loads(body)["error"] == "bad_request"
    assert log_seq(srv) == before


def test_bad_framing(srv):
    before = log_seq(srv)
    for hdr in (b"Content-Length: abc\r\n", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                b"Transfer-Encoding: gzip\r\n"):
        resp = raw(srv, b"POST /trigger/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ci-secret\r\n"
                        + hdr + b"\r\n{}")
        status, _, body = parse(resp)
        assert status == 400 and json.loads(body)["error"] == "bad_request"
    assert log_seq(srv) == before


@pytest.mark.parametrize("junk", [b"\x00\x01\x02\x03garbage\r\n\r\n", b"HELLO\r\n\r\n",
                                  b"GET / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00",
                                  b"POST /trigger/echo HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n"])
def test_garbage_on_the_socket(srv, junk):
    before = log_seq(srv)
    resp = raw(srv, junk, timeout=3)
    # lws answers some of these itself (a 4xx page) and drops the rest.
    if resp:
        assert resp.startswith(b"HTTP/1."), resp[:40]
        assert 400 <= int(resp.split()[1]) < 500
    assert log_seq(srv) == before
    assert srv.post("/trigger/echo", {"after": "junk"}, token="ci-secret").status == 202


def test_slow_body_times_out(srv):
    """A client that never sends its announced body gets 408 and a close."""
    sk = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        sk.sendall(b"POST /trigger/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ci-secret\r\n"
                   b"Content-Length: 10\r\n\r\n{")
        t0 = time.time()
        got = b""
        data = sk.recv(4096)
        while data:
            got += data
            data = sk.recv(4096)
        assert time.time() - t0 < 25
    finally:
        sk.close()
    assert got.startswith(b"HTTP/1.1 408"), got
    assert b'"error":"request_timeout"' in got
    assert srv.post("/trigger/echo", {}, token="ci-secret").status == 202


def test_trickled_body_times_out_whole(srv):
    """The body deadline counts from the headers, not from the last byte: a
    body trickled one byte every 2 s gets 408 and adds no event."""
    head = srv.jobgate("log", "stat", "--data-dir", srv.data_dir).stdout
    sk = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    got = b""
    try:
        sk.sendall(b"POST /trigger/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ci-secret\r\n"
                   b"Content-Length: 9\r\n\r\n")
        sk.settimeout(2)
        t0 = time.time()
        for ch in b"[1,2,3,4]":
            try:
                data = sk.recv(4096)
                if not data:
                    break
                got += data
                break
            except socket.timeout:
                pass
            try:
                sk.sendall(bytes([ch]))
            except OSError:
                break
        sk.settimeout(10)
        while True:
            data = sk.recv(4096)
            if not data:
                break
            got += data
        assert time.time() - t0 < 16
    finally:
        sk.close()
    assert got.startswith(b"HTTP/1.1 408"), got
    assert srv.jobgate("log", "stat", "--data-dir", srv.data_dir).stdout == head


def test_refused_request_still_has_a_body_deadline(srv):
    """A request refused at its headers (here 404) whose body is drained
    gets its answer within the body deadline even if the body trickles in,
    instead of holding the connection for as long as the client drips."""
    sk = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    got = b""
    try:
        sk.sendall(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        sk.settimeout(2)
        t0 = time.time()
        while time.time() - t0 < 20:
            try:
                data = sk.recv(4096)
                if not data:
                    break
                got += data
                continue
            except socket.timeout:
                pass
            try:
                sk.sendall(b"x")
            except OSError:
                break
        assert time.time() - t0 < 16
    finally:
        sk.close()
    assert got.startswith(b"HTTP/1.1 404"), got
    assert b'"error":"not_found"' in got


def test_query_parameter_without_a_name_says_so(srv):
    for path, msg in (("/jobs?=1", "unknown query parameter with an empty name"),
                      ("/jobs?limit=1&&x", "unknown query parameter: x"),
                      ("/jobs??", "unknown query parameter (its name is not shown"),
                      ("/jobs?a%3Cb=1", "unknown query parameter (its name is not shown")):
        r = srv.request("GET", path, token="ci-secret")
        check_error(r, 400, "bad_request")
        assert r.json()["message"].startswith(msg), (path, r.body)


@pytest.mark.parametrize("method,path,name", [
    ("POST", "/trigger/echo/wait?timeout=1&timeout=2", "timeout"),
    ("GET", "/jobs?limit=1&limit=2", "limit"),
    ("GET", "/jobs?status=queued&job=echo&status=failed", "status"),
    ("GET", "/events?from_seq=1&from_seq=2", "from_seq"),
])
def test_duplicate_query_parameter(srv, method, path, name):
    before = log_seq(srv)
    r = srv.request(method, path, body=b"{}" if method == "POST" else None,
                    token="ci-secret")
    check_error(r, 400, "bad_request")
    assert name in r.json()["message"], r.body
    assert log_seq(srv) == before
    # The WebSocket upgrade refuses it the same way.
    sk = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        sk.sendall(b"GET /ws?job_id=1&job_id=2 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Authorization: Bearer ci-secret\r\n\r\n")
        resp = sk.recv(4096)
    finally:
        sk.close()
    assert resp.startswith(b"HTTP/1.1 400"), resp[:80]
    assert b"duplicate query parameter: job_id" in resp


def test_too_deep_json_says_so(server):
    before = log_seq(server)
    r = server.post("/trigger/echo", b"[" * 513 + b"]" * 513)
    check_error(r, 400, "invalid_json")
    assert "deeper than 512" in r.json()["message"], r.body
    # Brackets inside strings are not nesting: plain bad JSON keeps its message.
    r = server.post("/trigger/echo", b'["' + b"[" * 600 + b'",')
    check_error(r, 400, "invalid_json")
    assert r.json()["message"] == "body is not valid JSON"
    assert log_seq(server) == before
    assert server.post("/trigger/echo", b"[" * 512 + b"]" * 512).status == 202


@pytest.mark.parametrize("junk", [b"HELLO\r\n\r\n", b"BREW /jobs HTTP/1.1\r\nHost: x\r\n\r\n",
                                  b"\x00\x01\x02\x03garbage\r\n\r\n",
                                  b"\x16\x03\x01\x02\x00\x01\x00"])
def test_malformed_http_gets_json_400(srv, junk):
    before = log_seq(srv)
    status, hdrs, body = parse(raw(srv, junk, timeout=3))
    assert status == 400
    assert hdrs["content-type"] == "application/json"
    assert hdrs.get("connection") == "close"
    assert json.loads(body)["error"] == "bad_request"
    assert log_seq(srv) == before
    assert srv.post("/trigger/echo", {"after": "junk"}, token="ci-secret").status == 202
    assert not [l for l in srv.log_lines() if l.get("level") == "ERROR"]


def test_signed_job_callers_cannot_starve_token_holders(make_server):
    """Bodies of callers without a token (a signed job's, unverified until
    the body is in) may hold at most a quarter of the body budget; past it
    such a request is drained and refused like any tokenless trigger."""
    big = 16 << 20
    cfg = dict(CONFIG, limits={"max_payload_bytes": big, "max_wait_s": 5})
    s = make_server(config=cfg)
    held = []
    try:
        for _ in range(17):     # 17 x 16 MiB > the whole 256 MiB budget
            sk = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            sk.sendall(b"POST /trigger/hook HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Length: %d\r\n\r\n{" % big)
            held.append(sk)
        time.sleep(0.5)
        for sk in held:         # none is refused with a telltale 503
            sk.settimeout(0.1)
            with pytest.raises(socket.timeout):
                sk.recv(4096)
        r = s.post("/trigger/echo", {"ok": 1}, token="ci-secret")
        assert r.status == 202, (r.status, r.body)
        # The tokenless budget is full: a signed job's small request is now
        # answered exactly like a plain or missing job's.
        seen = {}
        for name in ("hook", "echo", "nosuch"):
            r = s.post("/trigger/" + name, b"{}", token=False,
                       headers={"X-Hub-Signature-256": sign(b"{}")})
            seen[name] = (r.status, r.body)
        assert len(set(seen.values())) == 1 and seen["echo"][0] == 401, seen
    finally:
        for sk in held:
            sk.close()


def test_slow_tokenless_body_is_answered_alike_for_every_job(srv):
    """A tokenless trigger whose body never completes gets the one 401 at
    the body deadline, signed job or not (not 408 for a signed one)."""
    socks = {}
    for name in ("hook", "echo", "nosuch"):
        sk = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
        sk.sendall(b"POST /trigger/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345"
                   % name.encode())
        socks[name] = sk
    seen = {}
    for name, sk in socks.items():
        out = b""
        try:
            while b"\r\n\r\n" not in out:
                d = sk.recv(4096)
                if not d:
                    break
                out += d
        finally:
            sk.close()
        status, _, body = parse(out)
        seen[name] = (status, body)
    assert len(set(seen.values())) == 1 and seen["hook"][0] == 401, seen


def test_signature_in_a_header_lws_knows(make_server):
    """lws 4.1 files the headers it knows (X-Auth-Token is one) apart from
    custom ones; a job may still take its signature there."""
    cfg = dict(CONFIG, jobs=dict(CONFIG["jobs"], known={
        "builtin": "echo", "hmac_secret": SECRET, "hmac_header": "X-Auth-Token"}))
    s = make_server(config=cfg)
    body = b'{"k":1}'
    r = s.post("/trigger/known", body, token=False, headers={"X-Auth-Token": sign(body)})
    assert r.status == 202, (r.status, r.body)
    r = s.post("/trigger/known", body, token=False, headers={"X-Auth-Token": sign(b"{}")})
    assert r.status == 401


def test_lone_surrogate_escapes_are_refused_and_never_stored_as_json(make_server):
    """"\\ud800" is grammatical JSON but no Unicode text: jq refuses the
    answers and streams that relay it and SQLite's ->> turns it into
    invalid UTF-8 (tester, session 8).  A body holding one is a 400 that
    says why; a job whose stdout holds one gets it as a plain string."""
    s = make_server(config={"jobs": {
        "echo": {"builtin": "echo"},
        "out": {"command": ["/bin/sh", "-c", "printf '%s' '[\"\\ud800\"]'"]}}})
    before = log_seq(s)
    for body in (b'"\\ud800"', b'{"k":"a\\udc00"}', b'["\\ud83d x"]', b'{"\\udbff":1}'):
        r = s.request("POST", "/trigger/echo", body=body)
        check_error(r, 400, "invalid_json")
        assert "lone surrogate" in r.json()["message"], r.body
    assert log_seq(s) == before
    r = s.request("POST", "/trigger/echo/wait", body=b'"\\ud83d\\ude00"')
    assert r.status == 200 and r.json()["result"] == "\U0001F600", r.body
    r = s.request("POST", "/trigger/out/wait")
    assert r.status == 200, r.body
    job = r.json()
    assert job["status"] == "succeeded" and job["result"] == '["\\ud800"]', job
    json.loads(r.body.decode("ascii"), strict=True)
