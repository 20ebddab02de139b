"""Read-your-writes (SPEC §1, issue 3): a job whose trigger was acknowledged
is never reported missing, whatever the projector's lag."""
from conftest import in_threads


def test_800_post_then_get_pairs_from_8_connections_never_miss(server):
    misses, errors = [], []

    def worker(w):
        c = server.conn()
        try:
            for i in range(100):
                r = server.post("/trigger/echo/poll", {"w": w, "i": i}, conn=c)
                if r.status != 202:
                    errors.append((r.status, r.body))
                    continue
                jid = r.json()["id"]
                g = server.get("/jobs/%d" % jid, conn=c)
                if g.status != 200:
                    misses.append((jid, g.status, g.body))
                    continue
                j = g.json()
                if j["id"] != jid or j["payload"] != {"w": w, "i": i} or j["seq"] < jid:
                    misses.append((jid, "wrong body", g.body))
        finally:
            c.close()

    in_threads(worker, 8)
    assert not errors, errors[:3]
    assert not misses, misses[:3]
    enq = [e for e in server.dump() if e["type"] == "job.enqueued"]
    assert len(enq) == 800


def test_lists_show_every_acknowledged_job(server):
    """SPEC §1 read-your-writes holds for GET /jobs too: a list requested
    after a 202 contains that job (the list waits for the projector)."""
    misses, errors = [], []

    def worker(k):
        try:
            for i in range(30):
                r = server.post("/trigger/echo", {"k": k, "i": i})
                assert r.status == 202
                jid = r.json()["id"]
                lst = server.get("/jobs?limit=5")
                assert lst.status == 200
                ids = [j["id"] for j in lst.json()["jobs"]]
                if jid not in ids and (not ids or max(ids) < jid):
                    misses.append((jid, ids))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    in_threads(worker, 8)
    assert not errors, errors[:3]
    assert not misses, misses[:3]
