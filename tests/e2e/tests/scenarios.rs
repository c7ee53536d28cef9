//! The nginx scenarios of shared/DESIGN.md with the real kubectl, from the manifests in
//! examples/: 5, nginx reverse-proxying 127.0.0.1:5000 (nginx.conf from a ConfigMap mounted
//! with subPath), exposed with `kubectl expose pod --type=NodePort` and fetched from the host
//! through the node port; 2, nginx serving an emptyDir that a writer container rewrites.

use peapod_e2e::{
    free_port, http_get, peapod_bin, poll_until, root_tempdir, Daemon, Leftovers, POD_TIMEOUT,
};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// This test's own network, so it never touches the host's `peapod0`.
const BRIDGE: &str = "ppe2escn0";
const TABLE: &str = "ppe2escn";

/// The manifest of `examples/<name>/pod.yaml` written into `dir`, its host ports (8080,
/// 8081) changed to free ones so that tests running side by side cannot collide.
fn example(dir: &Path, name: &str) -> String {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .join("pod.yaml");
    let mut text = std::fs::read_to_string(&source).expect("read example");
    for port in ["8080", "8081"] {
        text = text.replace(
            &format!("hostPort: {port}"),
            &format!("hostPort: {}", free_port()),
        );
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).expect("write manifest");
    path.to_string_lossy().into_owned()
}

struct Cluster {
    d: Daemon,
}

impl Cluster {
    fn start() -> Cluster {
        let d = Daemon::new(root_tempdir("peapod-scenarios-"), Leftovers::Peapod);
        let load = Command::new(peapod_bin())
            .arg("--root")
            .arg(&d.root)
            .args(["image", "load", "-i"])
            .arg(peapod_e2e::busybox_archive().with_file_name("nginx.oci.tar"))
            .output()
            .expect("run peapod image load");
        assert!(load.status.success(), "image load: {load:?}");
        let mut c = Cluster { d };
        c.remove_network();
        c.d.serve(&[
            ("PEAPOD_BRIDGE", BRIDGE),
            ("PEAPOD_POD_CIDR", "10.125.0.0/24"),
            ("PEAPOD_SERVICE_CIDR", "10.125.1.0/24"),
            ("PEAPOD_NFT_TABLE", TABLE),
        ]);
        c
    }

    /// Removes this test's bridge, its veths and tables (a killed earlier run, or this one).
    fn remove_network(&self) {
        let prefix = "pp0a7d00"; // veths of 10.125.0.0/24
        for link in std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = link.file_name().to_string_lossy().into_owned();
            if name == BRIDGE || name.starts_with(prefix) {
                let _ = Command::new("ip").args(["link", "del", &name]).output();
            }
        }
        for table in [TABLE.to_string(), format!("{BRIDGE}_guard")] {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", &table])
                .output();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.d.is_finished() {
            let _ = self.d.delete_all_pods();
            let _ = self.d.stop();
            self.d.sweep();
        }
        self.remove_network();
    }
}

#[test]
fn nginx_scenarios_with_kubectl() {
    let mut c = Cluster::start();

    // Scenario 5: reverse proxy, exposed on a node port.
    c.d.ok(&["apply", "-f", &example(c.d.dir.path(), "reverse-proxy")]);
    c.d.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/proxy",
        "--timeout=90s",
    ]);
    c.d.ok(&["expose", "pod", "proxy", "--type=NodePort", "--port=80"]);
    let port: u16 =
        c.d.ok_until(
            &[
                "get",
                "svc",
                "proxy",
                "-o",
                "jsonpath={.spec.ports[0].nodePort}",
            ],
            |s| s.parse::<u16>().is_ok(),
        )
        .parse()
        .expect("node port");
    let body = poll_until(Instant::now() + POD_TIMEOUT, || http_get(port));
    assert_eq!(
        body.as_deref(),
        Some("hello from the backend\n"),
        "node port {port}\n{}",
        c.d.log()
    );
    let logs = c.d.ok(&["logs", "proxy", "-c", "nginx"]);
    assert!(logs.contains("\"GET / HTTP/1.1\" 200"), "{logs}");

    // Scenario 2: nginx serves what the writer keeps rewriting.
    c.d.ok(&["apply", "-f", &example(c.d.dir.path(), "nginx-writer")]);
    c.d.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/nginx-writer",
        "--timeout=90s",
    ]);
    let fetch = [
        "exec",
        "nginx-writer",
        "-c",
        "nginx",
        "--",
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1/",
    ];
    let first = c.d.ok_until(&fetch, |s| s.contains("UTC"));
    c.d.ok_until(&fetch, |s| s.contains("UTC") && s != first);

    c.d.ok(&["delete", "svc", "proxy"]);
    c.d.finish();
    let removed = Command::new(peapod_bin())
        .args(["network", "remove"])
        .env("PEAPOD_ROOT", &c.d.root)
        .env("PEAPOD_BRIDGE", BRIDGE)
        .output()
        .expect("peapod network remove");
    assert!(removed.status.success(), "{removed:?}");
}
