"""The Python `kubernetes` client's `stream()` exec against peapod (issue 6): a command's
output, stdout and stderr apart with the exit code, stdin, and a terminal session.

Usage: stream_exec.py KUBECONFIG NAMESPACE POD   (the pod runs busybox and waits)
Prints `stream_exec: OK` at the end; any failure raises."""

import sys
import time

from kubernetes import client, config
from kubernetes.stream import stream

DEADLINE_S = 60


def main():
    kubeconfig, ns, pod = sys.argv[1:4]
    config.load_kube_config(kubeconfig)
    api = client.CoreV1Api()
    exec_ = api.connect_get_namespaced_pod_exec

    out = stream(exec_, pod, ns, command=["sh", "-c", "echo hello-$((6*7))"],
                 stdout=True, stderr=True, stdin=False, tty=False)
    assert out == "hello-42\n", repr(out)

    resp = stream(exec_, pod, ns, command=["sh", "-c", "echo out; echo err >&2; exit 3"],
                  stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False)
    resp.run_forever(timeout=DEADLINE_S)
    assert resp.read_stdout() == "out\n"
    assert resp.read_stderr() == "err\n"
    assert resp.returncode == 3, resp.returncode

    resp = stream(exec_, pod, ns, command=["cat"], stdout=True, stderr=True, stdin=True,
                  tty=False, _preload_content=False)
    resp.write_stdin("piped-in\n")
    got = ""
    deadline = time.monotonic() + DEADLINE_S
    while "piped-in\n" not in got and time.monotonic() < deadline:
        resp.update(timeout=1)
        got += resp.read_stdout() if resp.peek_stdout() else ""
    resp.close()
    assert got == "piped-in\n", repr(got)

    resp = stream(exec_, pod, ns, command=["sh", "-c", "tty; read x; echo got-$x"],
                  stdout=True, stderr=False, stdin=True, tty=True, _preload_content=False)
    got = ""
    deadline = time.monotonic() + DEADLINE_S
    sent = False
    while resp.is_open() and time.monotonic() < deadline:
        resp.update(timeout=1)
        got += resp.read_stdout() if resp.peek_stdout() else ""
        if "/dev/pts/" in got and not sent:
            resp.write_stdin("x\r")
            sent = True
    assert "/dev/pts/" in got and "got-x" in got, repr(got)
    assert resp.returncode == 0, resp.returncode
    print("stream_exec: OK")


if __name__ == "__main__":
    main()
