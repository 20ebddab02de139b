"""What an operator meets when the data dir is damaged or the start-up
input is wrong: a cut-short or corrupted log, bad tokens, config syntax
errors, replay against nothing.  Each gets a clear message and an exit
code, never a crash, and nothing is left half-written."""
import json
import os
import signal
import subprocess

from conftest import BIN, TOKEN


def run(*args, env=None):
    return subprocess.run([BIN] + list(args), capture_output=True, text=True,
                          timeout=60, env=env)


def filled_data_dir(make_server, n=20, marker=None):
    """n echo jobs, each finished before the next is triggered, so job i's
    events are seqs 3i+1 (enqueued, its id) .. 3i+3 whatever the timing
    (after a plain 202 the runner's started/succeeded could land after the
    next job.enqueued on a loaded machine: 4 in 20 runs under load)."""
    s = make_server(config={"jobs": {"echo": {"builtin": "echo"}}})
    for i in range(n):
        body = {"i": i, "m": marker} if (marker and i == n // 2) else {"i": i}
        r = s.post("/trigger/echo/wait", body)
        assert r.status == 200 and r.json()["status"] == "succeeded", r.body
        assert r.json()["id"] == 3 * i + 1, r.body
    assert s.stop() == 0
    return s


def test_truncated_log_file_is_refused_not_a_crash(make_server):
    s = filled_data_dir(make_server, n=300)
    mdb = os.path.join(s.data_dir, "log", "data.mdb")
    used = json.loads(run("log", "stat", "--data-dir", s.data_dir).stdout)["bytes"]
    assert used > 3 * 4096
    os.truncate(mdb, 2 * 4096)  # the meta pages survive; the data does not
    for args in (["log", "verify"], ["log", "stat"], ["log", "dump"],
                 ["replay", "--check"]):
        r = run(*args, "--data-dir", s.data_dir)
        assert r.returncode == 1, (args, r.returncode, r.stderr)  # not -SIGBUS
        assert "truncated" in r.stderr, (args, r.stderr)
    p = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", s.data_dir],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, JOBGATE_TOKEN=TOKEN))
    assert p.returncode == 1 and "truncated" in p.stderr, (p.returncode, p.stderr[-300:])


def test_empty_log_file_is_named_as_damage(make_server):
    s = filled_data_dir(make_server, n=3)
    open(os.path.join(s.data_dir, "log", "data.mdb"), "w").close()
    r = run("log", "verify", "--data-dir", s.data_dir)
    assert r.returncode == 1 and "is empty" in r.stderr, r.stderr
    # serve must not quietly start a new, empty log in its place.
    for f in ("jobs.db", "jobs.db-wal", "jobs.db-shm"):
        p = os.path.join(s.data_dir, f)
        if os.path.exists(p):
            os.unlink(p)
    p = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", s.data_dir],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, JOBGATE_TOKEN=TOKEN))
    assert p.returncode == 1 and "truncated or empty" in p.stderr, p.stderr[-300:]
    assert os.path.getsize(os.path.join(s.data_dir, "log", "data.mdb")) == 0


def corrupt_marker(s, marker):
    mdb = os.path.join(s.data_dir, "log", "data.mdb")
    with open(mdb, "r+b") as f:
        data = f.read()
        # Every copy: LMDB leaves old copies of pages it rewrote.
        hits, at = [], data.find(marker.encode() + b'"')
        while at >= 0:
            hits.append(at)
            at = data.find(marker.encode() + b'"', at + 1)
        assert hits
        for at in hits:
            f.seek(at + len(marker))
            f.write(b"\x00")  # a raw NUL inside a JSON string: no longer decodes


def test_corrupt_record_degrades_healthz_and_fails_dump(make_server):
    s = filled_data_dir(make_server, n=20, marker="MARKER-5e1f")
    corrupt_marker(s, "MARKER-5e1f")
    r = run("log", "verify", "--data-dir", s.data_dir)
    assert r.returncode == 1 and "damaged" in r.stdout
    bad = int(r.stdout.split("seq ")[1].split(":")[0])  # the job's enqueued event: its id
    r = run("log", "dump", "--data-dir", s.data_dir)
    assert r.returncode == 1
    assert "damaged" in r.stderr and "does not decode" in r.stderr
    lines = r.stdout.splitlines()
    for l in lines:
        json.loads(l)  # every line printed is JSON
    assert len(lines) >= 19  # the rest of the log is still dumped

    # The read model is rebuilt from the log on start: the projector stops
    # at the damaged record, and /healthz says so instead of "ok".
    for f in ("jobs.db", "jobs.db-wal", "jobs.db-shm"):
        p = os.path.join(s.data_dir, f)
        if os.path.exists(p):
            os.unlink(p)
    s.start()
    import time
    deadline = time.time() + 10
    while time.time() < deadline:
        h = s.get("/healthz", token=False)
        if h.status == 503:
            break
        time.sleep(0.1)
    assert h.status == 503, h.body
    b = h.json()
    assert b["status"] == "degraded"
    assert "corrupt" in b["error"] and b["error"].endswith("at seq %d" % bad), (b, bad)
    # Its events are refused, not relayed as broken JSON.
    r = s.get("/jobs/%d/events" % bad)
    assert r.status == 500 and r.json()["error"] == "internal"
    # Everything before the damaged record is applied (the whole batch
    # that held it used to be refused, leaving the read model empty).
    assert b["projected_seq"] == bad - 1, (b, bad)
    listed = s.get("/jobs?limit=100").json()["jobs"]
    assert len(listed) >= 10 and all(j["id"] < bad for j in listed), listed
    # Triggers are still taken and durable: the log is fine past the damage.
    assert s.post("/trigger/echo", {"after": 1}).status == 202
    # A list waits for the projector at most ~2 s, then answers what it has.
    t0 = time.time()
    assert s.get("/jobs").status == 200
    assert time.time() - t0 < 10


def test_bad_env_token_is_refused_at_start(tmp_path):
    for tok in ("abc\n", " abc ", "a b", "caf\u00e9", "t" * 257):
        r = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir",
                            str(tmp_path / "d")], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, JOBGATE_TOKEN=tok))
        assert r.returncode == 2, (tok, r.returncode, r.stderr)
        assert "JOBGATE_TOKEN" in r.stderr and "printable" in r.stderr


def test_config_token_with_space_is_refused(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"tokens": [{"name": "a", "token": "has space"}]}))
    r = run("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and "tokens[0].token" in r.stderr, r.stderr


def test_env_token_equal_to_a_config_token_is_refused(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"tokens": [{"name": "a", "token": "same-secret-1"}]}))
    r = subprocess.run([BIN, "serve", "--config", str(cfg), "--listen", "127.0.0.1:0",
                        "--data-dir", str(tmp_path / "d")], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, JOBGATE_TOKEN="same-secret-1"))
    assert r.returncode == 2 and "same secret" in r.stderr, r.stderr


def test_env_token_without_a_free_name_is_refused(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"tokens": [{"name": "env", "token": "tok-env-1"},
                                          {"name": "JOBGATE_TOKEN", "token": "tok-jt-1"}]}))
    r = subprocess.run([BIN, "serve", "--config", str(cfg), "--listen", "127.0.0.1:0",
                        "--data-dir", str(tmp_path / "d")], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, JOBGATE_TOKEN="tok-real-1"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and "rename one" in r.stderr, r.stderr


def test_empty_token_file_is_named(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "token").write_text("")
    env = dict(os.environ)
    env.pop("JOBGATE_TOKEN", None)
    r = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(d)],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 1
    assert str(d / "token") in r.stderr and "delete it" in r.stderr, r.stderr


def test_config_syntax_error_says_line_and_column(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{\n  "jobs": {\n    "a": {"command": ["/bin/true"]},\n  }\n}\n')
    r = run("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert "line 4, column 3" in r.stderr, r.stderr


def test_replay_without_a_log_creates_nothing(tmp_path):
    d = tmp_path / "nothing" / "here"
    r = run("replay", "--data-dir", str(d))
    assert r.returncode == 1 and "no event log" in r.stderr
    assert not (tmp_path / "nothing").exists()


def test_job_command_that_cannot_run_is_refused_at_start(tmp_path):
    for argv0, why in (("/nonexistent/prog", "no such file"),
                       ("no-such-prog-5e1f", "not found in"),
                       ("/etc/passwd", "not an executable file"),
                       ("/tmp", "not an executable file")):
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps({"jobs": {"nx": {"command": [argv0]}}}))
        r = run("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
        assert r.returncode == 2, (argv0, r.returncode, r.stderr)
        assert "jobs.nx.command[0]" in r.stderr and why in r.stderr, r.stderr
        assert not (tmp_path / "d").exists()  # refused before touching the data dir


def test_sigterm_answers_a_list_parked_for_a_stuck_projector(make_server):
    import threading
    import time
    s = filled_data_dir(make_server, n=20, marker="MARKER-77aa")
    corrupt_marker(s, "MARKER-77aa")
    for f in ("jobs.db", "jobs.db-wal", "jobs.db-shm"):
        p = os.path.join(s.data_dir, f)
        if os.path.exists(p):
            os.unlink(p)
    s.start()
    got = {}

    def lister():
        t0 = time.time()
        got["r"] = s.get("/jobs")
        got["t"] = time.time() - t0
    th = threading.Thread(target=lister)
    th.start()
    time.sleep(0.4)  # parked: the projector cannot pass the damaged record
    t0 = time.time()
    assert s.stop(signal.SIGTERM) == 0
    th.join(10)
    assert got["r"].status == 200
    assert got["t"] < 1.9 and time.time() - t0 < 10  # answered at the stop, not at 2 s


def test_zeroed_pages_are_reported_not_a_crash(make_server):
    """LMDB asserts on a damaged page and would abort (SIGABRT, core), or
    reports MDB_CORRUPTED: either way the log says "damaged" in one line
    and exits 1."""
    s = filled_data_dir(make_server, n=600)
    used = json.loads(run("log", "stat", "--data-dir", s.data_dir).stdout)["bytes"]
    mdb = os.path.join(s.data_dir, "log", "data.mdb")
    saved = open(mdb, "rb").read()
    for pages in ([5, 20, 40], list(range(2, used // 4096))):
        with open(mdb, "r+b") as f:
            f.write(saved)
            for pg in pages:
                f.seek(pg * 4096)
                f.write(b"\0" * 4096)
        for args in (["log", "verify"], ["log", "dump"]):
            r = run(*args, "--data-dir", s.data_dir)
            assert r.returncode == 1, (pages[:3], args, r.returncode, r.stderr[-300:])
            assert "damaged" in (r.stderr + r.stdout), (pages[:3], args, r.stderr[-300:])
        p = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", s.data_dir],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, JOBGATE_TOKEN=TOKEN))
        assert p.returncode == 1, (pages[:3], p.returncode, p.stderr[-300:])  # not -6
        assert "damaged" in p.stderr, p.stderr[-300:]


def test_bare_command_name_is_not_looked_up_in_the_working_directory(tmp_path):
    prog = tmp_path / "myexe-5e1f"
    prog.write_text("#!/bin/sh\necho hi\n")
    prog.chmod(0o755)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"jobs": {"j": {"command": ["myexe-5e1f"]}}}))
    r = subprocess.run([BIN, "serve", "--config", str(cfg), "--listen", "127.0.0.1:0",
                        "--data-dir", str(tmp_path / "d")], capture_output=True, text=True,
                       timeout=30, cwd=str(tmp_path), env=dict(os.environ, JOBGATE_TOKEN=TOKEN))
    assert r.returncode == 2 and "not found in" in r.stderr, r.stderr


def test_runner_skips_a_damaged_record_and_runs_new_jobs(make_server):
    """A record whose binary header is damaged (here a finished job's
    job.enqueued) used to stop the runner's start-up recovery at it: every
    later trigger was answered 202 and never ran (reviewer, session 8).
    The runner now names the record and goes on past it."""
    s = filled_data_dir(make_server, n=12, marker="HDR-MARK-77c1")
    mdb = os.path.join(s.data_dir, "log", "data.mdb")
    with open(mdb, "r+b") as f:
        data = f.read()
        at = data.find(b"HDR-MARK-77c1")
        starts = []
        while at >= 0:
            # The record: a 32-byte header, the job name ("echo"), then
            # the event JSON, which begins with {"type":.
            # the event JSON, which begins with {"type":.  Job i of the
            # filled dir is seq 3i + 1; the marker is in job 6's payload
            # (and, echoed, in its result: a record left alone).
            j = data.rfind(b'{"type":"job.enqueued"', 0, at)
            if j > 36 and b'"job_id":19,' in data[j:at] and at - j < 300:
                assert data[j - 4:j] == b"echo"
                starts.append(j - 4 - 32)
            at = data.find(b"HDR-MARK-77c1", at + 1)
        assert starts
        for st in starts:
            assert data[st] == 1  # the record version
            f.seek(st)
            f.write(b"\xff")
    r = run("log", "verify", "--data-dir", s.data_dir)
    assert r.returncode == 1 and "damaged" in r.stdout, r.stdout
    s.start()
    r = s.post("/trigger/echo/wait?timeout=10", {"after": "damage"})
    assert r.status == 200 and r.json()["status"] == "succeeded", (r.status, r.body)
    lines = s.log_lines()
    skipped = [l for l in lines if l["msg"].startswith("runner: skipping a damaged log record")]
    assert len(skipped) == 1 and skipped[0]["seq"] == 1 + 3 * 6, (skipped, s.read_log())
    assert not [l for l in lines if "recovery failed" in l["msg"] or
                "log read failed" in l["msg"]], s.read_log()


EIO_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/* Fail (EIO) the first write to a meta page (offset < 8192) of data.mdb
 * once the file named by $EIO_TRIGGER exists; it is removed then. */
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);
	const char *trig = getenv("EIO_TRIGGER");
	char p[64], t[4096];
	ssize_t k;

	if (!real)
		real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
	if (off < 8192 && trig && access(trig, F_OK) == 0) {
		snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
		k = readlink(p, t, sizeof t - 1);
		if (k > 0) {
			t[k] = 0;
			if (strstr(t, "data.mdb") && unlink(trig) == 0) {
				errno = EIO;
				return -1;
			}
		}
	}
	return real(fd, buf, n, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) { return pwrite(fd, buf, n, off); }
"""


def test_failed_meta_write_ends_the_server_instead_of_serving_404s(make_server, tmp_path):
    """One EIO writing LMDB's meta page makes LMDB refuse every later txn
    (MDB_PANIC), reads too, until the environment is opened again.  The
    server went on: every trigger 500, an acknowledged job 404, /healthz
    "ok" (helper 48).  It now says so and exits 1; a restart serves all
    that was acknowledged."""
    src = tmp_path / "eio.c"
    src.write_text(EIO_SHIM)
    so = tmp_path / "eio.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(so), str(src), "-ldl"],
                   check=True, timeout=60)
    trig = tmp_path / "fail-now"
    s = make_server(config={"jobs": {"echo": {"builtin": "echo"}}},
                    env={"LD_PRELOAD": str(so), "EIO_TRIGGER": str(trig),
                         "ASAN_OPTIONS": "verify_asan_link_order=0:"
                         + os.environ.get("ASAN_OPTIONS", "")})
    r = s.post("/trigger/echo/wait", {"a": 1})
    assert r.status == 200 and r.json()["status"] == "succeeded"
    job = r.json()["id"]
    trig.write_text("")
    codes = []
    for i in range(20):
        try:
            codes.append(s.post("/trigger/echo", {"b": i}).status)
        except OSError:
            break                       # the server is gone: what we want
        if s.proc.poll() is not None:
            break
    assert s.proc.wait(30) == 1, codes
    assert 202 not in codes[1:], codes  # nothing acknowledged after the failure
    assert any("the event log failed" in (l.get("msg") or "") for l in s.log_lines())
    s.env.pop("LD_PRELOAD")
    s.start()
    r = s.get("/jobs/%s" % job)
    assert r.status == 200 and r.json()["status"] == "succeeded"
    assert s.post("/trigger/echo/wait", {"c": 1}).status == 200
    assert run("log", "verify", "--data-dir", s.data_dir).returncode == 0


def patch_headers(mdb, type_name, job_id, offset, data_bytes):
    """Overwrite bytes at `offset` in the binary header (log.c: 32 bytes,
    then the job name, then the JSON) of every copy of the `type_name`
    record of job `job_id`; LMDB leaves old copies of pages it rewrote."""
    import struct
    with open(mdb, "r+b") as f:
        data = bytearray(f.read())
        want = b'{"type":"' + type_name.encode() + b'"'
        n, at = 0, data.find(want)
        while at >= 0:
            for nl in range(1, 65):
                h = at - nl - 32
                if h >= 0 and data[h] == 1 and data[h + 3] == nl and \
                        struct.unpack_from("<Q", data, h + 8)[0] == job_id:
                    data[h + offset:h + offset + len(data_bytes)] = data_bytes
                    n += 1
                    break
            at = data.find(want, at + 1)
        assert n > 0
        f.seek(0)
        f.write(data)


def test_verify_finds_a_header_that_contradicts_its_json(make_server):
    """The projector, the runner and stream filters act on a record's
    binary header; clients read its JSON.  A header whose job_id was
    damaged (LMDB has no checksums) decoded fine, so `log verify` and
    `replay --check` said ok while the read model gave job 1 another
    job's result (helper 48)."""
    import struct
    s = make_server(config={"jobs": {"echo": {"builtin": "echo"}}})
    ids = [s.post("/trigger/echo/wait", {"i": i}).json()["id"] for i in range(3)]
    assert s.stop() == 0
    mdb = os.path.join(s.data_dir, "log", "data.mdb")
    assert run("log", "verify", "--data-dir", s.data_dir).returncode == 0
    patch_headers(mdb, "job.succeeded", int(ids[2]), 8, struct.pack("<Q", int(ids[0])))
    r = run("log", "verify", "--data-dir", s.data_dir)
    assert r.returncode == 1 and "disagree on job_id" in r.stdout, r.stdout


def test_dump_goes_on_past_a_record_whose_header_does_not_decode(make_server):
    """`log dump` prints every record it can and names each bad one; a
    damaged header (here the version byte) used to end the dump at that
    record, hiding every good one after it (helper 48)."""
    s = make_server(config={"jobs": {"echo": {"builtin": "echo"}}})
    ids = [s.post("/trigger/echo/wait", {"i": i}).json()["id"] for i in range(3)]
    assert s.stop() == 0
    before = run("log", "dump", "--data-dir", s.data_dir).stdout.splitlines()
    assert len(before) == 9
    patch_headers(os.path.join(s.data_dir, "log", "data.mdb"), "job.enqueued",
                  int(ids[1]), 0, b"\x09")
    r = run("log", "dump", "--data-dir", s.data_dir)
    assert r.returncode == 1
    seqs = [json.loads(l)["seq"] for l in r.stdout.splitlines()]
    assert seqs == [json.loads(l)["seq"] for l in before if json.loads(l)["seq"] != int(ids[1])]
    assert "seq %s: the record does not decode" % ids[1] in r.stderr, r.stderr
    # A range that ends just before the damaged record is all good (helper 49).
    r = run("log", "dump", "--data-dir", s.data_dir, "--to", str(int(ids[1]) - 1))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == int(ids[1]) - 1, r.stderr


def test_a_jobs_db_that_is_not_a_database_says_what_to_do(make_server):
    """jobs.db is a view of the log; one that is not a database (here text)
    stops the start with advice, not only SQLite's 'file is not a database'
    (helper 46).  Moving it aside rebuilds it."""
    s = filled_data_dir(make_server, n=3)
    db = os.path.join(s.data_dir, "jobs.db")
    for f in ("jobs.db-wal", "jobs.db-shm"):
        if os.path.exists(os.path.join(s.data_dir, f)):
            os.unlink(os.path.join(s.data_dir, f))
    with open(db, "w") as f:
        f.write("garbage, not SQLite\n" * 100)
    p = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", s.data_dir],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, JOBGATE_TOKEN=TOKEN))
    assert p.returncode == 1
    assert "move it aside" in p.stderr and db in p.stderr, p.stderr[-600:]
    os.rename(db, db + ".bad")
    s.start()
    assert s.get("/jobs?limit=10").json()["jobs"].__len__() == 3


LOWDISK_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/statvfs.h>
/* Report 2 MiB free on every filesystem. */
int fstatvfs(int fd, struct statvfs *sv)
{
	static int (*real)(int, struct statvfs *);
	int rc;

	if (!real)
		real = (int (*)(int, struct statvfs *))dlsym(RTLD_NEXT, "fstatvfs");
	if ((rc = real(fd, sv)) == 0) {
		sv->f_bavail = (2u << 20) / sv->f_frsize;
		sv->f_bfree = sv->f_bavail;
	}
	return rc;
}
int fstatvfs64(int fd, struct statvfs64 *sv) { return fstatvfs(fd, (struct statvfs *)sv); }
"""


def test_no_space_is_taken_ahead_on_a_nearly_full_disk(make_server, tmp_path):
    """The writer zero-fills data.mdb 8 MiB ahead of LMDB's pages; on a
    small or nearly full filesystem that took the last space the read model
    needed for its first event (helper 48, a 3 MB tmpfs).  With less than
    64 MiB free it now takes none and LMDB grows the file as it writes."""
    src = tmp_path / "lowdisk.c"
    src.write_text(LOWDISK_SHIM)
    so = tmp_path / "lowdisk.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(so), str(src), "-ldl"],
                   check=True, timeout=60)
    s = make_server(config={"jobs": {"echo": {"builtin": "echo"}}},
                    env={"LD_PRELOAD": str(so),
                         "ASAN_OPTIONS": "verify_asan_link_order=0:"
                         + os.environ.get("ASAN_OPTIONS", "")})
    for i in range(20):
        assert s.post("/trigger/echo/wait", {"i": i}).status == 200
    assert s.stop() == 0
    used = json.loads(run("log", "stat", "--data-dir", s.data_dir).stdout)["bytes"]
    size = os.path.getsize(os.path.join(s.data_dir, "log", "data.mdb"))
    assert size < used + (1 << 20), (size, used)


def test_verify_and_events_take_a_payload_and_result_512_deep(make_server):
    """A trigger body may nest 512 levels (the limit), and so may a job's
    stdout kept as its result; the stored event wraps them in one more.
    log verify's strict scan (added this session) refused such records:
    GET /jobs/{id}/events 500 and log dump dropped them (helper 52)."""
    deep = "[" * 512 + "]" * 512
    s = make_server(config={"jobs": {"echo": {"builtin": "echo"},
                                     "cat": {"command": ["/bin/cat"]}}})
    ids = []
    for job in ("echo", "cat"):
        r = s.post("/trigger/%s/wait" % job, deep)      # a str body is sent as is
        assert r.status == 200 and r.json()["status"] == "succeeded", r.body
        ids.append(r.json()["id"])
    for jid in ids:
        r = s.get("/jobs/%s/events" % jid)
        assert r.status == 200 and len(r.json()["events"]) == 3, r.body
    assert s.stop() == 0
    r = run("log", "verify", "--data-dir", s.data_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("log", "dump", "--data-dir", s.data_dir)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 6, r.stderr
    deeper = "[" + deep + "]"
    s.start()
    assert s.post("/trigger/echo", deeper).status == 400
