"""Shared fixtures: start the real jobgate binary on 127.0.0.1:0 with a temp
data dir, talk HTTP to it, kill -9 and restart it.

    def test_x(server):               # default config, JOBGATE_TOKEN=TOKEN
        r = server.post("/trigger/echo", {"a": 1})
        assert r.status == 202

    def test_y(make_server):          # custom config
        s = make_server(config={...})
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

BIN = os.environ.get("JOBGATE_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "jobgate")
TOKEN = "test-token-0123456789"


def responses(buf):
    """Split a byte stream into [(status, headers, body)], whole answers only
    (each needs its Content-Length of body)."""
    out = []
    while buf:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        st = int(lines[0].split()[1])
        h = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            h[k.strip().lower()] = v.strip()
        n = int(h.get("content-length", "0"))
        if len(rest) < n:
            break
        out.append((st, h, rest[:n]))
        buf = rest[n:]
    return out


def in_threads(fn, n, timeout=120):
    """Run fn(k) for k in range(n), each on a thread of its own; wait for all."""
    ts = [threading.Thread(target=fn, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)

def raw_exchange(port, data, timeout=5.0, want=None):
    """Send data on a new connection in ONE write; read until the server
    closes (or resets), the timeout passes, or `want` whole answers came.
    Returns (bytes read, whether the server closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out, eof = b"", False
    deadline = time.time() + timeout
    try:
        s.sendall(data)
        while time.time() < deadline:
            s.settimeout(max(0.05, deadline - time.time()))
            b = s.recv(65536)
            if not b:
                eof = True
                break
            out += b
            if want is not None and len(responses(out)) >= want:
                break
    except socket.timeout:
        pass
    except ConnectionResetError:
        eof = True
    finally:
        s.close()
    return out, eof


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # dict, lower-case names
        self.body = body                # bytes

    def json(self):
        return json.loads(self.body)


class Server:
    def __init__(self, tmp, config=None, env=None, args=()):
        self.tmp = str(tmp)
        self.data_dir = os.path.join(self.tmp, "data")
        self.config = config
        self.cfg_path = None
        if config is not None:
            self.cfg_path = os.path.join(self.tmp, "config.json")
            with open(self.cfg_path, "w") as f:
                f.write(config if isinstance(config, str) else json.dumps(config))
        self.env = dict(os.environ)
        self.env.pop("JOBGATE_TOKEN", None)
        self.env["JOBGATE_TOKEN"] = TOKEN
        if env:
            for k, v in env.items():
                if v is None:
                    self.env.pop(k, None)
                else:
                    self.env[k] = v
        self.args = list(args)
        self.token = self.env.get("JOBGATE_TOKEN")
        self.proc = None
        self.port = None
        self.nstart = 0
        self.start()

    # ---- process control ----
    def cmd(self):
        c = [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir]
        if self.cfg_path:
            c += ["--config", self.cfg_path]
        return c + self.args

    def start(self, timeout=20):
        self.nstart += 1
        self.log_path = os.path.join(self.tmp, "server.%d.log" % self.nstart)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd(), stdout=self.log, stderr=self.log,
                                     env=self.env, stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.log_lines():
                if line.get("msg") == "listening":
                    self.port = int(line["listen"].rsplit(":", 1)[1])
                    return
            if self.proc.poll() is not None:
                raise RuntimeError("jobgate exited %s: %s" % (self.proc.returncode, self.read_log()))
            time.sleep(0.02)
        raise RuntimeError("jobgate did not start: " + self.read_log())

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_lines(self):
        out = []
        for l in self.read_log().splitlines():
            try:
                out.append(json.loads(l))
            except ValueError:
                pass
        return out

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        return self.proc.returncode if self.proc else None

    def restart(self):
        self.kill9()
        self.start()

    # ---- HTTP ----
    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, token=True, conn=None):
        h = {}
        if token is True and self.token:
            h["Authorization"] = "Bearer " + self.token
        elif isinstance(token, str):
            h["Authorization"] = "Bearer " + token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h["Content-Type"] = "application/json"
        if headers:
            h.update(headers)
        c = conn or self.conn()
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            if conn is None:
                c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def jobgate(self, *args, check=False):
        """Run a jobgate subcommand (e.g. 'log', 'dump') against this data dir."""
        return subprocess.run([BIN] + list(args), capture_output=True, text=True,
                              timeout=120, check=check)

    def dump(self):
        r = self.jobgate("log", "dump", "--data-dir", self.data_dir, check=True)
        return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(config=None, env=None, args=(), sub=None):
        d = tmp_path / (sub or ("s%d" % len(servers)))
        d.mkdir(exist_ok=True)
        s = Server(d, config=config, env=env, args=args)
        servers.append(s)
        return s
    yield make
    for s in servers:
        try:
            s.stop(signal.SIGKILL)
        except Exception:
            pass


@pytest.fixture
def server(make_server):
    return make_server()
