"""The command line as a new user meets it (SPEC §2, §3): usage, exit
codes, one-line errors, the generated token, the data-dir lock, signals."""
import http.client
import json
import os
import signal
import stat
import subprocess
import time

import pytest

from conftest import BIN, Server, in_threads


def post_echo(server, nconns, per_conn, body):
    """nconns keep-alive connections, per_conn echo triggers each, all 202."""
    def client(k):
        c = server.conn()
        try:
            for i in range(per_conn):
                assert server.post("/trigger/echo", body(k, i), conn=c).status == 202
        finally:
            c.close()
    in_threads(client, nconns)


def run(*args, env=None, cwd=None):
    return subprocess.run([BIN] + list(args), capture_output=True, text=True,
                          timeout=60, env=env, cwd=cwd)


def test_help_for_every_subcommand_exits_0():
    for args in (["--help"], ["serve", "--help"], ["replay", "--help"],
                 ["log", "--help"], ["log", "dump", "--help"]):
        r = run(*args)
        assert r.returncode == 0, args
        assert "usage" in r.stdout.lower(), args


def test_lost_output_is_a_failure():
    """Help printed into a full disk did not reach anyone: exit 1 and say so."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    for args in (["--help"], ["replay", "--help"], ["log", "--help"]):
        with open("/dev/full", "w") as full:
            r = subprocess.run([BIN] + args, stdout=full, stderr=subprocess.PIPE, text=True,
                               timeout=30)
        assert r.returncode == 1 and "No space left" in r.stderr, (args, r.returncode, r.stderr)


def test_bad_arguments_exit_2_with_one_line():
    for args in ([], ["frobnicate"], ["serve", "--bogus"], ["serve", "--listen"],
                 ["serve", "--listen", "nonsense"], ["log"], ["log", "dump", "--from", "x"],
                 ["log", "dump", "--from", "5", "--to", "3"], ["replay", "--bogus"]):
        r = run(*args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_config_error_names_the_key_path_and_exits_2(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"jobs": {"build": {"command": ["/bin/true"], "timeout_s": -1}}}))
    r = run("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert "jobs.build.timeout_s" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_config_file_is_one_clear_line(tmp_path):
    r = run("serve", "--config", str(tmp_path / "none.json"))
    assert r.returncode == 2
    assert r.stderr.count("none.json") == 1


def test_generated_token_is_saved_0600_and_printed_once(tmp_path):
    (tmp_path / "a").mkdir()
    s = Server(tmp_path / "a", env={"JOBGATE_TOKEN": None})
    try:
        tok_path = os.path.join(s.data_dir, "token")
        tok = open(tok_path).read().strip()
        assert stat.S_IMODE(os.stat(tok_path).st_mode) == 0o600
        deadline = time.time() + 5
        out = ""
        while time.time() < deadline and "curl" not in out:
            out = open(s.log_path).read()
            time.sleep(0.05)
        assert tok in out and "curl" in out and "/trigger/echo" in out
        r = s.post("/trigger/echo/wait", {"x": 1}, token=tok)
        assert r.status == 200 and r.json()["result"] == {"x": 1}
        # The token never reaches the JSON log lines.
        for line in s.log_lines():
            assert tok not in json.dumps(line)
        s.stop()
        s.start()
        out2 = open(s.log_path).read()
        deadline = time.time() + 5
        while time.time() < deadline and "token" not in out2:
            out2 = open(s.log_path).read()
            time.sleep(0.05)
        assert tok not in out2          # printed once, when generated
        assert s.post("/trigger/echo", None, token=tok).status == 202
    finally:
        s.kill9()


def test_a_long_token_in_the_data_dir_is_read_whole(tmp_path):
    """DATA/token may hold up to 256 bytes like any token; a longer one is
    refused at start, not cut to a prefix."""
    long_tok = "L" * 256
    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "a" / "data" / "token").write_text(long_tok + "\n")
    s = Server(tmp_path / "a", env={"JOBGATE_TOKEN": None})
    try:
        assert s.post("/trigger/echo", None, token=long_tok).status == 202
        assert s.post("/trigger/echo", None, token=long_tok[:127]).status == 401
    finally:
        s.kill9()
    d = tmp_path / "b"
    d.mkdir()
    (d / "token").write_text("L" * 257 + "\n")
    env = dict(os.environ)
    env.pop("JOBGATE_TOKEN", None)
    r = run("serve", "--listen", "127.0.0.1:0", "--data-dir", str(d), env=env)
    assert r.returncode != 0 and "token" in r.stderr and "256" in r.stderr, r.stderr


def test_second_server_on_same_data_dir_exits_1(server):
    r = run("serve", "--listen", "127.0.0.1:0", "--data-dir", server.data_dir)
    assert r.returncode == 1
    assert "in use" in r.stderr
    assert server.get("/healthz").status == 200


def test_sigterm_exits_0_even_when_signalled_twice_at_once(server):
    assert server.post("/trigger/echo", {"a": 1}).status == 202
    server.proc.send_signal(signal.SIGTERM)
    server.proc.send_signal(signal.SIGTERM)     # as `timeout` or a group kill does
    assert server.proc.wait(30) == 0
    msgs = [l.get("msg") for l in server.log_lines()]
    assert "stopped" in msgs
    assert not any("second signal" in (m or "") for m in msgs)


def test_sigterm_while_starting_is_a_graceful_stop(tmp_path):
    """A stop signal while the server is still reading its config waits
    until the stop can be graceful: it used to kill the process by the
    default action (exit 143, nothing logged).  25,000 jobs make reading
    the config (each command looked up in PATH) take ~1.8 s here (~6.6 s
    under ASan); the signal comes 0.3 s after exec, well past the dynamic
    loader and sanitizer start-up (20-30 ms), which no program can cover,
    and well before the old blocking point."""
    cfg = tmp_path / "big.json"
    cfg.write_text(json.dumps({"jobs": {"j%d" % i: {"command": ["true"]}
                                        for i in range(25000)}}, separators=(",", ":")))
    env = dict(os.environ, JOBGATE_TOKEN="tok-start-1234567")
    p = subprocess.Popen([BIN, "serve", "--config", str(cfg), "--listen", "127.0.0.1:0",
                          "--data-dir", str(tmp_path / "data")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    msgs = [json.loads(l).get("msg") for l in err.splitlines() if l.startswith("{")]
    assert "shutting down" in msgs and "stopped" in msgs, err


def test_log_stat_shows_the_servers_map_size(make_server):
    """`log stat` reports the map the server uses, not a default of its own
    (tester, session 5: 8 GiB was printed for a 3 MiB map)."""
    s = make_server(config={"jobs": {"echo": {"builtin": "echo"}},
                            "limits": {"map_size_mb": 3}})
    assert s.post("/trigger/echo", {}).status == 202
    st = json.loads(s.jobgate("log", "stat", "--data-dir", s.data_dir, check=True).stdout)
    assert st["map_bytes"] == 3 << 20, st


def test_log_stat_and_verify(server):
    for _ in range(3):
        assert server.post("/trigger/echo", {}).status == 202
    st = json.loads(server.jobgate("log", "stat", "--data-dir", server.data_dir, check=True).stdout)
    assert st["head_seq"] >= 3 and st["events"] == st["head_seq"] and st["first_seq"] == 1
    v = server.jobgate("log", "verify", "--data-dir", server.data_dir)
    assert v.returncode == 0 and v.stdout.startswith("ok")
    r = server.jobgate("log", "dump", "--data-dir", server.data_dir, "--from", "2", "--to", "2")
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["seq"] == 2
    # Seqs start at 1: --to 0 is an empty range (it named a --from 1 nobody gave).
    for args in (("--to", "0"), ("--from", "0", "--to", "0")):
        r = server.jobgate("log", "dump", "--data-dir", server.data_dir, *args)
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", (args, r.stderr)


def test_log_dump_and_verify_across_their_read_batches(server):
    """dump reads 4,096 events per snapshot and verify 65,536: a log of
    more than 4,096 events is printed whole, once, in order, and a range
    across a batch edge is exact."""
    post_echo(server, 8, 200, lambda k, i: {"k": k, "i": i})
    deadline = time.time() + 30       # 1,600 echo jobs: 4,800 events
    while server.get("/healthz", token=None).json()["log_seq"] < 4800:
        assert time.time() < deadline
        time.sleep(0.1)
    head = server.get("/healthz", token=None).json()["log_seq"]
    assert [e["seq"] for e in server.dump()] == list(range(1, head + 1))
    # Batches count from --from: 1..4096 is the first, so this crosses an edge.
    r = server.jobgate("log", "dump", "--data-dir", server.data_dir, "--from", "1",
                       "--to", "4200", check=True)
    assert [json.loads(l)["seq"] for l in r.stdout.splitlines()] == list(range(1, 4201))
    r = server.jobgate("log", "dump", "--data-dir", server.data_dir, "--from", "4090",
                       "--to", "4100", check=True)
    assert [json.loads(l)["seq"] for l in r.stdout.splitlines()] == list(range(4090, 4101))
    v = server.jobgate("log", "verify", "--data-dir", server.data_dir)
    assert v.returncode == 0 and v.stdout.startswith("ok: %d events" % head), v.stdout


def test_a_blocked_log_dump_does_not_grow_the_servers_log(server):
    """A dump whose reader stopped reading (a pager) must hold no read txn:
    one would pin every page the writer replaces.  The log grows the same
    with and without it (one long txn made it ~16x)."""
    def fire(n):
        post_echo(server, 8, n // 8, lambda k, i: {"x": "p" * 100})
        time.sleep(0.5)             # the echo runs settle

    def used():
        return json.loads(server.jobgate("log", "stat", "--data-dir", server.data_dir,
                                         check=True).stdout)["bytes"]
    fire(8000)                      # more than a pipe and a batch of dump output
    u0 = used()
    fire(3200)
    u1 = used()
    p = subprocess.Popen([BIN, "log", "dump", "--data-dir", server.data_dir],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)               # it fills the pipe and blocks
        fire(3200)
        u2 = used()
    finally:
        p.kill()
        p.wait()
    assert u2 - u1 < 3 * (u1 - u0), (u1 - u0, u2 - u1)


def test_log_commands_on_a_missing_data_dir_fail_clearly(tmp_path):
    r = run("log", "stat", "--data-dir", str(tmp_path / "nope"))
    assert r.returncode == 1
    assert "no event log" in r.stderr


def test_after_sigterm_no_new_work_is_taken(make_server):
    """A request that arrives after SIGTERM, even on a kept-alive
    connection, is refused (503 + Retry-After) or finds the connection
    closed at once; it is never acknowledged, and the server still exits 0
    after giving a running job its grace period."""
    s = make_server(config={"jobs": {"echo": {"builtin": "echo"},
                                     "long": {"command": ["/bin/sleep", "30"], "timeout_s": 3,
                                              "max_attempts": 1}}})
    c = s.conn(timeout=10)
    assert s.post("/trigger/echo", {"a": 1}, conn=c).status == 202
    assert s.post("/trigger/long", None).status == 202
    time.sleep(0.3)
    head = s.get("/healthz").json()["log_seq"]
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    t0 = time.time()
    try:
        r = s.post("/trigger/echo", {"late": 1}, conn=c)
        assert r.status == 503, (r.status, r.body)
        assert r.json()["error"] == "overloaded" and "retry-after" in r.headers
    except (ConnectionError, OSError, http.client.HTTPException):
        pass                                    # closed: also a clean refusal
    assert time.time() - t0 < 3
    assert s.proc.wait(30) == 0
    late = [e for e in s.dump() if e["type"] == "job.enqueued" and e.get("payload") == {"late": 1}]
    assert late == []
    assert max(e["seq"] for e in s.dump()) >= head


def test_config_from_a_pipe(tmp_path):
    """--config /dev/stdin (or a shell's <(...)): a pipe has no size, the
    whole stream is read; over 1 MiB is still refused."""
    cfg = json.dumps({"jobs": {"echo": {"builtin": "echo"}}}).encode()
    env = dict(os.environ, JOBGATE_TOKEN="tok-pipe-12345")
    p = subprocess.Popen([BIN, "serve", "--config", "/dev/stdin", "--listen", "127.0.0.1:0",
                          "--data-dir", str(tmp_path / "d")], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    try:
        p.stdin.write(cfg)
        p.stdin.close()
        line = p.stderr.readline().decode()
        assert '"msg":"listening"' in line, line
    finally:
        p.terminate()
        p.wait(10)
    big = json.dumps({"jobs": {"echo": {"builtin": "echo"}}, "x": "a" * (2 << 20)})
    r = subprocess.run([BIN, "serve", "--config", "/dev/stdin", "--data-dir", str(tmp_path / "e")],
                       input=big, capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (r.returncode, r.stderr)


def test_a_low_fd_limit_for_max_running_is_named_at_start(tmp_path):
    """Under a hard limit of 256 descriptors, max_running 300 cannot run:
    the start says so (a taken port then ends it at once)."""
    import resource
    import socket
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"jobs": {"echo": {"builtin": "echo"}},
                               "limits": {"max_running": 300}}))
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    try:
        r = subprocess.run([BIN, "serve", "--config", str(cfg), "--listen",
                            "127.0.0.1:%d" % held.getsockname()[1], "--data-dir",
                            str(tmp_path / "d")], capture_output=True, text=True, timeout=30,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                                 (256, 256)))
    finally:
        held.close()
    lines = [json.loads(l) for l in r.stderr.splitlines() if l.startswith("{")]
    low = [l for l in lines if "open file limit is low" in l["msg"]]
    assert low and low[0]["limit"] == 256 and low[0]["suggested"] > 256, r.stderr


def serve_on_taken_port(data_dir, env):
    """`jobgate serve` on a port another socket holds: a start that fails
    after it made (or found) its data dir."""
    import socket
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    try:
        return run("serve", "--listen", "127.0.0.1:%d" % held.getsockname()[1],
                   "--data-dir", data_dir, env=env)
    finally:
        held.close()


def test_port_in_use_says_what_to_do_and_keeps_no_unseen_token(tmp_path):
    """A first start on a taken port names the way out, and does not leave
    behind a generated token it never printed (tester, session 5: the next
    start only said 'using the API token in ./data/token')."""
    import socket
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    data = str(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if k != "JOBGATE_TOKEN"}
    try:
        r = run("serve", "--listen", "127.0.0.1:%d" % port, "--data-dir", data, env=env)
    finally:
        held.close()
    assert r.returncode == 1
    line = json.loads(r.stderr.strip().splitlines()[-1])
    assert "in use" in line["msg"] and "PORT=" in line["hint"], line
    assert not os.path.exists(os.path.join(data, "token"))
    # The data dir this failed start created is gone with it (an empty
    # log with 8 MiB preallocated was left behind); one that existed stays.
    assert not os.path.exists(data), os.listdir(data)
    os.mkdir(data)
    r = serve_on_taken_port(data, env)
    # An existing empty dir stays, emptied of what the failed start made.
    assert r.returncode == 1 and os.path.isdir(data) and os.listdir(data) == []
    # A nested path: every directory the failed start created goes, the
    # existing parent stays.
    nested = tmp_path / "a" / "b" / "c"
    r = serve_on_taken_port(str(nested) + "/", env)
    assert r.returncode == 1 and not (tmp_path / "a").exists() and tmp_path.is_dir()
    # A dir that holds anything else keeps it.
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "notes").write_text("mine")
    r = serve_on_taken_port(str(tmp_path / "own"), env)
    assert r.returncode == 1 and (tmp_path / "own" / "notes").read_text() == "mine"
    # A dir whose only file is someone else's "lock" is not empty: it stays
    # as it was (reviewer, session 8: that file was unlinked).
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "lock").write_text("not jobgate's")
    r = serve_on_taken_port(str(tmp_path / "theirs"), env)
    assert r.returncode == 1 and (tmp_path / "theirs" / "lock").read_text() == "not jobgate's"
    # A path that reaches an existing data dir through a new directory
    # ("new/../old") is no fresh dir: its log stays (reviewer, session 8:
    # the old check saw "new" missing and removed old's log and jobs.db).
    old = tmp_path / "old"
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(old)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(env, JOBGATE_TOKEN="tok-fresh-1234567"))
    try:
        deadline = time.time() + 10
        while time.time() < deadline and not (old / "jobs.db").exists():
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    before = sorted(os.listdir(old))
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    try:
        r = run("serve", "--listen", "127.0.0.1:%d" % held.getsockname()[1],
                "--data-dir", str(tmp_path / "new" / ".." / "old"),
                env=dict(env, JOBGATE_TOKEN="tok-fresh-1234567"))
    finally:
        held.close()
    assert r.returncode == 1, r.stderr
    assert sorted(os.listdir(old)) == before and (old / "log" / "data.mdb").exists()
    assert not (tmp_path / "new").exists()
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", data],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 10
        while time.time() < deadline and not os.path.exists(os.path.join(data, "token")):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    tok = open(os.path.join(data, "token")).read().strip()
    assert "generated an API token" in out and tok in out, out


def test_a_data_dir_that_cannot_hold_files_is_named_as_such(tmp_path):
    """A data dir that exists but where no file can be made (here /proc/1)
    used to say 'No such file or directory' about the dir itself (tester,
    session 8)."""
    r = run("serve", "--listen", "127.0.0.1:0", "--data-dir", "/proc/1")
    assert r.returncode == 1
    assert r.stderr.strip() == ("jobgate serve: data dir /proc/1: cannot create its lock "
                                "file: No such file or directory"), r.stderr
