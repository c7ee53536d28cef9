#!/usr/bin/env python3
"""Build peapod's test images from files on this host, with no registry.

Writes into --out (default images/out):
  busybox.oci.tar     OCI image layout, docker.io/library/busybox:latest, one gzip layer
  busybox.docker.tar  the same image in `docker save` format (RepoTags busybox:latest)
  python.oci.tar      docker.io/library/python:3: the busybox layer plus a layer with this
                      host's python3, its shared libraries and its stdlib, and libgcc_s
                      (so a dynamically linked Rust binary runs in it too)
  nginx.oci.tar       docker.io/library/nginx:latest: the busybox layer plus a layer with this
                      host's nginx (Debian's nginx-light), its libraries, mime.types, and a
                      default nginx.conf serving /usr/share/nginx/html on port 80 with logs on
                      stdout/stderr, as the official image does

Output is deterministic (mtime 0, uid/gid 0, sorted entries, gzip without timestamp), so
digests are stable from run to run; an archive whose inputs did not change is not rebuilt.
Python 3 standard library only.
"""

import argparse
import gzip
import hashlib
import json
import os
import platform
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "/bin/busybox"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# Not needed to run programs, and large: tests, GUIs, pip's wheels, build-time config.
STDLIB_SKIP_DIRS = {"test", "tests", "__pycache__", "idlelib", "tkinter", "turtledemo", "ensurepip"}
STDLIB_EMPTY_DIRS = {"site-packages", "dist-packages"}

PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnobody:x:65534:\n"


class Tree:
    """An image filesystem: image path -> ("dir", mode) | ("file", mode, host path or bytes)
    | ("symlink", target). Parent directories are implied with mode 0755."""

    def __init__(self):
        self.entries = {}

    def add(self, path, entry):
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts)):
            self.entries.setdefault("/".join(parts[:i]), ("dir", 0o755))
        self.entries[path] = entry

    def dir(self, path, mode=0o755):
        self.add(path, ("dir", mode))

    def file(self, path, source, mode=None):
        if mode is None:
            mode = stat.S_IMODE(os.stat(source).st_mode) if isinstance(source, str) else 0o644
        self.add(path, ("file", mode, source))

    def symlink(self, path, target):
        self.add(path, ("symlink", target))

    def fingerprint(self, h):
        """Feeds everything the layer depends on into hash `h`, without reading contents."""
        for path in sorted(self.entries):
            entry = self.entries[path]
            h.update(repr((path, entry[:2])).encode())
            if entry[0] == "file":
                src = entry[2]
                if isinstance(src, str):
                    st = os.stat(src)
                    h.update(repr((src, st.st_size, st.st_mtime_ns)).encode())
                else:
                    h.update(src)
            elif entry[0] == "symlink":
                h.update(entry[1].encode())

    def write_tar(self, out):
        """Writes the layer tar to file object `out`, deterministically."""
        with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in sorted(self.entries):
                entry = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if entry[0] == "dir":
                    info.type, info.mode = tarfile.DIRTYPE, entry[1]
                    tar.addfile(info)
                elif entry[0] == "symlink":
                    info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry[1]
                    tar.addfile(info)
                elif isinstance(entry[2], bytes):
                    info.mode, info.size = entry[1], len(entry[2])
                    tar.addfile(info, _BytesReader(entry[2]))
                else:
                    info.mode, info.size = entry[1], os.stat(entry[2]).st_size
                    with open(entry[2], "rb") as f:
                        tar.addfile(info, f)


class _BytesReader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def read(self, n=-1):
        end = len(self.data) if n < 0 else self.pos + n
        chunk, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return chunk


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def is_static_elf(path):
    """True when the ELF file has no PT_INTERP program header (needs no dynamic loader)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def ensure_busybox():
    if not os.path.exists(BUSYBOX):
        if os.geteuid() != 0:
            sys.exit(f"{BUSYBOX} is missing: install Debian's busybox-static")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "busybox-static"]
        if subprocess.run(cmd, env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(cmd, env=env, check=True)
    if not is_static_elf(os.path.realpath(BUSYBOX)):
        sys.exit(f"{BUSYBOX} is dynamically linked: install Debian's busybox-static")


def busybox_tree():
    tree = Tree()
    for d, mode in [("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("proc", 0o555),
                    ("sys", 0o555), ("dev", 0o755), ("var", 0o755), ("tmp", 0o1777)]:
        tree.dir(d, mode)
    tree.file("bin/busybox", os.path.realpath(BUSYBOX), 0o755)
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            tree.symlink(f"bin/{applet}", "busybox")
    tree.file("etc/passwd", PASSWD)
    tree.file("etc/group", GROUP)
    return tree


def choose_python():
    """Debian's /usr/bin/python3 when present, else the interpreter running this script."""
    if os.path.exists("/usr/bin/python3"):
        return os.path.realpath("/usr/bin/python3")
    return os.path.realpath(sys.executable)


def ldd(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (")[0]
            if target.startswith("/"):
                libs.append(target)
        elif line.startswith("/"):
            libs.append(line.split(" (")[0])
    return libs


def python_tree(python):
    query = ("import sys, sysconfig; print(sysconfig.get_paths()['stdlib']); print(sys.prefix); "
             "print([p for p in sys.path if p.endswith('lib-dynload')][0])")
    stdlib, prefix, dynload = subprocess.run(
        [python, "-c", query], check=True, capture_output=True, text=True).stdout.split("\n")[:3]
    tree = Tree()
    tree.file(python, python)
    env = [PATH_ENV]
    if prefix in ("/usr", "/usr/local"):
        name = os.path.basename(python)
        bindir = os.path.dirname(python)
        if name != "python3":
            tree.symlink(f"{bindir}/python3", name)
        tree.symlink("usr/bin/python", f"{bindir}/python3" if bindir != "/usr/bin" else "python3")
    else:
        # e.g. pyenv under /root: reachable through PATH, and told where its stdlib is.
        tree.symlink("usr/local/bin/python3", python)
        tree.symlink("usr/bin/python", "/usr/local/bin/python3")
        env.append(f"PYTHONHOME={prefix}")
        tree.dir("root", 0o755)  # non-root users must be able to reach the interpreter
    add_stdlib(tree, stdlib)
    if not dynload.startswith(stdlib + "/"):
        add_stdlib(tree, dynload)
    libs = set(ldd(python))
    for root, _, files in os.walk(dynload):
        for name in files:
            if name.endswith(".so"):
                libs.update(ldd(os.path.join(root, name)))
    libs.add(libgcc_s())
    for lib in sorted(libs):
        tree.file(lib, os.path.realpath(lib))
    return tree, env


NGINX = "/usr/sbin/nginx"
NGINX_CONF = b"""worker_processes 1;
pid /run/nginx.pid;
error_log stderr;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    access_log /dev/stdout;
    server {
        listen 80;
        root /usr/share/nginx/html;
    }
}
"""


def ensure_nginx():
    if not os.path.exists(NGINX):
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([os.path.join(here, "..", "scripts", "install-deps")], check=True)


def nginx_tree():
    tree = Tree()
    tree.file(NGINX, os.path.realpath(NGINX), 0o755)
    for lib in sorted(set(ldd(NGINX))):
        tree.file(lib, os.path.realpath(lib))
    tree.file("etc/nginx/mime.types", "/etc/nginx/mime.types")
    tree.file("etc/nginx/nginx.conf", NGINX_CONF)
    # nginx's workers run as nobody:nogroup unless told otherwise.
    tree.file("etc/group", GROUP + b"nogroup:x:65534:\n")
    tree.file("usr/share/nginx/html/index.html", b"<h1>peapod nginx</h1>\n")
    for d in ["var/log/nginx", "var/lib/nginx", "run"]:
        tree.dir(d)
    return tree


def libgcc_s():
    """The host's libgcc_s.so.1, which python does not need but a dynamically linked Rust
    binary does (the tests run target/debug/peapod-init in this image). Found at glibc's
    multiarch path, so the image does not depend on whether peapod-init was built yet; else
    through ldd of peapod-init."""
    path = f"/lib/{platform.machine()}-linux-gnu/libgcc_s.so.1"
    if os.path.exists(path):
        return path
    init = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "..", "target", "debug", "peapod-init")
    found = [l for l in (ldd(init) if os.path.exists(init) else [])
             if os.path.basename(l) == "libgcc_s.so.1"]
    if not found:
        sys.exit(f"{path} is missing: install Debian's libgcc-s1")
    return found[0]


def add_stdlib(tree, top):
    for root, dirs, files in os.walk(top, followlinks=False):
        rel = os.path.relpath(root, top)
        dirs[:] = sorted(d for d in dirs if d not in STDLIB_SKIP_DIRS
                         and not (rel == "." and d.startswith("config-")))
        tree.dir(root)
        if os.path.basename(root) in STDLIB_EMPTY_DIRS:
            dirs[:] = []
            continue
        for name in files:
            path = os.path.join(root, name)
            real = os.path.realpath(path)
            # Symlinks (Debian's sitecustomize.py -> /etc/...) are copied as the file they
            # point to; dangling ones are left out.
            if os.path.isfile(real):
                tree.file(path, real)


def build_layer(tree, workdir):
    """Writes the layer as tar and tar.gz into `workdir`; returns their paths and digests."""
    raw = os.path.join(workdir, "layer.tar")
    with open(raw, "wb") as f:
        tree.write_tar(f)
    diff_id = sha256_file(raw)
    blob = os.path.join(workdir, diff_id.split(":")[1] + ".tar.gz")
    with open(raw, "rb") as src, open(blob, "wb") as dst:
        with gzip.GzipFile(filename="", mode="wb", fileobj=dst, mtime=0, compresslevel=6) as gz:
            shutil.copyfileobj(src, gz, 1 << 20)
    return {"tar": raw, "blob": blob, "diff_id": diff_id, "digest": sha256_file(blob),
            "size": os.path.getsize(blob)}


def arch():
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def dumps(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def image_docs(layers, cmd, env):
    config = dumps({
        "architecture": arch(), "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": cmd, "Env": env},
        "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
    })
    manifest = dumps({
        "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": digest_bytes(config), "size": len(config)},
        "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": l["digest"], "size": l["size"]}
                   for l in layers],
    })
    return config, manifest


def digest_bytes(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Archive:
    """A deterministic outer tar, written to a temporary name and renamed when complete."""

    def __init__(self, path):
        self.path, self.tmp = path, path + ".tmp"
        self.tar = tarfile.open(self.tmp, "w", format=tarfile.GNU_FORMAT)

    def _info(self, name, size=0, kind=tarfile.REGTYPE):
        info = tarfile.TarInfo(name)
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        info.type, info.size = kind, size
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        return info

    def dir(self, name):
        self.tar.addfile(self._info(name, kind=tarfile.DIRTYPE))

    def data(self, name, data):
        self.tar.addfile(self._info(name, len(data)), _BytesReader(data))

    def file(self, name, path):
        with open(path, "rb") as f:
            self.tar.addfile(self._info(name, os.path.getsize(path)), f)

    def close(self):
        self.tar.close()
        os.replace(self.tmp, self.path)


def write_oci(path, name, layers, cmd, env):
    config, manifest = image_docs(layers, cmd, env)
    index = dumps({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [{
        "mediaType": MEDIA_MANIFEST, "digest": digest_bytes(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": name,
                        "io.containerd.image.name": name},
        "platform": {"architecture": arch(), "os": "linux"},
    }]})
    out = Archive(path)
    out.data("oci-layout", dumps({"imageLayoutVersion": "1.0.0"}))
    out.data("index.json", index)
    out.dir("blobs/")
    out.dir("blobs/sha256/")
    out.data("blobs/sha256/" + digest_bytes(manifest)[7:], manifest)
    out.data("blobs/sha256/" + digest_bytes(config)[7:], config)
    for l in layers:
        out.file("blobs/sha256/" + l["digest"][7:], l["blob"])
    out.close()


def write_docker(path, tag, layers, cmd, env):
    config, _ = image_docs(layers, cmd, env)
    config_id = digest_bytes(config)[7:]
    out = Archive(path)
    paths = []
    for l in layers:
        layer_id = l["diff_id"][7:]
        out.dir(layer_id + "/")
        out.data(layer_id + "/VERSION", b"1.0")
        out.file(layer_id + "/layer.tar", l["tar"])  # docker save writes layers uncompressed
        paths.append(layer_id + "/layer.tar")
    out.data(config_id + ".json", config)
    repo, _, version = tag.partition(":")
    out.data("manifest.json", dumps([{"Config": config_id + ".json", "RepoTags": [tag],
                                      "Layers": paths}]))
    out.data("repositories", dumps({repo: {version: paths[-1].split("/")[0]}}))
    out.close()


def up_to_date(outputs, stamp, fingerprint):
    try:
        with open(stamp) as f:
            return f.read() == fingerprint and all(os.path.exists(o) for o in outputs)
    except FileNotFoundError:
        return False


def build(out_dir, name, trees, outputs, writer):
    """Builds `outputs` from layer `trees` with `writer(layers)` unless nothing changed."""
    h = hashlib.sha256(open(__file__, "rb").read())
    for tree in trees:
        tree.fingerprint(h)
    stamp = os.path.join(out_dir, f".{name}.stamp")
    if up_to_date(outputs, stamp, h.hexdigest()):
        print(f"{name}: up to date")
        return
    with tempfile.TemporaryDirectory(dir=out_dir) as work:
        layers = []
        for i, tree in enumerate(trees):
            layer_dir = os.path.join(work, str(i))
            os.mkdir(layer_dir)
            layers.append(build_layer(tree, layer_dir))
        writer(layers)
    with open(stamp, "w") as f:
        f.write(h.hexdigest())
    for o in outputs:
        print(f"{name}: wrote {o} ({os.path.getsize(o)} bytes)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    parser.add_argument("--out", default=default_out, help="output directory")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    ensure_busybox()

    base = busybox_tree()
    bb_oci = os.path.join(args.out, "busybox.oci.tar")
    bb_docker = os.path.join(args.out, "busybox.docker.tar")
    cmd, env = ["sh"], [PATH_ENV]

    def write_busybox(layers):
        write_oci(bb_oci, "docker.io/library/busybox:latest", layers, cmd, env)
        write_docker(bb_docker, "busybox:latest", layers, cmd, env)
    build(args.out, "busybox", [base], [bb_oci, bb_docker], write_busybox)

    py_tree, py_env = python_tree(choose_python())
    py_oci = os.path.join(args.out, "python.oci.tar")
    build(args.out, "python", [base, py_tree], [py_oci],
          lambda layers: write_oci(py_oci, "docker.io/library/python:3", layers,
                                   ["python3"], py_env))

    ensure_nginx()
    nginx_oci = os.path.join(args.out, "nginx.oci.tar")
    build(args.out, "nginx", [base, nginx_tree()], [nginx_oci],
          lambda layers: write_oci(nginx_oci, "docker.io/library/nginx:latest", layers,
                                   ["nginx", "-g", "daemon off;"], [PATH_ENV]))


if __name__ == "__main__":
    main()
