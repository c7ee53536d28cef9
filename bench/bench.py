#!/usr/bin/env python3
"""peapod side by side with podman and raw crun (issue 3). Started by bench/run, which installs
and configures the peers first; see bench/README.md for what is measured and how.

    bench/run [--quick] [--only start,ignore_term,scale,api] [--out docs/perf.md]
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import api  # noqa: E402
import manifests  # noqa: E402
import report  # noqa: E402
from measure import alternate  # noqa: E402
from systems import BenchError, Crun, Peapod, Podman, Run  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = "/var/lib/peapod-bench"  # on the same filesystem as podman's /var/lib/containers
MEASUREMENTS = ("start", "ignore_term", "scale", "api")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (n=3 single pod, n=1 scale)")
    ap.add_argument("--only", default=",".join(MEASUREMENTS),
                    help="comma-separated subset of: " + ", ".join(MEASUREMENTS))
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "perf.md"))
    ap.add_argument("--json", default=os.path.join(WORK, "results.json"),
                    help="raw results, for a report without re-running (--report-only)")
    ap.add_argument("--report-only", action="store_true", help="rewrite --out from --json")
    args = ap.parse_args()
    if args.report_only:
        with open(args.json) as f:
            report.write(args.out, json.load(f))
        return 0
    only = [m for m in args.only.split(",") if m]
    for m in only:
        if m not in MEASUREMENTS:
            ap.error("unknown measurement %r" % m)
    n_single, n_scale = (3, 1) if args.quick else (10, 3)

    # An nftables table of our own for every daemon started here (peapod run, peapod serve):
    # other daemons' Service rules stay untouched; each daemon deletes its table on exit.
    os.environ["PEAPOD_NFT_TABLE"] = "peapod_bench_%d" % os.getpid()
    images = os.path.join(REPO, "images", "out")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    # A copy, so that a rebuild in target/ during the run cannot change the binary measured.
    binary = os.path.join(WORK, "peapod")
    shutil.copy2(os.path.join(REPO, "target", "release", "peapod"), binary)
    cgroups = os.environ.get("BENCH_PODMAN_RUNTIME", "crun") == "crun"
    peapod = Peapod(binary, os.path.join(WORK, "root"))
    podman = Podman()
    crun = Crun(os.path.join(WORK, "crun"), cgroups=cgroups)
    systems = [peapod, podman, crun]
    for s in systems:
        s.cleanup()
    api.cleanup(binary)
    peapod.prepare(os.path.join(images, "busybox.oci.tar"))
    podman.prepare(os.path.join(images, "busybox.docker.tar"))
    crun.prepare(os.path.join(images, "busybox.docker.tar"))

    results = {"env": environment(args, cgroups), "n_single": n_single, "n_scale": n_scale}
    started = time.monotonic()
    try:
        if "start" in only:
            port_free(manifests.HOST_PORT)
            path = write(WORK, "start.yaml", manifests.manifest(
                ["bench-appcoup"], variant="wellbehaved", host_port=manifests.HOST_PORT))
            results["start"] = alternate(
                systems, n_single, lambda s: Run(["bench-appcoup"], path, "wellbehaved",
                                                 manifests.HOST_PORT, 5, 60),
                http=True, memory_last=True, label="start")
        if "ignore_term" in only:
            path = write(WORK, "ignore-term.yaml", manifests.manifest(
                ["bench-ignoreterm"], variant="ignore_term", grace=1))
            results["ignore_term"] = alternate(
                systems, n_single, lambda s: Run(["bench-ignoreterm"], path, "ignore_term",
                                                 None, 1, 60),
                http=False, label="ignore_term")
        if "scale" in only:
            for n in (10, 50):
                names = ["bench-scale-%d" % i for i in range(n)]
                path = write(WORK, "scale-%d.yaml" % n,
                             manifests.manifest(names, variant="wellbehaved"))
                results["scale%d" % n] = alternate(
                    systems, n_scale, lambda s: Run(names, path, "wellbehaved", None, 5, 300),
                    http=False, memory_last=True, label="scale%d" % n)
        if "api" in only:
            names = ["bench-sleep-%d" % i for i in range(api.NPODS)]
            path = write(WORK, "sleep-%d.yaml" % api.NPODS, manifests.sleepers(names))
            results["api"] = api.measure(binary, WORK, os.path.join(images, "busybox.oci.tar"),
                                         path, n_single, dict(os.environ))
    except (BenchError, subprocess.SubprocessError, OSError) as e:
        print("bench: %s" % e, file=sys.stderr)
        results["error"] = str(e)
    finally:
        for s in systems:
            s.cleanup()
        api.cleanup(binary)
        results["env"]["duration_s"] = round(time.monotonic() - started)
        results["env"]["loadavg_end"] = loadavg()
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        report.write(args.out, results)
        shutil.rmtree(peapod.root, ignore_errors=True)
        shutil.rmtree(crun.dir, ignore_errors=True)
        os.remove(binary)
    print("bench: wrote %s (raw results in %s)" % (args.out, args.json), file=sys.stderr)
    return 1 if "error" in results else 0


def write(d, name, text):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            raise SystemExit("bench: host port %d is taken: stop what uses it" % port)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def first_line(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "?"


def cgroup_attach_ms():
    """Median time to create a cgroup in every v1 hierarchy (cpuset aside: it needs cpus and
    mems first) and move a process into it: what a runtime pays per container. On this kernel
    it is ~0.5 ms, or 7-20 ms when moving a task waits for an RCU grace period (the default
    until any cgroup hierarchy was mounted with `favordynmods` since boot: see docs/perf.md)."""
    roots = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fstype = line.split(" - ")[1].split()[0]
            mnt = line.split()[4]
            if fstype == "cgroup" and not mnt.endswith("/cpuset"):
                roots.append(mnt)
    if not roots:
        return None
    times = []
    for _ in range(3):
        child = subprocess.Popen(["sleep", "10"])
        dirs = [os.path.join(r, "peapod-bench-probe") for r in roots]
        try:
            t = time.perf_counter()
            for d in dirs:
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(child.pid))
            times.append((time.perf_counter() - t) * 1000)
        finally:
            child.kill()
            child.wait()
            for d in dirs:
                for _ in range(100):
                    try:
                        os.rmdir(d)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.01)  # the killed child leaves the cgroup asynchronously
        time.sleep(0.3)
    return round(sorted(times)[1], 2)


def environment(args, cgroups):
    with open("/proc/self/mountinfo") as f:
        cg = sorted({line.split(" - ")[1].split()[0] + ":" + line.split()[4]
                     for line in f if " - cgroup" in line})
    git = lambda *a: subprocess.run(["git", "-C", REPO] + list(a),  # noqa: E731
                                    capture_output=True, text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "crates")
    built = os.path.join(REPO, "target", "release", "peapod")
    with open(built, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    mtime = datetime.datetime.fromtimestamp(os.stat(built).st_mtime, datetime.timezone.utc)
    argv = ["bench/run"] + sys.argv[1:]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(argv),
        "nproc": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "kernel": platform.release(),
        "cgroups": cg,
        "peapod": "target/release/peapod built %s (sha256 %s); HEAD at run time %s%s" % (
            mtime.strftime("%Y-%m-%d %H:%M UTC"), digest, git("rev-parse", "--short", "HEAD"),
            " with uncommitted changes in crates/" if dirty else ""),
        "nice": os.nice(0),
        "podman": first_line(["podman", "--version"]),
        "podman_runtime": "crun" if cgroups else "runc",
        "crun": first_line(["crun", "--version"]),
        "loadavg_start": loadavg(),
        "cgroup_attach_ms": cgroup_attach_ms(),
        "quick": args.quick,
    }


if __name__ == "__main__":
    sys.exit(main())
