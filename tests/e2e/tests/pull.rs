//! Image pulls through `peapod serve` and the real kubectl (issue 9): a pod whose image is not
//! in the registry yet waits in `ErrImagePull`/`ImagePullBackOff` with the registry's own
//! message in `kubectl describe`, then starts once the image is pushed. The registry is Debian's
//! `docker-registry` on 127.0.0.1 (plain HTTP, listed in `PEAPOD_INSECURE_REGISTRIES`), fed by
//! `skopeo` (scripts/install-deps); crates/peapod/tests/pull.rs covers the rest of pulling.
//! Runs as root; waits poll with deadlines; a failing test still stops the registry (`Drop`).

use peapod_e2e::{busybox_archive, free_port, poll_until, root_tempdir, Daemon, Leftovers};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A `docker-registry` serving a tempdir on 127.0.0.1; killed when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        let yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        std::fs::write(&config, yaml).expect("write registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (scripts/install-deps)");
        let registry = Registry {
            child,
            port,
            _dir: dir,
        };
        let up = poll_until(Instant::now() + Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "docker-registry did not listen on {port}");
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes the busybox test image as `name`.
    fn push_busybox(&self, name: &str) {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", busybox_archive().display()))
            .arg(format!("docker://{}/{name}", self.host()))
            .stdin(Stdio::null())
            .output()
            .expect("run skopeo (scripts/install-deps)");
        assert!(out.status.success(), "skopeo copy: {out:?}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl get pod NAME -o jsonpath=PATH`, empty on failure.
fn jsonpath(d: &Daemon, pod: &str, path: &str) -> String {
    d.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")])
        .map(|o| o.stdout)
        .unwrap_or_default()
}

#[test]
fn describe_shows_the_registry_message_and_the_pod_starts_once_pushed() {
    let registry = Registry::start();
    let mut d = Daemon::new(
        root_tempdir("peapod-e2e-pull-"),
        Leftovers::PeapodAndPodCgroups,
    );
    let host = registry.host();
    d.serve(&[("PEAPOD_INSECURE_REGISTRIES", &host)]);
    let image = format!("{host}/busybox:later");
    let manifest = d.dir.path().join("later.yaml");
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: later\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 0.2; done\"]\n"
    );
    std::fs::write(&manifest, pod).expect("write manifest");
    let manifest = manifest.to_string_lossy().into_owned();
    let applied = d
        .kubectl(&["apply", "-f", &manifest])
        .expect("kubectl apply");
    assert!(applied.status.success(), "{}", applied.stderr);

    let waiting = ".status.containerStatuses[0].state.waiting.reason";
    let backoff = poll_until(Instant::now() + TIMEOUT, || {
        (jsonpath(&d, "later", waiting) == "ImagePullBackOff").then_some(())
    });
    assert!(backoff.is_some(), "no ImagePullBackOff\n{}", d.log());
    let message = jsonpath(
        &d,
        "later",
        ".status.containerStatuses[0].state.waiting.message",
    );
    assert_eq!(
        message,
        format!(
            "Back-off pulling image \"{image}\": ErrImagePull: {image}: manifest unknown ({{\"Tag\":\"later\"}})"
        )
    );
    assert_eq!(jsonpath(&d, "later", ".status.phase"), "Pending");
    let describe = d.kubectl(&["describe", "pod", "later"]).expect("describe");
    for want in [
        "ImagePullBackOff",
        &format!("Pulling image \"{image}\""),
        &format!("Failed to pull image \"{image}\": {image}: manifest unknown"),
        &format!("Error: ErrImagePull: {image}: manifest unknown"),
        &format!("Back-off pulling image \"{image}\""),
    ] {
        assert!(
            describe.stdout.contains(want),
            "{want:?} in\n{}",
            describe.stdout
        );
    }

    // Once the registry has it, the next try (after the 10 s back-off) pulls it and starts.
    registry.push_busybox("busybox:later");
    let running = poll_until(Instant::now() + TIMEOUT, || {
        (jsonpath(&d, "later", ".status.phase") == "Running").then_some(())
    });
    assert!(running.is_some(), "pod not Running\n{}", d.log());
    let describe = d.kubectl(&["describe", "pod", "later"]).expect("describe");
    assert!(
        describe
            .stdout
            .contains(&format!("Successfully pulled image \"{image}\"")),
        "{}",
        describe.stdout
    );
    d.finish();
}
