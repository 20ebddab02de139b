"""The SQLite read model end to end: exactly-once across kill -9, replay
determinism, pagination, outside sqlite3 readers, scripts/replay."""
import os
import random
import sqlite3
import subprocess
import threading
import time

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "replay")
FINAL = ("succeeded", "failed", "canceled")


def db_path(s):
    return os.path.join(s.data_dir, "jobs.db")


def rows(path):
    """(applied_seq, every jobs row in id order) from one snapshot."""
    c = sqlite3.connect("file:%s?mode=ro" % path, uri=True, isolation_level=None)
    try:
        c.execute("BEGIN")
        applied = c.execute("select value from meta where key='applied_seq'").fetchone()[0]
        data = c.execute("select * from jobs order by id").fetchall()
        c.execute("COMMIT")
        return applied, data
    finally:
        c.close()


def wait_projected(s, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        h = s.get("/healthz").json()
        if h["projected_seq"] >= h["log_seq"]:
            return h
        time.sleep(0.02)
    raise AssertionError("projector did not reach the log head: %r" % h)


def wait_final(s, ids, timeout=30):
    deadline = time.time() + timeout
    for i in ids:
        while True:
            j = s.get("/jobs/%d" % i).json()
            if j["status"] in FINAL:
                break
            assert time.time() < deadline, "job %d stuck in %s" % (i, j["status"])
            time.sleep(0.02)


def trigger_many(s, n, job="echo"):
    ids = []
    c = s.conn()
    for k in range(n):
        r = s.post("/trigger/%s" % job, {"k": k}, conn=c)
        assert r.status == 202, r.body
        ids.append(r.json()["id"])
    c.close()
    return ids


def enqueued_upto(s, seq):
    return sum(1 for e in s.dump() if e["type"] == "job.enqueued" and e["seq"] <= seq)


def replay(s, *args):
    return s.jobgate("replay", "--data-dir", s.data_dir, *args)


def test_exactly_once_across_kill9(server):
    rnd = random.Random(7)
    for rnd_no in range(4):
        stop = threading.Event()

        def fire():
            try:
                c = server.conn(timeout=5)
                while not stop.is_set():
                    server.post("/trigger/echo", {"r": rnd_no}, conn=c)
            except Exception:
                pass        # the server was killed under us

        ts = [threading.Thread(target=fire) for _ in range(4)]
        for t in ts:
            t.start()
        time.sleep(0.1 + rnd.random() * 0.6)
        server.kill9()
        stop.set()
        for t in ts:
            t.join(10)
        server.start()
        r = replay(server, "--check")
        assert r.returncode == 0, r.stdout + r.stderr
        applied, data = rows(db_path(server))
        assert len(data) == enqueued_upto(server, applied)
    h = wait_projected(server)
    applied, data = rows(db_path(server))
    assert applied >= h["projected_seq"]
    assert len(data) == enqueued_upto(server, applied)
    assert replay(server, "--check").returncode == 0


def test_two_replays_identical_and_equal_live(server, tmp_path):
    ids = trigger_many(server, 120)
    wait_final(server, ids)
    wait_projected(server)
    a, b = str(tmp_path / "r1.db"), str(tmp_path / "r2.db")
    assert replay(server, "--out", a).returncode == 0
    assert replay(server, "--out", b).returncode == 0
    ra, rb = rows(a), rows(b)
    assert ra == rb
    live = rows(db_path(server))
    if live[0] == ra[0]:        # nothing new was applied meanwhile
        assert live == ra
    assert len(ra[1]) == len(ids)
    # --out never overwrites.
    r = replay(server, "--out", a)
    assert r.returncode == 1 and "exists" in r.stderr


def test_pagination_walks_every_job_once(server):
    ids = set(trigger_many(server, 230))
    wait_projected(server)      # lists read the projection only
    seen, cursor, pages = [], None, 0
    while True:
        q = "/jobs?limit=17" + ("&cursor=" + cursor if cursor else "")
        r = server.get(q)
        assert r.status == 200, r.body
        body = r.json()
        seen += [j["id"] for j in body["jobs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) == len(ids) and set(seen) == ids
    assert pages == (len(ids) + 16) // 17
    # Filters.
    r = server.get("/jobs?job=echo&limit=1000").json()
    assert len(r["jobs"]) == len(ids) and r["next_cursor"] is None
    assert server.get("/jobs?job=nope").json() == {"jobs": [], "next_cursor": None}
    for st in ("queued", "running", "succeeded"):
        for j in server.get("/jobs?status=%s&limit=1000" % st).json()["jobs"]:
            assert j["status"] == st
    # Bad limits and cursors are 400; unknown ids 404.
    for bad in ("limit=0", "limit=1001", "limit=-1", "limit=abc",
                "cursor=zz", "cursor=", "cursor=0000000000000000",
                "cursor=%2e%2e", "status=bogus"):
        r = server.get("/jobs?" + bad)
        assert r.status == 400, (bad, r.status, r.body)
    assert server.get("/jobs?limit=1000").status == 200
    assert server.get("/jobs?limit=1").status == 200
    r = server.get("/jobs/999999999")
    assert r.status == 404 and r.json()["error"] in ("not_found", "unknown_job")


def test_outside_sqlite3_reader_does_not_stall(server):
    trigger_many(server, 20)
    wait_projected(server)
    sh = subprocess.Popen(["sqlite3", db_path(server)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sh.stdin.write("BEGIN;\nSELECT count(*) FROM jobs;\n")
        sh.stdin.flush()
        first = sh.stdout.readline().strip()
        assert first.isdigit()
        t0 = time.time()
        ids = trigger_many(server, 300)
        assert time.time() - t0 < 30
        h = wait_projected(server, timeout=10)
        assert h["projected_seq"] >= ids[-1]
        # The shell's snapshot did not move.
        sh.stdin.write("SELECT count(*) FROM jobs;\n")
        sh.stdin.flush()
        assert sh.stdout.readline().strip() == first
    finally:
        sh.stdin.write("COMMIT;\n.quit\n")
        sh.stdin.flush()
        sh.wait(10)


def test_direct_sqlite3_group_by_while_running(server):
    ids = trigger_many(server, 30)
    wait_final(server, ids)
    wait_projected(server)
    r = subprocess.run(["sqlite3", db_path(server),
                        "select status, count(*) from jobs group by 1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "succeeded|30" in r.stdout


def test_replay_cli_arguments(server):
    assert server.jobgate("replay", "--help").returncode == 0
    r = server.jobgate("replay", "--bogus")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert server.jobgate("replay", "--out").returncode == 2
    # Replacing the live projection is refused while the server runs.
    r = replay(server)
    assert r.returncode == 1 and "running server" in r.stderr


def test_check_reports_a_difference(server):
    trigger_many(server, 10)
    wait_projected(server)
    server.kill9()
    c = sqlite3.connect(db_path(server))
    c.execute("update jobs set attempts = attempts + 5 where id = (select max(id) from jobs)")
    c.commit()
    c.close()
    r = replay(server, "--check")
    assert r.returncode == 1
    # Which side holds which value is named (tester: "the first" said nothing).
    assert "attempts is" in r.stdout and "in the log's replay vs" in r.stdout and \
        "in the projection" in r.stdout, r.stdout
    c = sqlite3.connect(db_path(server))
    c.execute("delete from jobs where id = (select max(id) from jobs)")
    c.commit()
    c.close()
    r = replay(server, "--check")
    assert r.returncode == 1 and "is only in the log's replay" in r.stdout, r.stdout
    # A file that is no read model is named as such, not as "SQLite failure".
    other = os.path.join(server.tmp, "other.db")
    c = sqlite3.connect(other)
    c.execute("create table foo(x)")
    c.close()
    text = os.path.join(server.tmp, "notes.txt")
    with open(text, "w") as f:
        f.write("not a database\n" * 100)
    for f in (other, text):
        r = replay(server, "--check", "--out", f)
        assert r.returncode == 1 and r.stderr.strip().endswith(
            "it is not a jobgate read model (no jobs and meta tables)"), r.stderr
        assert "sqlite failed" not in r.stderr, r.stderr


def test_scripts_replay(server):
    ids = trigger_many(server, 40)
    wait_final(server, ids)
    wait_projected(server)
    env = dict(os.environ, JOBGATE_BIN=server.cmd()[0])
    run = lambda *a: subprocess.run([SCRIPT, "--data-dir", server.data_dir] + list(a),
                                    capture_output=True, text=True, timeout=120, env=env)
    r = run()
    assert r.returncode == 1 and "running server" in r.stderr
    r = run("--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "succeeded  40" in r.stdout
    out = os.path.join(server.tmp, "side.db")
    r = run("--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "before" in r.stdout and "after" in r.stdout
    server.kill9()
    before = rows(db_path(server))
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "before" in r.stdout and "after" in r.stdout and "succeeded  40" in r.stdout
    baks = [f for f in os.listdir(server.data_dir) if f.startswith("jobs.db.bak-")]
    assert baks, os.listdir(server.data_dir)
    assert rows(db_path(server))[1] == rows(out)[1]
    assert rows(db_path(server))[1] == before[1]
    assert run("--bogus").returncode == 2
    # A wrong JOBGATE_BIN is refused before anything is read or backed up
    # (it was bash's exit 126/127 after the counts, and a stray backup).
    for wrong in ("/nonexistent", "/etc/passwd", "/bin/true"):
        r = subprocess.run([SCRIPT, "--data-dir", server.data_dir], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, JOBGATE_BIN=wrong))
        assert r.returncode == 1 and "JOBGATE_BIN" in r.stderr, (wrong, r.stderr)
        assert r.stdout == "", r.stdout
    assert [f for f in os.listdir(server.data_dir) if f.startswith("jobs.db.bak-")] == baks
    # A bare command name is looked up on PATH, as the default is.
    bindir = os.path.dirname(server.cmd()[0])
    r = subprocess.run([SCRIPT, "--data-dir", server.data_dir, "--check"], capture_output=True,
                       text=True, timeout=60,
                       env=dict(os.environ, JOBGATE_BIN="jobgate",
                                PATH=bindir + os.pathsep + os.environ.get("PATH", "")))
    assert r.returncode == 0, r.stderr
    # The server starts on the rebuilt projection and keeps going.
    server.start()
    assert server.get("/jobs/%d" % ids[0]).json()["status"] == "succeeded"
    assert server.post("/trigger/echo", {}).status == 202


def test_check_a_read_only_copy(make_server, tmp_path):
    """A data dir on a read-only mount (a mounted backup): `replay --check`
    and `scripts/replay --check` read the projection immutable and put their
    scratch file in TMPDIR (tester, session 5: 'SQLite failure')."""
    s = make_server()
    for _ in range(3):
        assert s.post("/trigger/echo", {}).status == 202
    assert s.stop() == 0
    ro = str(tmp_path / "ro")
    os.mkdir(ro)
    if os.geteuid() == 0:   # root writes through mode bits: use a read-only bind mount
        if subprocess.run(["mount", "--bind", s.data_dir, ro]).returncode != 0:
            pytest.skip("cannot bind-mount here")
        subprocess.run(["mount", "-o", "remount,bind,ro", ro], check=True)
        undo = lambda: subprocess.run(["umount", ro], check=True)
    else:
        os.rmdir(ro)
        ro = s.data_dir
        os.chmod(ro, 0o555)
        undo = lambda: os.chmod(ro, 0o755)
    try:
        assert not os.access(ro, os.W_OK)
        r = s.jobgate("replay", "--data-dir", ro, "--check")
        assert r.returncode == 0 and r.stdout.startswith("check ok"), (r.stdout, r.stderr)
        # The scratch file goes in a private directory of its own (not a
        # name others can guess in a shared /tmp), removed afterwards.
        scratch = str(tmp_path / "scratch")
        os.mkdir(scratch)
        r = subprocess.run([s.cmd()[0], "replay", "--data-dir", ro, "--check"],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, TMPDIR=scratch))
        assert r.returncode == 0 and r.stdout.startswith("check ok"), (r.stdout, r.stderr)
        assert os.listdir(scratch) == []
        r = subprocess.run([SCRIPT, "--data-dir", ro, "--check"], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, JOBGATE_BIN=s.cmd()[0]))
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "unreadable" not in r.stdout and "total      3" in r.stdout, r.stdout
    finally:
        undo()
