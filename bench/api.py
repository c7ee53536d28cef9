"""The rows only peapod has (issue 3, item 5): `peapod serve` from its spawn to an API that
answers /readyz, and the wall time of `kubectl get pods` with 0 and with 50 running pods, with
the daemon's memory at 50 pods. podman and crun have no API server: no peer, no ratio."""

import base64
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

from measure import MEMORY_SETTLE_S, snapshot
from systems import POLL, BenchError, _run, all_pids, cmdline, wait_exit

KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
NPODS = 50


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """HTTPS requests with the kubeconfig's client certificate, one connection each (as a
    readiness probe makes them); the CA is verified, the host name is not (127.0.0.1)."""

    def __init__(self, kubeconfig, port, workdir):
        fields = {}
        with open(kubeconfig) as f:
            for line in f:
                key, _, value = line.strip().partition(": ")
                if key.endswith("-data"):
                    fields[key] = base64.b64decode(value)
        for name in ("client-certificate-data", "client-key-data"):
            with open(os.path.join(workdir, name + ".pem"), "wb") as f:
                f.write(fields[name])
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.load_verify_locations(cadata=fields["certificate-authority-data"].decode())
        self.ctx.load_cert_chain(os.path.join(workdir, "client-certificate-data.pem"),
                                 os.path.join(workdir, "client-key-data.pem"))
        self.port = port

    def get(self, path, timeout=5.0):
        """(status, body), or None while nothing accepts the connection."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                           timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()


def fresh_serve(work, binary, image):
    """A `peapod serve` started on a new root under `work` (emptied first), from a copy of
    `binary` (so a rebuild meanwhile does not disturb it), with the image archive `image`
    loaded; returns the started Serve."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    root = os.path.join(work, "root")
    copy = os.path.join(work, "peapod")
    shutil.copy(binary, copy)
    subprocess.run([copy, "--root", root, "image", "load", "-i", image], check=True,
                   capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PEAPOD_LOG"}
    serve = Serve(copy, root, env)
    serve.start()
    return serve


class Serve:
    """One `peapod --root ROOT serve` on a free port."""

    def __init__(self, binary, root, env):
        self.bin, self.root, self.env = binary, root, env
        self.kubeconfig = os.path.join(root, "kubeconfig")
        self.proc = None
        self.client = None

    def start(self, deadline_s=60):
        """Spawns the daemon and returns the seconds until GET /readyz answers `ok`."""
        os.makedirs(self.root, exist_ok=True)
        port = free_port()
        url = "https://127.0.0.1:%d" % port
        log = open(os.path.join(self.root, "serve.log"), "a")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [self.bin, "--root", self.root, "serve", "--listen", "127.0.0.1:%d" % port],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        deadline = time.monotonic() + deadline_s
        # The kubeconfig is written before the API accepts; on a restart the old one (another
        # port) is there until then.
        while True:
            self._alive()
            try:
                with open(self.kubeconfig) as f:
                    if url in f.read():
                        break
            except FileNotFoundError:
                pass
            self._deadline(deadline, "the kubeconfig")
            time.sleep(POLL)
        self.client = Client(self.kubeconfig, port, self.root)
        while self.client.get("/readyz", timeout=1.0) != (200, b"ok"):
            self._alive()
            self._deadline(deadline, "/readyz")
            time.sleep(POLL)
        return time.perf_counter() - t0

    def stop(self, timeout=60):
        """SIGINT, then the seconds until the daemon exited."""
        proc, self.proc = self.proc, None
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        try:
            rc = wait_exit(proc, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError("peapod serve did not exit within %ds of SIGINT" % timeout)
        if rc != 0:
            raise BenchError("peapod serve exited %d: see %s/serve.log" % (rc, self.root))
        return time.perf_counter() - t0

    def _alive(self):
        if self.proc.poll() is not None:
            raise BenchError("peapod serve exited with %s: see %s/serve.log"
                             % (self.proc.returncode, self.root))

    def _deadline(self, deadline, what):
        if time.monotonic() > deadline:
            raise BenchError("peapod serve: timed out waiting for " + what)

    def pods(self):
        """The pods of the default namespace as {name: phase}."""
        r = self.client.get("/api/v1/namespaces/default/pods")
        if not r or r[0] != 200:
            raise BenchError("peapod serve: GET pods answered %s" % (r and r[0]))
        return {p["metadata"]["name"]: p.get("status", {}).get("phase")
                for p in json.loads(r[1])["items"]}

    def monitors(self):
        prefix = (self.root + "/containers/").encode()
        return [p for p in all_pids() if cmdline(p)[1:2] == [b"__monitor"]
                and cmdline(p)[2:3] and cmdline(p)[2].startswith(prefix)]


def kubectl(serve, cache, *args, timeout=120):
    return _run([KUBECTL, "--kubeconfig", serve.kubeconfig, "--cache-dir", cache] + list(args),
                timeout)


def timed(argv_fn):
    t = time.perf_counter()
    out = argv_fn()
    return time.perf_counter() - t, out


def wait_for(check, deadline_s, what):
    t0 = time.perf_counter()
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            raise BenchError("peapod serve: timed out waiting for " + what)
        time.sleep(0.005)
    return time.perf_counter() - t0


def measure(binary, work, image, manifest_path, n, env):
    """Returns {"ready_new": [s], "ready_restart": [s], "stop": [s], "get0": [s], "get50": [s],
    "floor": [s], "apply_running": s, "delete_gone": s, "memory": snapshot, "memory0": ...}."""
    out = {k: [] for k in ("ready_new", "ready_restart", "stop", "get0", "get50", "floor")}
    out["pods"] = NPODS
    base = os.path.join(work, "api")
    cache = os.path.join(base, "kube-cache")  # not root's ~/.kube
    os.makedirs(base, exist_ok=True)

    # (a) daemon start -> /readyz ok: a new root (certificates created) and a restart of the
    # same root, alternating; one discarded warm-up pair.
    for i in range(1 + n):
        root = os.path.join(base, "start-%d" % i)
        got = {}
        for key in ("ready_new", "ready_restart"):
            s = Serve(binary, root, env)
            try:
                got[key] = s.start()
                if i == 0 and key == "ready_new":
                    # once, that kubectl itself agrees
                    ok = kubectl(s, cache, "get", "--raw", "/readyz").strip()
                    if ok != "ok":
                        raise BenchError("kubectl get --raw /readyz: %r" % ok)
            finally:
                if s.proc:
                    stopped = s.stop()
            if i > 0:
                out[key].append(got[key])
                out["stop"].append(stopped)
        shutil.rmtree(root, ignore_errors=True)
        print("bench: api start round %d/%d: new=%.0fms restart=%.0fms" % (
            i + 1, n + 1, got["ready_new"] * 1000, got["ready_restart"] * 1000),
            file=sys.stderr, flush=True)

    # (b) kubectl get pods with 0 and with 50 running pods.
    root = os.path.join(base, "pods")
    os.makedirs(root, exist_ok=True)
    _run([binary, "image", "load", "-i", image], 60, env=dict(env, PEAPOD_ROOT=root))
    s = Serve(binary, root, env)
    s.start()
    try:
        get_rounds(s, cache, n, out, "get0", 1)
        time.sleep(MEMORY_SETTLE_S)
        out["memory0"] = snapshot({"fixed": [s.proc.pid], "per_container": [], "per_pod": []}, 0)
        t, _ = timed(lambda: kubectl(s, cache, "apply", "-f", manifest_path))
        out["apply"] = t
        t += wait_for(lambda: sum(1 for p in s.pods().values() if p == "Running") == NPODS,
                      300, "%d pods Running" % NPODS)
        out["apply_running"] = t
        time.sleep(MEMORY_SETTLE_S)
        out["memory"] = snapshot({"fixed": [s.proc.pid], "per_container": s.monitors(),
                                  "per_pod": []}, NPODS)
        get_rounds(s, cache, n, out, "get50", NPODS + 1)
        t, _ = timed(lambda: kubectl(s, cache, "delete", "pods", "--all", "--wait=false"))
        t += wait_for(lambda: not s.pods(), 300, "the pods to be deleted")
        out["delete_gone"] = t
        wait_for(lambda: not s.monitors(), 60, "the monitors to exit")
    except BaseException:
        try:
            kubectl(s, cache, "delete", "pods", "--all", "--grace-period=0", "--force", timeout=60)
            wait_for(lambda: not s.pods() and not s.monitors(), 60, "the pods to be removed")
        except (BenchError, OSError):
            pass
        raise
    finally:
        s.stop()
    left = glob.glob(root + "/containers/*") + glob.glob(root + "/pods/*")
    if left:
        raise BenchError("peapod serve left %d directories, e.g. %s" % (len(left), left[0]))
    shutil.rmtree(base, ignore_errors=True)
    return out


def get_rounds(s, cache, n, out, key, want_lines):
    """`kubectl get pods` alternating with `kubectl version --client` (the floor: kubectl's
    own start-up, no request), after one discarded warm-up of each (discovery cache)."""
    for i in range(1 + n):
        t, text = timed(lambda: kubectl(s, cache, "get", "pods"))
        lines = len(text.splitlines())
        if lines != want_lines and not (want_lines == 1 and lines == 0):
            raise BenchError("kubectl get pods: %d lines, expected %d" % (lines, want_lines))
        f, _ = timed(lambda: kubectl(s, cache, "version", "--client"))
        if i > 0:
            out[key].append(t)
            out["floor"].append(f)
    print("bench: api %s: median %.0fms" % (key, sorted(out[key])[len(out[key]) // 2] * 1000),
          file=sys.stderr, flush=True)


def cleanup(binary):
    """Stops daemons a failed run left (their pods are deleted by measure's error path)."""
    for p in all_pids():
        argv = cmdline(p)
        if argv[:1] == [binary.encode()] and b"serve" in argv:
            os.kill(p, signal.SIGINT)
