"""Smoke test of peapod with the Python `kubernetes` client, driven by tests/python_client.rs.

Usage: client_smoke.py KUBECONFIG NAMESPACE POD_NAME

Loads the admin kubeconfig peapod wrote, creates a busybox pod that prints a known line, lists
pods, watches until the pod is Running, reads its log, deletes it and waits until the API
answers 404. Every wait has a deadline; any failure exits non-zero with a message on stderr.
"""

import sys
import time

STARTED = time.monotonic()

from kubernetes import client, config, watch  # noqa: E402 (timed from STARTED)
from kubernetes.client.rest import ApiException  # noqa: E402

DEADLINE_SECONDS = 60
GREETING = "hello from the python client"


def step(message):
    print(f"client_smoke: [{time.monotonic() - STARTED:6.2f}s] {message}", flush=True)


def fail(message):
    print(f"client_smoke: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def pod_manifest(name):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "python-client"}),
        spec=client.V1PodSpec(
            # The container exits on SIGTERM so deletion does not wait for the grace period.
            termination_grace_period_seconds=5,
            containers=[
                client.V1Container(
                    name="main",
                    image="busybox",
                    command=[
                        "sh",
                        "-c",
                        f"trap 'exit 0' TERM; echo '{GREETING}'; "
                        "while true; do sleep 0.2; done",
                    ],
                )
            ],
        ),
    )


def watch_until_running(core, namespace, name, resource_version):
    """Watches the namespace's pods from `resource_version` until `name` is Running."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        remaining = max(1, int(deadline - time.monotonic()))
        w = watch.Watch()
        for event in w.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=remaining,
        ):
            pod = event["object"]
            resource_version = pod.metadata.resource_version
            step(f"watch: {event['type']} {pod.metadata.name} phase={pod.status.phase}")
            if event["type"] == "DELETED":
                fail(f"pod {name} was deleted while waiting for Running")
            if pod.status.phase == "Running":
                w.stop()
                return
            if pod.status.phase in ("Succeeded", "Failed"):
                fail(f"pod {name} ended in phase {pod.status.phase}")
    fail(f"pod {name} not Running within {DEADLINE_SECONDS}s")


def read_log_until(core, namespace, name, want):
    deadline = time.monotonic() + DEADLINE_SECONDS
    log = ""
    while time.monotonic() < deadline:
        log = core.read_namespaced_pod_log(name, namespace, container="main")
        if want in log:
            return log
        time.sleep(0.1)
    fail(f"log of {name} lacks {want!r}: {log!r}")
    return log


def wait_gone(core, namespace, name):
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            pod = core.read_namespaced_pod(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return
            raise
        step(f"still there: deletionTimestamp={pod.metadata.deletion_timestamp}")
        time.sleep(0.2)
    fail(f"pod {name} still exists {DEADLINE_SECONDS}s after delete")


def main():
    if len(sys.argv) != 4:
        fail(f"usage: {sys.argv[0]} KUBECONFIG NAMESPACE POD_NAME")
    kubeconfig, namespace, name = sys.argv[1:]
    step("imported the kubernetes client")
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()

    created = core.create_namespaced_pod(namespace, pod_manifest(name))
    if created.metadata.uid is None or created.metadata.resource_version is None:
        fail(f"created pod lacks uid or resourceVersion: {created.metadata}")
    step(f"created {name} uid={created.metadata.uid}")

    pods = core.list_namespaced_pod(namespace)
    names = [p.metadata.name for p in pods.items]
    if name not in names:
        fail(f"list of {namespace} lacks {name}: {names}")
    step(f"listed {names} at resourceVersion {pods.metadata.resource_version}")

    listed = next(p for p in pods.items if p.metadata.name == name)
    if listed.status is None or listed.status.phase != "Running":
        watch_until_running(core, namespace, name, pods.metadata.resource_version)
    step("running")

    log = read_log_until(core, namespace, name, GREETING)
    step(f"log: {log.strip()!r}")

    core.delete_namespaced_pod(name, namespace)
    step("delete requested")
    wait_gone(core, namespace, name)
    step("gone")
    print("client_smoke: OK", flush=True)


if __name__ == "__main__":
    main()
