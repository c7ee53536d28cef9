//! Pod manifests several end-to-end tests use.

use serde_json::{json, Value};

/// Pod `shell`: one busybox container `shell` that only waits (for exec and attach), and stops
/// at once on SIGTERM.
pub const SHELL_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  containers:
  - name: shell
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; sleep 100000 & wait"]
"#;

/// A busybox pod `name` with one container `c` running `script`, a 1 s grace period.
pub fn busybox_pod(name: &str, script: &str, restart_policy: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", script],
            }],
        },
    })
}

/// The status of the first container of `pod`.
pub fn first_container(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}
