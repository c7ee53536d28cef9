"""Service rows (issue 7): throughput and connection rate through a ClusterIP, a NodePort and
a hostPort, against a direct connection to the pod's address, in the same run. Called by
`bench/run --services` (which installs curl and apache2-utils' `ab`), or by hand as root after
`cargo build --release -p peapod` and `python3 images/build.py`:

    python3 bench/services.py [--binary target/release/peapod] [--n 10] [--mib 256]

Starts `peapod serve` on a fresh root under /var/lib/peapod-bench-svc, one nginx pod (the test
image's nginx, 1 worker, no access log, serving a file of random bytes and a 2-byte one) with a
hostPort, and a NodePort Service selecting it. Then, from the host, in rounds that alternate the
order of the paths (direct, ClusterIP, NodePort on 127.0.0.1, hostPort on 127.0.0.1):

- throughput: `curl` GET of the big file, MiB/s;
- connection rate: `ab -n N -c 8` of the small file, one connection per request (no
  keep-alive), requests per second.

Prints a markdown table (median, min, max of n rounds; the ratio to direct is the median over
rounds of that path's value over the direct one in the same round) and the load average
before and after. Removes its directory at the end; nothing else is touched."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api import fresh_serve  # noqa: E402

KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
WORK = "/var/lib/peapod-bench-svc"
HOST_PORT = 18081
MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: nginx
    image: nginx
    command: [sh, -c]
    args:
    - |
      mkdir -p /srv && dd if=/dev/urandom of=/srv/big bs=1M count=%(mib)d 2>/dev/null
      printf ok > /srv/small
      cat > /tmp/nginx.conf <<'EOF'
      worker_processes 1;
      pid /tmp/nginx.pid;
      error_log stderr;
      events { worker_connections 1024; }
      http { access_log off; sendfile on; server { listen 80; root /srv; } }
      EOF
      exec nginx -c /tmp/nginx.conf -g 'daemon off;'
    ports:
    - containerPort: 80
      hostPort: %(host_port)d
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
"""


def kubectl(serve, *args):
    argv = [KUBECTL, "--kubeconfig", serve.kubeconfig,
            "--cache-dir", os.path.join(WORK, "cache")] + list(args)
    return subprocess.run(argv, capture_output=True, timeout=120, check=True).stdout.decode()


def curl(url, timeout=60):
    """(bytes, seconds) of one GET, or None when it failed."""
    r = subprocess.run(["curl", "-sf", "-o", "/dev/null", "--max-time", str(timeout),
                        "-w", "%{size_download} %{time_total}", url], capture_output=True)
    if r.returncode != 0:
        return None
    size, seconds = r.stdout.decode().split()
    return int(size), float(seconds)


def ab(url, requests):
    """Requests per second of `ab -n requests -c 8` (a new connection each)."""
    r = subprocess.run(["ab", "-q", "-n", str(requests), "-c", "8", "-s", "10", url],
                       capture_output=True, timeout=300)
    out = r.stdout.decode()
    if r.returncode != 0 or "Failed requests:        0" not in out:
        raise RuntimeError("ab %s failed:\n%s%s" % (url, out, r.stderr.decode()))
    for line in out.splitlines():
        if line.startswith("Requests per second:"):
            return float(line.split()[3])
    raise RuntimeError("ab %s: no rate in\n%s" % (url, out))


def wait_for(check, what, seconds=120):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.2)


def row(values, base=None):
    """median (min–max) [, ratio] cells."""
    cell = "**%.0f** (%.0f–%.0f)" % (statistics.median(values), min(values), max(values))
    if base is None:
        return cell, "1"
    ratios = [v / b for v, b in zip(values, base)]
    return cell, "%.2f (%.2f–%.2f)" % (statistics.median(ratios), min(ratios), max(ratios))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/peapod")
    ap.add_argument("--image", default="images/out/nginx.oci.tar")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--requests", type=int, default=1000)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/services.py needs root")
    serve = fresh_serve(WORK, a.binary, a.image)
    load_before = os.getloadavg()
    try:
        manifest = os.path.join(WORK, "web.yaml")
        with open(manifest, "w") as f:
            f.write(MANIFEST % {"mib": a.mib, "host_port": HOST_PORT})
        kubectl(serve, "apply", "-f", manifest)
        ip = wait_for(lambda: kubectl(serve, "get", "pod", "web", "-o",
                                      "jsonpath={.status.podIP}").strip(), "the pod's address")
        svc = json.loads(kubectl(serve, "get", "service", "web", "-o", "json"))
        paths = {
            "direct to the pod (%s:80)" % ip: "http://%s:80" % ip,
            "ClusterIP (%s:80)" % svc["spec"]["clusterIP"]:
                "http://%s:80" % svc["spec"]["clusterIP"],
            "NodePort (127.0.0.1:%d)" % svc["spec"]["ports"][0]["nodePort"]:
                "http://127.0.0.1:%d" % svc["spec"]["ports"][0]["nodePort"],
            "hostPort (127.0.0.1:%d)" % HOST_PORT: "http://127.0.0.1:%d" % HOST_PORT,
        }
        size = a.mib << 20
        for url in paths.values():
            wait_for(lambda: (curl(url + "/big") or (0,))[0] == size, url + "/big")
        names = list(paths)
        mibs = {p: [] for p in names}
        rates = {p: [] for p in names}
        for i in range(a.n + 1):  # round 0 warms up and is not counted
            order = names[i % len(names):] + names[:i % len(names)]
            for p in order:
                got = curl(paths[p] + "/big")
                if not got or got[0] != size:
                    raise RuntimeError("GET %s/big: %r" % (paths[p], got))
                rate = ab(paths[p] + "/small", a.requests)
                if i:
                    mibs[p].append(got[0] / got[1] / (1 << 20))
                    rates[p].append(rate)
        kubectl(serve, "delete", "-f", manifest, "--wait=true")
    finally:
        if serve.proc:
            serve.stop()
        shutil.rmtree(WORK, ignore_errors=True)
    load_after = os.getloadavg()

    direct = names[0]
    print("| path (n=%d rounds) | GET %d MiB, MiB/s | / direct | `ab -c 8`, new connection "
          "per request, req/s | / direct |" % (a.n, a.mib))
    print("|---|---|---|---|---|")
    for p in names:
        base = None if p == direct else mibs[direct]
        t, tr = row(mibs[p], base)
        base = None if p == direct else rates[direct]
        c, cr = row(rates[p], base)
        print("| %s | %s | %s | %s | %s |" % (p, t, tr, c, cr))
    print()
    print("Load average %.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end." % (
        load_before + load_after))


if __name__ == "__main__":
    main()
