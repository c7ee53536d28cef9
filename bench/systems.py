"""The three systems under test, behind one small interface:

    start(run)     from the command to "all containers running" (blocks until then)
    http_ok(run)   one GET of the echo port's /data, True on HTTP 200
    stop(run)      graceful delete of every pod of the run (blocks until all is gone)
    processes(run) what the system keeps running for the run's pods, for the memory table
    cleanup()      removes anything a failed run left (only what the bench made)

A `Run` is the pods of one measurement: their names, the manifest file, the variant.
"""

import ctypes
import glob
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from manifests import CONTAINER_PORT, ECHO_ARGV, GENERATOR_ARGV, HOST_PORT

POLL = 0.001  # seconds between readiness checks
CLONE_NEWNET = 0x40000000


class BenchError(Exception):
    pass


class Run:
    def __init__(self, names, manifest_path, variant, host_port, grace, deadline_s):
        self.names = names
        self.manifest = manifest_path
        self.variant = variant
        self.host_port = host_port
        self.grace = grace
        self.deadline_s = deadline_s
        self.state = {}  # per system


class FileWatch:
    """Wakes its owner when files appear below a directory, without polling (inotify(7)): a
    readiness check that runs every millisecond costs the CPU the system under test needs on
    a 2-core machine. Watches `top` and each directory created in it (one level, as
    containers/<id>/started.json needs); started.json is renamed into place (IN_MOVED_TO)."""

    IN_CREATE, IN_MOVED_TO, IN_ONLYDIR = 0x100, 0x80, 0x01000000

    def __init__(self, top):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        os.makedirs(top, exist_ok=True)
        self.top = top
        self._add(top)

    def _add(self, path):
        # A directory gone again (a failed start removed it) is simply not watched.
        self.libc.inotify_add_watch(self.fd, path.encode(), self.IN_CREATE | self.IN_MOVED_TO
                                    | self.IN_ONLYDIR)

    def wait(self, timeout):
        """Blocks until something changed (or `timeout` seconds passed); watches new
        subdirectories of `top`."""
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if not ready:
            return
        try:
            os.read(self.fd, 65536)
        except BlockingIOError:
            pass
        # Watching again is harmless (the same watch), and catches a directory made before
        # its parent's event was read.
        for d in os.listdir(self.top):
            self._add(os.path.join(self.top, d))

    def close(self):
        os.close(self.fd)


def http_get_ok(port, netns=None, timeout=1.0):
    """One GET /data on 127.0.0.1:port, in the host's network namespace or, on a short-lived
    thread, in `netns` (a /proc/PID/ns/net path): the way a host-port proxy dials in."""
    if netns is None:
        return _get(port, timeout)
    result = []

    def inside():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(netns, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                result.append(False)
                return
        finally:
            os.close(fd)
        result.append(_get(port, timeout))

    t = threading.Thread(target=inside)
    t.start()
    t.join()
    return bool(result and result[0])


def _get(port, timeout):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /data HTTP/1.0\r\nHost: bench\r\n\r\n")
            head = s.recv(64)
            return head.startswith(b"HTTP/1.") and head[9:12] == b"200"
    except OSError:
        return False


def wait_exit(proc, timeout):
    """Waits for `proc` to exit, woken by its pidfd the moment it does. (Popen.wait with a
    timeout polls with sleeps doubling up to 50 ms, which would round every time measured
    through it up to 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 63.5, 113.5, 163.5 ... ms.)"""
    fd = os.pidfd_open(proc.pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.wait()


def _run(argv, timeout, **kw):
    """Runs a command to its exit; its output goes through files, not pipes, so that a daemon
    it leaves behind (conmon, a detached container) cannot hold the end of it open."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, **kw)
        try:
            rc = wait_exit(p, timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise BenchError("%s: no exit within %ds" % (" ".join(argv[:3]), timeout))
        out.seek(0)
        err.seek(0)
        if rc != 0:
            raise BenchError("%s: exit %d: %s" % (" ".join(argv[:3]), rc,
                                                  err.read().decode(errors="replace").strip()[-400:]))
        return out.read().decode(errors="replace")


def smaps_rollup(pid):
    """RSS, PSS and USS (private: clean + dirty) of one process in KiB, from /proc/PID/smaps_rollup."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                out[key.lower()] = int(rest.split()[0])
    out["uss"] = out.pop("private_clean") + out.pop("private_dirty")
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[:-1]
    except OSError:
        return []


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


class Peapod:
    name = "peapod"

    def __init__(self, binary, root):
        self.bin = binary
        self.root = root
        self.env = dict(os.environ, PEAPOD_ROOT=root)

    def prepare(self, image):
        os.makedirs(self.root, exist_ok=True)
        _run([self.bin, "image", "load", "-i", image], 60, env=self.env)

    def setup(self, run):
        pass

    def start(self, run):
        containers = os.path.join(self.root, "containers")
        if glob.glob(containers + "/*"):
            raise BenchError("peapod: containers left in %s by an earlier run" % containers)
        log = open(os.path.join(self.root, "run.log"), "w")
        watch = FileWatch(containers)
        proc = subprocess.Popen([self.bin, "run", "-f", run.manifest], env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        run.state[self.name] = proc
        want = 2 * len(run.names)
        deadline = time.monotonic() + run.deadline_s

        def all_started():
            if proc.poll() is not None:
                raise BenchError("peapod run exited with %s: see %s/run.log" % (proc.returncode, self.root))
            return len(glob.glob(containers + "/*/started.json")) >= want

        try:
            while not all_started():
                if time.monotonic() > deadline:
                    raise BenchError("timed out waiting for peapod's containers to start")
                watch.wait(min(0.1, deadline - time.monotonic()))
        finally:
            # Closing an inotify descriptor waits for an SRCU grace period (the kernel frees
            # the watches' marks after one): 10-20 ms here, which must not count as start time.
            threading.Thread(target=watch.close, daemon=True).start()

    def http_ok(self, run):
        return http_get_ok(run.host_port)

    def stop(self, run):
        proc = run.state.pop(self.name)
        proc.send_signal(signal.SIGINT)
        try:
            rc = wait_exit(proc, run.deadline_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError("peapod run did not exit within %ds of SIGINT" % run.deadline_s)
        if rc != 0:
            raise BenchError("peapod run exited %d: see %s/run.log" % (rc, self.root))

    def check_clean(self):
        left = glob.glob(self.root + "/containers/*") + glob.glob(self.root + "/pods/*")
        if left:
            raise BenchError("peapod left %d directories, e.g. %s" % (len(left), left[0]))

    def processes(self, run):
        proc = run.state[self.name]
        prefix = (self.root + "/containers/").encode()
        monitors = [p for p in all_pids()
                    if cmdline(p)[1:2] == [b"__monitor"] and cmdline(p)[2:3]
                    and cmdline(p)[2].startswith(prefix)]
        return {"fixed": [proc.pid], "per_container": monitors, "per_pod": []}

    def cleanup(self):
        for p in all_pids():
            argv = cmdline(p)
            if argv[:1] == [self.bin.encode()] and argv[1:2] == [b"run"]:
                os.kill(p, signal.SIGINT)


class Podman:
    name = "podman"

    def prepare(self, docker_archive):
        _run(["podman", "load", "-i", docker_archive], 120)

    def setup(self, run):
        pass

    def start(self, run):
        _run(["podman", "kube", "play", run.manifest], run.deadline_s)

    def http_ok(self, run):
        return http_get_ok(run.host_port)

    def stop(self, run):
        # `podman kube down` alone is no graceful delete: podman 4.3 stops the containers with
        # timeout 0, i.e. SIGKILL at once. `pod stop` sends SIGTERM and waits each container's
        # stop timeout (10 s: kube play does not take terminationGracePeriodSeconds), then
        # `kube down` removes the pods and the volume.
        _run(["podman", "pod", "stop"] + run.names, run.deadline_s)
        _run(["podman", "kube", "down", run.manifest], run.deadline_s)

    def check_running(self, run):
        ctrs = json.loads(_run(["podman", "ps", "--pod", "--format", "json"], 60) or "[]")
        running = sum(1 for c in ctrs if c.get("PodName") in run.names and c.get("State") == "running")
        # two containers and the infra container per pod
        if running != 3 * len(run.names):
            raise BenchError("podman: %d of %d containers running" % (running, 3 * len(run.names)))

    def processes(self, run):
        ctrs = json.loads(_run(["podman", "ps", "--pod", "--format", "json"], 60) or "[]")
        ids = {c["Id"] for c in ctrs if c.get("PodName") in run.names}
        conmons, catatonits = [], []
        for p in all_pids():
            argv = cmdline(p)
            if argv and os.path.basename(argv[0]) == b"conmon" and b"-c" in argv:
                cid = argv[argv.index(b"-c") + 1].decode()
                if cid in ids:
                    conmons.append(p)
        for p in all_pids():
            argv = cmdline(p)
            if argv and os.path.basename(argv[0]) == b"catatonit" and _ppid(p) in conmons:
                catatonits.append(p)
        return {"fixed": [], "per_container": conmons, "per_pod": catatonits}

    def cleanup(self):
        out = subprocess.run(["podman", "pod", "ps", "--format", "{{.Name}}"],
                             capture_output=True, text=True).stdout.split()
        ours = [n for n in out if n.startswith("bench-")]
        if ours:
            subprocess.run(["podman", "pod", "rm", "-f", "-t", "0"] + ours, capture_output=True)


def _ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


class Crun:
    """The floor: the same two processes as two `crun run -d` containers from one unpacked
    busybox rootfs (read-only, shared), the generator's in new net/ipc/uts namespaces that the
    echo joins, a host directory bind-mounted as the shared volume; no images, no logs."""

    name = "crun"

    def __init__(self, workdir, cgroups=True):
        self.dir = workdir
        self.rootfs = os.path.join(workdir, "rootfs")
        self.base = None
        self.global_args = ["crun"] if cgroups else ["crun", "--cgroup-manager=disabled"]

    def prepare(self, docker_archive):
        import tarfile
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.rootfs)
        with tarfile.open(docker_archive) as outer:
            manifest = json.load(outer.extractfile("manifest.json"))
            layer = outer.extractfile(manifest[0]["Layers"][0])
            with tarfile.open(fileobj=layer) as inner:
                inner.extractall(self.rootfs)
        for d in ("tmp/in", "tmp/out"):
            os.makedirs(os.path.join(self.rootfs, d), exist_ok=True)
        spec = os.path.join(self.dir, "spec")
        os.makedirs(spec)
        _run(["crun", "spec"], 30, cwd=spec)
        with open(os.path.join(spec, "config.json")) as f:
            self.base = json.load(f)

    def _config(self, variant, pod, role, netns_of=None):
        c = json.loads(json.dumps(self.base))
        c["root"] = {"path": self.rootfs, "readonly": True}
        c["process"]["terminal"] = False
        c["process"]["args"] = GENERATOR_ARGV if role == "generator" else ECHO_ARGV[variant]
        c["hostname"] = pod
        c["linux"]["cgroupsPath"] = "/bench-crun/%s-%s" % (pod, role)
        vol = os.path.join(self.dir, "volumes", pod)
        target, opts = ("/tmp/out", ["rbind", "rw"]) if role == "generator" else ("/tmp/in", ["rbind", "ro"])
        c["mounts"].append({"destination": target, "type": "bind", "source": vol, "options": opts})
        ns = [n for n in c["linux"]["namespaces"] if n["type"] not in ("network", "ipc", "uts")]
        for t in ("network", "ipc", "uts"):
            n = {"type": t}
            if netns_of:
                n["path"] = "/proc/%d/ns/%s" % (netns_of, {"network": "net"}.get(t, t))
            ns.append(n)
        c["linux"]["namespaces"] = ns
        return c

    def _bundle(self, pod, role, config):
        b = os.path.join(self.dir, "bundles", pod + "-" + role)
        os.makedirs(b, exist_ok=True)
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(config, f)
        return b

    def _crun_run(self, bundle, cid):
        pidfile = os.path.join(bundle, "pid")
        _run(self.global_args + ["run", "-d", "--pid-file", pidfile, "-b", bundle, cid], 60)
        with open(pidfile) as f:
            return int(f.read())

    def setup(self, run):
        """The bundles and volumes that do not depend on a running container: before the clock."""
        run.state["crun-bundles"] = gens = {}
        for pod in run.names:
            vol = os.path.join(self.dir, "volumes", pod)
            shutil.rmtree(vol, ignore_errors=True)
            os.makedirs(vol)
            gens[pod] = self._bundle(pod, "generator", self._config(run.variant, pod, "generator"))

    def start(self, run):
        gens = run.state.pop("crun-bundles")
        pids = {}
        for pod in run.names:
            gen_pid = self._crun_run(gens[pod], pod + "-generator")
            echo = self._bundle(pod, "echo", self._config(run.variant, pod, "echo", gen_pid))
            pids[pod] = (gen_pid, self._crun_run(echo, pod + "-echo"))
        run.state[self.name] = pids

    def http_ok(self, run):
        gen_pid = run.state[self.name][run.names[0]][0]
        return http_get_ok(CONTAINER_PORT, netns="/proc/%d/ns/net" % gen_pid)

    def stop(self, run):
        """SIGTERM to every container, SIGKILL to those still alive after the grace period,
        then `crun delete`: what a graceful delete is, with nothing else."""
        pids = run.state.pop(self.name)
        ids = [(pod + "-" + role, pid) for pod, pair in pids.items()
               for role, pid in zip(("generator", "echo"), pair)]
        fds = {}
        for cid, pid in ids:
            fds[cid] = os.pidfd_open(pid)
            _run(self.global_args + ["kill", cid, "TERM"], 30)
        alive = _wait_exit(fds, run.grace)
        for cid in alive:
            # it may exit between the check and the kill: the wait below is what counts
            try:
                _run(self.global_args + ["kill", cid, "KILL"], 30)
            except BenchError:
                pass
        if _wait_exit(fds, 10):
            raise BenchError("crun: containers still alive after SIGKILL")
        for cid, _ in ids:
            _run(self.global_args + ["delete", cid], 30)
        for fd in fds.values():
            os.close(fd)
        shutil.rmtree(os.path.join(self.dir, "volumes"), ignore_errors=True)

    def processes(self, run):
        return {"fixed": [], "per_container": [], "per_pod": []}

    def cleanup(self):
        out = subprocess.run(["crun", "list", "-q"], capture_output=True, text=True).stdout.split()
        for cid in out:
            if cid.startswith("bench-"):
                subprocess.run(self.global_args + ["delete", "-f", cid], capture_output=True)
        for parent in glob.glob("/sys/fs/cgroup/*/bench-crun"):
            try:
                os.rmdir(parent)
            except OSError:
                pass


def _wait_exit(fds, timeout):
    """Waits until every pidfd in `fds` (id -> fd) is readable (its process exited) or
    `timeout` seconds passed; returns the ids still alive."""
    deadline = time.monotonic() + timeout
    alive = dict(fds)
    while alive:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select(list(alive.values()), [], [], left)
        for cid in [c for c, fd in alive.items() if fd in ready]:
            del alive[cid]
    return list(alive)
