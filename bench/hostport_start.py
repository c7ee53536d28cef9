"""Pod start through a hostPort, two peapod binaries side by side (issue 7: hostPort moved from
a userspace relay to nftables map elements). Run by hand as root:

    python3 bench/hostport_start.py --before /tmp/peapod-before --after target/release/peapod

Each round runs `peapod run -f` of examples/appcoup/pod.yaml (hostPort changed to 18002 for
the first binary and 18003 for the second, as port 8000 is the project tests') once per
binary, in alternating order, each on a data root of its own with the busybox image loaded,
and measures: command start -> first HTTP 200 of `GET 127.0.0.1:<port>/data` (polled every
2 ms), and SIGINT -> exit (the pod deleted). One warm-up round is not counted. (A port of its
own per binary: a relay leaves its connections in TIME_WAIT on the host port, and a SYN that
meets one before the other binary's translation exists waits 1 s for its retransmission.) Prints a markdown table and the load average. Removes its
directory at the end."""

import argparse
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

WORK = "/var/lib/peapod-bench-hostport"
PORTS = {"before": 18002, "after": 18003}


def first_200(proc, port, deadline_s=30):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("peapod run exited with %s" % proc.returncode)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/data")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.002)
    raise RuntimeError("no HTTP 200 on :%d within %ds" % (port, deadline_s))


def one(binary, root, manifest, port):
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, "--root", root, "run", "-f", manifest],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        first_200(proc, port)
        start = time.perf_counter() - t0
        t1 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        if proc.wait(60) != 0:
            raise RuntimeError("peapod run exited %d" % proc.returncode)
        return start, time.perf_counter() - t1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cell(values):
    ms = [v * 1000 for v in values]
    return "**%.1f** (%.1f–%.1f)" % (statistics.median(ms), min(ms), max(ms))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--image", default="images/out/busybox.oci.tar")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/hostport_start.py needs root")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    with open("examples/appcoup/pod.yaml") as f:
        text = f.read()
    systems = {}
    for name, path in (("before", a.before), ("after", a.after)):
        manifest = os.path.join(WORK, name + ".yaml")
        with open(manifest, "w") as f:
            f.write(text.replace("hostPort: 8000", "hostPort: %d" % PORTS[name]))
        binary = os.path.join(WORK, "peapod-" + name)
        shutil.copy(path, binary)
        root = os.path.join(WORK, name)
        subprocess.run([binary, "--root", root, "image", "load", "-i", a.image], check=True,
                       capture_output=True)
        systems[name] = (binary, root, manifest, PORTS[name])
    load = [os.getloadavg()]
    results = {name: ([], []) for name in systems}
    try:
        names = list(systems)
        for i in range(a.n + 1):
            for name in (names if i % 2 == 0 else names[::-1]):
                start, stop = one(*systems[name])
                if i:
                    results[name][0].append(start)
                    results[name][1].append(stop)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    load.append(os.getloadavg())
    print("| `peapod run -f` appcoup, ms (n=%d each, alternating) | before | after |" % a.n)
    print("|---|---|---|")
    print("| command -> first HTTP 200 through the hostPort | %s | %s |" % (
        cell(results["before"][0]), cell(results["after"][0])))
    print("| SIGINT -> exit (pod deleted) | %s | %s |" % (
        cell(results["before"][1]), cell(results["after"][1])))
    print()
    print("Load average %.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end." % (
        load[0] + load[1]))


if __name__ == "__main__":
    main()
