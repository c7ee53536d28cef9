"""The pods every system runs: examples/appcoup (generator + echo sharing an emptyDir), in
three variants, as multi-document YAML that peapod and `podman kube play` both read unchanged.

- `wellbehaved`: echo's PID 1 is a shell that exits on SIGTERM (busybox `httpd -f` as PID 1
  has no SIGTERM handler and dies only on SIGKILL), so a graceful delete needs no grace period.
- `ignore_term`: echo is examples/appcoup's own `httpd -f` as PID 1, which ignores SIGTERM,
  with terminationGracePeriodSeconds: 1.
The generator is examples/appcoup's, which exits on SIGTERM.
"""

HOST_PORT = 18000  # not examples/appcoup's 8000, which the project's own tests use
CONTAINER_PORT = 8000

GENERATOR = """\
  - name: generator
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      trap 'exit 0' TERM
      while true; do
        echo $RANDOM >> /tmp/out/data
        echo "wrote $(tail -n 1 /tmp/out/data)"
        sleep 2 & wait $!
      done
    volumeMounts:
    - name: data
      mountPath: /tmp/out
"""

ECHO_WELLBEHAVED = (
    "trap 'exit 0' TERM; httpd -p 8000 -h /tmp/in; "
    "while true; do sleep 1 & wait $!; done"
)

# The same two processes as argv lists, for the raw crun bundles.
GENERATOR_ARGV = [
    "sh",
    "-c",
    "trap 'exit 0' TERM\nwhile true; do\n  echo $RANDOM >> /tmp/out/data\n"
    '  echo "wrote $(tail -n 1 /tmp/out/data)"\n  sleep 2 & wait $!\ndone\n',
]
ECHO_ARGV = {
    "wellbehaved": ["sh", "-c", ECHO_WELLBEHAVED],
    "ignore_term": ["httpd", "-f", "-v", "-p", "8000", "-h", "/tmp/in"],
}


def _echo(variant, host_port):
    if variant == "wellbehaved":
        command = '["sh", "-c", "%s"]' % ECHO_WELLBEHAVED.replace('"', '\\"')
    else:
        command = '["httpd", "-f", "-v", "-p", "8000", "-h", "/tmp/in"]'
    # Without a hostPort, no `ports` at all: podman 4.3's kube play publishes a containerPort
    # that has no hostPort on the same host port, so N pods would collide on 8000.
    port = ""
    if host_port:
        port = "    ports:\n    - containerPort: %d\n      hostPort: %d\n" % (CONTAINER_PORT, host_port)
    return (
        "  - name: echo\n"
        "    image: busybox\n"
        "    command: %s\n"
        "%s"
        "    volumeMounts:\n"
        "    - name: data\n"
        "      mountPath: /tmp/in\n"
        "      readOnly: true\n"
    ) % (command, port)


def pod(name, variant="wellbehaved", host_port=None, grace=5):
    """One Pod document."""
    if variant not in ECHO_ARGV:
        raise ValueError(variant)
    return (
        "apiVersion: v1\n"
        "kind: Pod\n"
        "metadata:\n"
        "  name: %s\n"
        "  labels:\n"
        "    app: appcoup\n"
        "spec:\n"
        "  terminationGracePeriodSeconds: %d\n"
        "  volumes:\n"
        "  - name: data\n"
        "    emptyDir: {}\n"
        "  containers:\n"
    ) % (name, grace) + GENERATOR + _echo(variant, host_port)


def manifest(names, **kw):
    """A multi-document manifest, one Pod per name."""
    return "---\n".join(pod(n, **kw) for n in names)


# For the API rows (peapod only): one busybox container that sleeps and exits on SIGTERM (a
# bare `sleep` as PID 1 has no handler and would hold the delete for the grace period).
SLEEPER = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


def sleepers(names):
    """A multi-document manifest of single-container pods that only sleep, no ports."""
    return "---\n".join(
        "apiVersion: v1\n"
        "kind: Pod\n"
        "metadata:\n"
        "  name: %s\n"
        "  labels:\n"
        "    app: bench-sleeper\n"
        "spec:\n"
        "  terminationGracePeriodSeconds: 5\n"
        "  containers:\n"
        "  - name: sleep\n"
        "    image: busybox\n"
        '    command: ["sh", "-c", "%s"]\n' % (n, SLEEPER) for n in names)
