"""A 202 means on disk: trigger from 16 connections, kill -9, restart;
every acknowledged id is in the log and the log verifies."""
import threading
import time


def test_acked_triggers_survive_kill9(server):
    acked, errors = [], []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(i):
        conn = server.conn(timeout=10)
        try:
            for k in range(5000):               # bounded in count ...
                if stop.is_set():
                    break
                try:
                    r = server.post("/trigger/echo/poll", {"w": i, "k": k}, conn=conn)
                except Exception:
                    break                        # the server died under us
                if r.status == 202:
                    with lock:
                        acked.append(r.json()["id"])
                else:
                    with lock:
                        errors.append(r.status)
        finally:
            conn.close()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    time.sleep(1.5)                             # ... and in time
    server.kill9()
    stop.set()
    for t in ts:
        t.join(30)
    assert not any(t.is_alive() for t in ts)
    assert not errors, errors[:5]
    assert len(acked) > 100, "too few triggers to mean anything"

    v = server.jobgate("log", "verify", "--data-dir", server.data_dir)
    assert v.returncode == 0, v.stdout + v.stderr
    server.start()
    enq = {e["job_id"] for e in server.dump() if e["type"] == "job.enqueued"}
    missing = set(acked) - enq
    assert not missing, sorted(missing)[:10]
    for jid in acked[-5:]:
        g = server.get("/jobs/%d" % jid)
        assert g.status == 200, g.body
    v = server.jobgate("log", "verify", "--data-dir", server.data_dir)
    assert v.returncode == 0, v.stdout + v.stderr
