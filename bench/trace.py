#!/usr/bin/env python3
"""The timeline of one peapod pod start and graceful delete, from kernel tracepoints (perf
record: no ptrace slow-down), for finding where the milliseconds go. Run as root after bench/run
has set the machine up:

    python3 bench/trace.py [--pod start|ignore_term] [--keep]

Prints one line per event of peapod's processes (exec, fork, exit, unshare, mount, rename,
fsync, failed rmdir, sleeps), in ms since the exec of `peapod run`, then the same since the
SIGINT that starts the delete. Uses target/release/peapod and a scratch root.
"""

import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import manifests  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVENTS = [
    "sched:sched_process_exec", "sched:sched_process_fork", "sched:sched_process_exit",
    "syscalls:sys_enter_unshare", "syscalls:sys_enter_setns", "syscalls:sys_enter_mount",
    "syscalls:sys_enter_pivot_root", "syscalls:sys_enter_rename", "syscalls:sys_enter_fsync",
    "syscalls:sys_exit_fsync", "syscalls:sys_exit_rmdir", "syscalls:sys_enter_clock_nanosleep",
    "syscalls:sys_enter_kill", "syscalls:sys_enter_umount", "syscalls:sys_enter_unlinkat",
    "syscalls:sys_exit_unlinkat",
]
# Processes of peapod and of the containers it starts (busybox applets show as their names).
# ip, nsenter and nft: the pod network's commands (crates/net/src/cmd.rs).
OURS = re.compile(r"^(peapod|peapod-monitor|pki|tokio-rt-worker|pod-sandbox|youki:\[\d:\w+\]|sh|httpd|sleep|tail|exe|ip|nsenter|nft)$")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pod", choices=["start", "ignore_term"], default="start")
    ap.add_argument("--keep", action="store_true", help="keep the perf.data and scratch root")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="peapod-trace-", dir="/var/tmp")
    binary = os.path.join(work, "peapod")
    shutil.copy2(os.path.join(REPO, "target", "release", "peapod"), binary)
    root = os.path.join(work, "root")
    # A table of its own: other daemons' Service rules stay untouched (see bench/README.md).
    env = dict(os.environ, PEAPOD_ROOT=root, PEAPOD_NFT_TABLE="peapod_trace_%d" % os.getpid())
    subprocess.run([binary, "image", "load", "-i", os.path.join(REPO, "images/out/busybox.oci.tar")],
                   env=env, check=True, capture_output=True)
    variant, grace = ("wellbehaved", 5) if args.pod == "start" else ("ignore_term", 1)
    pod = os.path.join(work, "pod.yaml")
    with open(pod, "w") as f:
        f.write(manifests.manifest(["trace-pod"], variant=variant, grace=grace))
    # One untraced run first, as bench/run's discarded warm-up round: the certificates exist
    # and the page cache holds the binary, so the trace shows what a measured run does.
    start_and_stop(binary, pod, env, root)
    data = os.path.join(work, "perf.data")
    perf = subprocess.Popen(["perf", "record", "-q", "-a", "-o", data]
                            + [a for e in EVENTS for a in ("-e", e)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # perf is recording
    run = start_and_stop(binary, pod, env, root)
    time.sleep(0.2)
    perf.send_signal(signal.SIGINT)
    perf.wait()
    script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,time,event,trace"],
                            capture_output=True, text=True).stdout
    print_timeline(script, binary, run.pid)
    if args.keep:
        print("trace: kept %s" % work, file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


def start_and_stop(binary, pod, env, root):
    """Runs the pod until both containers started, then stops it with SIGINT."""
    run = subprocess.Popen([binary, "run", "-f", pod], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(glob.glob(root + "/containers/*/started.json")) < 2:
        if time.monotonic() > deadline or run.poll() is not None:
            sys.exit("trace: the pod did not start")
        time.sleep(0.005)
    time.sleep(0.5)
    run.send_signal(signal.SIGINT)
    run.wait(timeout=60)
    return run


def print_timeline(script, binary, run_pid):
    ours, t_exec, t_int = set(), None, None
    for line in script.splitlines():
        m = re.match(r"\s*(\S+)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)", line)
        if not m:
            continue
        comm, pid, t, event, rest = m.group(1), int(m.group(2)), float(m.group(3)), m.group(4), m.group(5)
        if event == "sched:sched_process_exec" and pid == run_pid:
            t_exec = t
            ours.add(pid)
        if t_exec is None:
            continue
        if event == "sched:sched_process_fork" and pid in ours:
            ours.add(int(re.search(r"child_pid=(\d+)", rest).group(1)))
        if pid not in ours or not OURS.match(comm):
            continue
        if event == "syscalls:sys_exit_rmdir" and not rest.strip().endswith("0xfffffffffffffff0"):
            continue  # only failed (EBUSY) rmdirs
        if event == "syscalls:sys_enter_kill" and pid == run_pid and t_int is None:
            t_int = t
            print("---- delete: ms since the first kill(SIGTERM) by peapod run")
        base = t_int if t_int is not None else t_exec
        print("%8.2f  %-16s %6d  %s %s" % ((t - base) * 1000, comm, pid,
                                          event.split(":")[1], rest[:90]))


if __name__ == "__main__":
    main()
