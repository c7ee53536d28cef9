//! The nginx scenarios of shared/DESIGN.md with `peapod run -f`, from the manifests in
//! examples/ as users would run them (only the host port changed, so tests can run side by
//! side): 5, nginx reverse-proxying 127.0.0.1:5000 to another container, its nginx.conf from a
//! ConfigMap mounted with subPath; 2, nginx serving an emptyDir another container rewrites.

mod common;

use common::{deadline_in, free_port, http_get, image_archive, poll_until, TestRoot};
use std::time::Duration;

const START: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(60);

/// A root with busybox and nginx loaded.
fn nginx_root() -> TestRoot {
    let root = TestRoot::new();
    root.load(&image_archive("nginx.oci.tar"));
    root
}

/// The example at `examples/<name>/pod.yaml` with host port `from` replaced by `to`.
fn example(name: &str, from: u16, to: u16) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .join("pod.yaml");
    let text = std::fs::read_to_string(&path).expect("read example");
    let (old, new) = (format!("hostPort: {from}"), format!("hostPort: {to}"));
    assert!(text.contains(&old), "{} has no {old}", path.display());
    text.replace(&old, &new)
}

#[test]
fn nginx_reverse_proxies_the_backend_on_localhost() {
    let root = nginx_root();
    let port = free_port();
    let path = root.manifest("pod.yaml", &example("reverse-proxy", 8080, port));
    let mut pod = root.run(&path);
    pod.wait_for("pod/proxy: Ready", START);
    let body = poll_until(deadline_in(START), || match http_get(port, "/") {
        Ok((200, body)) => Some(body),
        _ => None,
    })
    .unwrap_or_else(|| panic!("nothing proxied on :{port}\n{}", pod.transcript()));
    assert_eq!(body, "hello from the backend\n");
    // The request went through nginx (its access log is the container's stdout).
    pod.wait_for_line(
        |l| l.starts_with("proxy/nginx | ") && l.contains("\"GET / HTTP/1.1\" 200"),
        deadline_in(START),
    );
    pod.interrupt();
    assert_eq!(pod.exit_code(deadline_in(EXIT)), 0, "{}", pod.transcript());
    pod.assert_no_leaks(&root);
}

#[test]
fn nginx_serves_what_the_writer_writes() {
    let root = nginx_root();
    let port = free_port();
    let path = root.manifest("pod.yaml", &example("nginx-writer", 8081, port));
    let mut pod = root.run(&path);
    pod.wait_for("pod/nginx-writer: Running", START);
    // Two different dates: the writer keeps rewriting what nginx serves.
    let mut seen: Vec<String> = Vec::new();
    let two = poll_until(deadline_in(START), || {
        if let Ok((200, body)) = http_get(port, "/") {
            if !body.trim().is_empty() && seen.last() != Some(&body) {
                seen.push(body);
            }
        }
        (seen.len() >= 2).then_some(())
    });
    assert!(
        two.is_some(),
        "dates on :{port}: {seen:?}\n{}",
        pod.transcript()
    );
    assert_ne!(seen[0], seen[1]);
    assert!(seen[1].contains("UTC"), "{seen:?}");
    pod.interrupt();
    assert_eq!(pod.exit_code(deadline_in(EXIT)), 0, "{}", pod.transcript());
    pod.assert_no_leaks(&root);
}
