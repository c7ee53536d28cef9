"""The interactive rows (issue 6): `kubectl exec -- true` round trip, and port-forward
throughput against a direct connection to the pod. Run by hand as root, after
`cargo build --release -p peapod` and `python3 images/build.py`:

    python3 bench/exec.py [--binary target/release/peapod] [--n 20] [--mib 64]

Starts `peapod serve` on a fresh root under /var/lib/peapod-bench-exec, one busybox pod serving
a file of random bytes with httpd, and measures with the real kubectl:

- exec: the wall time of `kubectl exec web -- true` (kubectl 1.33, WebSocket; 1.27, SPDY),
  next to `kubectl get pod web` by the same binary, which is kubectl's own start-up, TLS and
  one API request: the difference is what exec itself costs.
- port-forward: GET of the file through `kubectl port-forward` (1.33: SPDY in a WebSocket;
  1.27: plain SPDY) and directly from the pod's address on the bridge, MiB/s.

Prints a markdown table (median, min, max of n runs) for docs/perf.md. Removes its directory
at the end; nothing else is touched. Run by `bench/run --exec`."""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api import fresh_serve  # noqa: E402

KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.%d"
WORK = "/var/lib/peapod-bench-exec"
POD = """apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; mkdir -p /www && dd if=/dev/urandom of=/www/big bs=1M count=%d 2>/dev/null && touch /www/ready && httpd -f -p 8000 -h /www & wait"]
"""


def kubectl(serve, minor, *args, timeout=120, **kw):
    argv = [KUBECTL % minor, "--kubeconfig", serve.kubeconfig,
            "--cache-dir", os.path.join(WORK, "cache-%d" % minor)] + list(args)
    return subprocess.run(argv, capture_output=True, timeout=timeout, check=True, **kw)


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def http_get(host, port, path, timeout=60):
    """Bytes of the body of GET path (HTTP/1.0, read to the end)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.0\r\n\r\n" % path.encode())
        head, total = b"", 0
        while b"\r\n\r\n" not in head:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("no HTTP head from %s:%d" % (host, port))
            head += chunk
        total = len(head.split(b"\r\n\r\n", 1)[1])
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                return total
            total += len(chunk)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats(values, unit, scale=1.0):
    v = [x * scale for x in values]
    return "%.1f %s (%.1f–%.1f)" % (statistics.median(v), unit, min(v), max(v))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/peapod")
    ap.add_argument("--image", default="images/out/busybox.oci.tar")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--mib", type=int, default=64)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/exec.py needs root")
    serve = fresh_serve(WORK, a.binary, a.image)
    rows = []
    try:
        manifest = os.path.join(WORK, "pod.yaml")
        with open(manifest, "w") as f:
            f.write(POD % a.mib)
        kubectl(serve, 33, "apply", "-f", manifest)
        deadline = time.monotonic() + 120
        while True:
            r = subprocess.run([KUBECTL % 33, "--kubeconfig", serve.kubeconfig, "exec", "web",
                                "--", "test", "-e", "/www/ready"], capture_output=True)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("pod web not ready: %s" % r.stderr.decode())
            time.sleep(0.2)
        ip = kubectl(serve, 33, "get", "pod", "web", "-o",
                     "jsonpath={.status.podIP}").stdout.decode().strip()

        for minor, how in ((33, "WebSocket"), (27, "SPDY")):
            get, ex = [], []
            for i in range(a.n + 1):  # the first of each is a warm-up (kubectl's caches)
                g = timed(lambda: kubectl(serve, minor, "get", "pod", "web"))
                e = timed(lambda: kubectl(serve, minor, "exec", "web", "--", "true"))
                if i:
                    get.append(g)
                    ex.append(e)
            rows.append(("`kubectl exec web -- true`, 1.%d (%s)" % (minor, how),
                         stats(ex, "ms", 1000)))
            rows.append(("`kubectl get pod web`, 1.%d (kubectl's own floor)" % minor,
                         stats(get, "ms", 1000)))
            rows.append(("exec minus get (median)", "%.1f ms" % (
                1000 * (statistics.median(ex) - statistics.median(get)))))

        size = a.mib * 1024 * 1024
        direct = []
        for _ in range(max(3, a.n // 4)):
            t = time.perf_counter()
            got = http_get(ip, 8000, "/big")
            direct.append(size / (time.perf_counter() - t) / (1 << 20))
            assert got == size, (got, size)
        rows.append(("GET %d MiB from the pod's address (%s)" % (a.mib, ip),
                     stats(direct, "MiB/s")))
        for minor, how in ((33, "SPDY in a WebSocket"), (27, "plain SPDY")):
            port = free_port()
            pf = subprocess.Popen([KUBECTL % minor, "--kubeconfig", serve.kubeconfig,
                                   "port-forward", "pod/web", "%d:8000" % port],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            try:
                line = pf.stdout.readline().decode()
                if "Forwarding from" not in line:
                    raise RuntimeError("port-forward: %r" % line)
                rates = []
                for _ in range(max(3, a.n // 4)):
                    t = time.perf_counter()
                    got = http_get("127.0.0.1", port, "/big")
                    rates.append(size / (time.perf_counter() - t) / (1 << 20))
                    assert got == size, (got, size)
            finally:
                pf.terminate()
                pf.wait()
            rows.append(("GET %d MiB through `kubectl port-forward`, 1.%d (%s)" % (
                a.mib, minor, how), stats(rates, "MiB/s")))
        kubectl(serve, 33, "delete", "pod", "web", "--wait=true")
    finally:
        if serve.proc:
            serve.stop()
        shutil.rmtree(WORK, ignore_errors=True)

    print("| row (n=%d) | median (min–max) |" % a.n)
    print("|---|---|")
    for name, value in rows:
        print("| %s | %s |" % (name, value))


if __name__ == "__main__":
    main()
