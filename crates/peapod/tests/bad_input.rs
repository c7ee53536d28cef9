//! Root integration tests of bad input: manifests `peapod run` must refuse and archives
//! `peapod image load` must refuse. Each refusal is a non-zero exit and one stderr line naming
//! the file (and, for manifests, the field path), with nothing created: no pod sandbox, no
//! container, no mount, no image, no blob.
//!
//! Run as root: `cargo test -p peapod --test bad_input`.

mod common;

use common::{free_port, image_archive, TestRoot, BUSYBOX_ARCHIVE};
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Output;

/// A valid pod; each test breaks one thing. `restartPolicy: Never` and a command that exits at
/// once keep a wrongly accepted manifest from hanging the test.
const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  restartPolicy: Never
  containers:
  - name: a
    image: busybox
    command: ["true"]
    ports:
    - containerPort: 80
"#;

/// stderr's lines, without empty ones.
fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs `peapod run -f` on `manifest` and checks the refusal: exit 1, one stderr line naming
/// the file and containing every one of `wants`, nothing on stdout, nothing created.
fn assert_refused(manifest: &str, wants: &[&str]) {
    let root = TestRoot::new();
    let path = root.manifest("bad.yaml", manifest);
    let out = root.peapod(["run".as_ref(), "-f".as_ref(), path.as_os_str()]);
    let lines = stderr_lines(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "peapod run accepted a bad manifest: {lines:?}"
    );
    assert_eq!(lines.len(), 1, "want one stderr line: {lines:?}");
    let line = &lines[0];
    let prefix = format!("error: {}: ", path.display());
    assert!(line.starts_with(&prefix), "{line:?} does not name {path:?}");
    for want in wants {
        assert!(line.contains(want), "{line:?} does not say {want:?}");
    }
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    root.assert_nothing_created();
}

#[test]
fn unknown_field() {
    assert_refused(
        &POD.replace(
            "    image: busybox\n",
            "    image: busybox\n    imagee: busybox\n",
        ),
        &["spec.containers[0].imagee: unknown field"],
    );
}

#[test]
fn string_where_a_number_goes() {
    assert_refused(
        &POD.replace("containerPort: 80", "containerPort: \"eighty\""),
        &["spec.containers[0].ports[0].containerPort: wrong type"],
    );
}

#[test]
fn list_where_a_string_goes() {
    assert_refused(
        &POD.replace("image: busybox", "image: [busybox]"),
        &["spec.containers[0].image: wrong type"],
    );
}

#[test]
fn invalid_pod_name() {
    assert_refused(
        &POD.replace("name: web", "name: Web_1"),
        &["Pod \"Web_1\"", "metadata.name: Invalid value: \"Web_1\""],
    );
}

#[test]
fn duplicate_container_name() {
    let second = "  - name: a\n    image: busybox\n    command: [\"true\"]\n";
    assert_refused(
        &format!("{POD}{second}"),
        &[
            "Pod \"web\"",
            "spec.containers[1].name: Duplicate value: \"a\"",
        ],
    );
}

#[test]
fn duplicate_host_port() {
    let port = free_port();
    let manifest = format!(
        "{}  - name: b\n    image: busybox\n    command: [\"true\"]\n    ports:\n    \
         - containerPort: 81\n      hostPort: {port}\n",
        POD.replace(
            "containerPort: 80",
            &format!("containerPort: 80\n      hostPort: {port}")
        )
    );
    assert_refused(
        &manifest,
        &[&format!(
            "spec.containers[1].ports[0].hostPort: Duplicate value: \"{port}\""
        )],
    );
}

#[test]
fn duplicate_port_name() {
    let ports =
        "    - containerPort: 80\n      name: http\n    - containerPort: 81\n      name: http\n";
    assert_refused(
        &POD.replace("    - containerPort: 80\n", ports),
        &["spec.containers[0].ports[1].name: Duplicate value: \"http\""],
    );
}

#[test]
fn claim_volume_in_a_run() {
    assert_refused(
        &POD.replace(
            "  restartPolicy: Never\n",
            "  restartPolicy: Never\n  volumes:\n  - name: d\n    persistentVolumeClaim:\n      claimName: data\n",
        ),
        &[
            "spec.volumes[0].persistentVolumeClaim: Forbidden",
            "peapod serve",
        ],
    );
}

#[test]
fn image_not_in_the_store_with_pull_policy_never() {
    // With any other policy the kubelet would pull it (tests/pull.rs, from a loopback registry).
    assert_refused(
        &POD.replace(
            "image: busybox",
            "image: nginx:1.25\n    imagePullPolicy: Never",
        ),
        &[
            "spec.containers[0].image: Invalid value: \"nginx:1.25\"",
            "imagePullPolicy is Never",
        ],
    );
}

#[test]
fn host_port_already_taken() {
    // Held for the whole test; peapod binds the wildcard address when hostIP is empty.
    let taken = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind a port");
    let port = taken.local_addr().expect("local addr").port();
    assert_refused(
        &POD.replace(
            "containerPort: 80",
            &format!("containerPort: 80\n      hostPort: {port}"),
        ),
        &[
            "spec.containers[0].ports[0].hostPort",
            &format!("{port}"),
            "already in use",
        ],
    );
    drop(taken);
}

#[test]
fn malformed_yaml() {
    assert_refused(
        &POD.replace("command: [\"true\"]", "command: [\"true\""),
        &["invalid YAML"],
    );
}

#[test]
fn unsupported_kind() {
    assert_refused(
        &POD.replace("kind: Pod", "kind: Service"),
        &["kind: Unsupported value: \"Service\""],
    );
}

/// The image store as the CLI shows it and as it lies on disk.
fn store_state(root: &TestRoot) -> (String, Vec<String>) {
    let out = root.peapod(["image", "ls"]);
    assert!(out.status.success(), "image ls failed: {out:?}");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    (listing, root.tree("images"))
}

/// `peapod image load -i <archive>` fails: non-zero, one line naming the archive, and the
/// store is as it was (same `image ls`, no new file: blob, layer or leftover temp file).
fn assert_load_refused(archive: &Path, wants: &[&str]) {
    let root = TestRoot::empty();
    let before = store_state(&root);
    let out = root.peapod([
        "image".as_ref(),
        "load".as_ref(),
        "-i".as_ref(),
        archive.as_os_str(),
    ]);
    let lines = stderr_lines(&out);
    assert!(
        !out.status.success(),
        "peapod image load accepted {}: {lines:?}",
        archive.display()
    );
    assert_eq!(lines.len(), 1, "want one stderr line: {lines:?}");
    let line = &lines[0];
    assert!(
        line.contains(&archive.display().to_string()),
        "{line:?} does not name {}",
        archive.display()
    );
    for want in wants {
        assert!(line.contains(want), "{line:?} does not say {want:?}");
    }
    assert_eq!(store_state(&root), before, "the store changed");
    root.assert_nothing_created();
}

#[test]
fn truncated_archive() {
    let bytes = std::fs::read(image_archive(BUSYBOX_ARCHIVE)).expect("read busybox archive");
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("truncated.tar");
    std::fs::write(&archive, &bytes[..bytes.len() / 2]).expect("write truncated archive");
    assert_load_refused(&archive, &[]);
}

/// The busybox archive with one byte of its layer blob changed where gzip does not look (the
/// header's OS field): a valid layer with the same content, whose digest no longer matches.
#[test]
fn blob_digest_mismatch() {
    let source = image_archive(BUSYBOX_ARCHIVE);
    let layer = layer_blob_path(&source);
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("tampered.tar");
    let mut changed = false;
    rewrite_archive(&source, &archive, |path, data| {
        if path == layer {
            assert_eq!(&data[..2], b"\x1f\x8b", "layer blob is not gzip");
            data[9] ^= 0x01;
            changed = true;
        }
    });
    assert!(changed, "layer blob {layer} not found in the archive");
    assert_load_refused(&archive, &["digest"]);
}

/// `blobs/sha256/<hex>` of the first layer of the archive's (only) image.
fn layer_blob_path(archive: &Path) -> String {
    let mut files = std::collections::BTreeMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(archive).expect("open archive"));
    for entry in tar.entries().expect("read archive") {
        let mut entry = entry.expect("archive entry");
        let path = entry.path().expect("entry path").display().to_string();
        if path.ends_with(".json") || entry.header().size().unwrap_or(0) < 64 * 1024 {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read entry");
            files.insert(path, data);
        }
    }
    let json = |path: &str| -> serde_json::Value {
        let data = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the archive"));
        serde_json::from_slice(data).expect("json")
    };
    let blob = |digest: &serde_json::Value| {
        let digest = digest.as_str().expect("digest string");
        format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
    };
    let manifest = json(&blob(&json("index.json")["manifests"][0]["digest"]));
    blob(&manifest["layers"][0]["digest"])
}

/// Copies a tar archive entry by entry, letting `edit` change an entry's bytes in place.
fn rewrite_archive(source: &Path, dest: &Path, mut edit: impl FnMut(&str, &mut Vec<u8>)) {
    let mut input = tar::Archive::new(std::fs::File::open(source).expect("open archive"));
    let mut output = tar::Builder::new(std::fs::File::create(dest).expect("create archive"));
    for entry in input.entries().expect("read archive") {
        let mut entry = entry.expect("archive entry");
        let path = entry.path().expect("entry path").display().to_string();
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry");
        edit(&path, &mut data);
        header.set_size(data.len() as u64);
        output
            .append_data(&mut header, &path, data.as_slice())
            .expect("write entry");
    }
    output.finish().expect("finish archive");
}
