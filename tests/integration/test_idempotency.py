"""Idempotency-Key: decided by the single writer, so concurrent repeats of
one key give one job and one event; later repeats replay it."""
import threading


def test_concurrent_repeats_make_one_job(server):
    n = 50
    results, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def worker():
        try:
            barrier.wait(10)
            r = server.post("/trigger/echo/poll", {"k": "same"},
                            headers={"Idempotency-Key": "deploy-42"})
            with lock:
                results.append(r)
        except Exception as e:
            with lock:
                errors.append(repr(e))

    ts = [threading.Thread(target=worker) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors[:3]
    assert len(results) == n
    assert all(r.status in (200, 202) for r in results), [r.status for r in results]
    ids = {r.json()["id"] for r in results}
    assert len(ids) == 1
    jid = ids.pop()
    fresh = [r for r in results if r.status == 202]
    assert len(fresh) == 1
    assert "idempotent-replayed" not in fresh[0].headers
    for r in results:
        if r.status == 200:
            assert r.headers["idempotent-replayed"] == "true"
            assert r.headers["location"] == "/jobs/%d" % jid
    enq = [e for e in server.dump() if e["type"] == "job.enqueued"]
    assert len(enq) == 1 and enq[0]["job_id"] == jid
    assert enq[0]["idempotency_key"] == "deploy-42"

    # A later repeat: 200, same id, the job's current object, nothing appended.
    before = server.get("/healthz").json()["log_seq"]
    r = server.post("/trigger/echo/poll", {"k": "different body"},
                    headers={"Idempotency-Key": "deploy-42"})
    assert r.status == 200
    assert r.headers["idempotent-replayed"] == "true"
    assert r.json()["id"] == jid and r.json()["payload"] == {"k": "same"}
    assert r.json()["idempotency_key"] == "deploy-42"
    assert server.get("/healthz").json()["log_seq"] == before


def test_scope_is_token_job_and_key(make_server):
    s = make_server(config={
        "tokens": [{"name": "a", "token": "tok-a"}, {"name": "b", "token": "tok-b"}],
        "jobs": {"echo": {"builtin": "echo"}, "two": {"builtin": "echo"}}})
    h = {"Idempotency-Key": "k1"}
    a1 = s.post("/trigger/echo", {}, headers=h, token="tok-a")
    a2 = s.post("/trigger/echo", {}, headers=h, token="tok-a")
    b1 = s.post("/trigger/echo", {}, headers=h, token="tok-b")
    t1 = s.post("/trigger/two", {}, headers=h, token="tok-a")
    other = s.post("/trigger/echo", {}, headers={"Idempotency-Key": "k2"}, token="tok-a")
    assert [a1.status, a2.status, b1.status, t1.status, other.status] == [202, 200, 202, 202, 202]
    ids = [r.json()["id"] for r in (a1, a2, b1, t1, other)]
    assert ids[0] == ids[1]
    assert len(set(ids)) == 4


def test_replay_survives_restart(server):
    r1 = server.post("/trigger/echo", {}, headers={"Idempotency-Key": "restart-me"})
    assert r1.status == 202
    server.restart()
    r2 = server.post("/trigger/echo", {}, headers={"Idempotency-Key": "restart-me"})
    assert r2.status == 200 and r2.json()["id"] == r1.json()["id"]
