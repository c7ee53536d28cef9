//! Root integration tests of image pulls: `peapod image pull` and pods with each
//! `imagePullPolicy`, against real registries on loopback (Debian's `docker-registry`, see
//! `common/registry.rs`) that `skopeo` pushes the test images into. Nothing leaves 127.0.0.1.
//!
//! Run as root: `cargo test -p peapod --test pull`. Needs `docker-registry skopeo
//! apache2-utils openssl` (scripts/install-deps) and `python3 images/build.py`.

mod common;
#[path = "common/registry.rs"]
mod registry;

use common::{deadline_in, image_archive, poll_until, TestRoot, BUSYBOX_ARCHIVE};
use registry::{layer_tar, sha256, Layout, Registry, TestCa, OCI_INDEX};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `peapod image pull <args>` against `root`.
fn pull(root: &TestRoot, args: &[&str]) -> Output {
    let mut all = vec!["image", "pull"];
    all.extend_from_slice(args);
    root.peapod(all)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Pulls and fails the test if that fails; returns stdout.
fn pull_ok(root: &TestRoot, args: &[&str]) -> String {
    let out = pull(root, args);
    assert!(
        out.status.success(),
        "peapod image pull {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The `Digest: sha256:...` line of a pull's output.
fn digest_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no digest in {stdout:?}"))
        .to_owned()
}

/// `peapod image ls` names.
fn names(root: &TestRoot) -> Vec<String> {
    let out = root.peapod(["image", "ls"]);
    assert!(out.status.success(), "image ls: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Every blob in the store hashes to its name, and `downloads/` holds no finished blob a
/// committed pull left behind.
fn assert_store_consistent(root: &TestRoot) {
    let blobs = root.path().join("images/blobs/sha256");
    for entry in std::fs::read_dir(&blobs).expect("read blobs") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read blob");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert_eq!(sha256(&bytes), format!("sha256:{name}"), "corrupt blob");
    }
}

/// `n` bytes from /dev/urandom: a layer no compression shrinks.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut random = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
        .expect("read urandom");
    random
}

/// A pod whose container prints `up` and then sleeps until it is deleted.
fn sleeper_pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo up; exec sleep 300\"]\n"
    )
}

/// `busybox:1` and `python:3` (whose lower layer is busybox's).
fn busybox_and_python_registry() -> Registry {
    let registry = busybox_registry();
    let python = format!("oci-archive:{}", image_archive("python.oci.tar").display());
    registry.push(&python, "python:3", &[]);
    registry
}

fn busybox_registry() -> Registry {
    let registry = Registry::plain();
    let source = format!("oci-archive:{}", image_archive(BUSYBOX_ARCHIVE).display());
    registry.push(&source, "busybox:1", &[]);
    registry
}

#[test]
fn pulls_by_tag_then_by_digest_without_fetching_again() {
    let registry = busybox_registry();
    let root = TestRoot::empty();
    let by_tag = format!("{}/busybox:1", registry.host());
    let out = pull(&root, &["--insecure", &by_tag]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "pull by tag: {stderr}");
    assert!(
        stdout.starts_with(&format!("Pulled image: {by_tag} (id ")),
        "{stdout}"
    );
    assert!(
        stderr.contains(": fetched "),
        "a layer was fetched: {stderr}"
    );
    let digest = digest_of(&stdout);

    let by_digest = format!("{}/busybox@{digest}", registry.host());
    let out = pull(&root, &["--insecure", &by_digest]);
    assert!(
        out.status.success(),
        "pull by digest: {}",
        text(&out.stderr)
    );
    assert_eq!(digest_of(&text(&out.stdout)), digest);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("already present"), "{stderr}");
    assert!(
        !stderr.contains(": fetched "),
        "nothing fetched twice: {stderr}"
    );
    assert_eq!(names(&root), vec![by_tag, by_digest]);
    assert_store_consistent(&root);
    // Nothing committed is left in downloads/.
    let downloads = root.entries("images/downloads");
    assert!(
        downloads.iter().all(|f| f.ends_with(".lock")),
        "{downloads:?}"
    );
}

#[test]
fn pulls_a_docker_v2s2_manifest() {
    let registry = Registry::plain();
    let source = format!(
        "docker-archive:{}",
        image_archive("busybox.docker.tar").display()
    );
    registry.push(&source, "busybox:v2s2", &["--format", "v2s2"]);
    let root = TestRoot::empty();
    let reference = format!("{}/busybox:v2s2", registry.host());
    let digest = digest_of(&pull_ok(&root, &["--insecure", &reference]));
    let manifest = root
        .path()
        .join("images/blobs/sha256")
        .join(&digest["sha256:".len()..]);
    let manifest = std::fs::read_to_string(manifest).expect("stored manifest");
    assert!(
        manifest.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{manifest}"
    );
    assert_eq!(names(&root), vec![reference]);
}

#[test]
fn resolves_a_multi_arch_index_to_this_platform() {
    let registry = Registry::plain();
    let layout = Layout::new(registry.scratch("multi"));
    let arm = layout.image(&layer_tar(&[("arch", b"arm64")]), "arm64", &["true"]);
    let amd = layout.image(&layer_tar(&[("arch", b"amd64")]), "amd64", &["true"]);
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [arm, amd]});
    let index_desc = layout.blob(OCI_INDEX, index.to_string().as_bytes());
    layout.finish(index_desc, "multi");
    let source = format!("oci:{}:multi", layout.dir.display());
    registry.push(&source, "multi:1", &["--all", "--preserve-digests"]);

    let root = TestRoot::empty();
    let reference = format!("{}/multi:1", registry.host());
    let out = pull_ok(&root, &["--insecure", &reference]);
    assert_eq!(digest_of(&out), amd["digest"].as_str().unwrap_or_default());

    // An index with no manifest for this machine: a precise error, nothing stored.
    let only_arm =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [arm]});
    let only_arm_desc = layout.blob(OCI_INDEX, only_arm.to_string().as_bytes());
    layout.finish(only_arm_desc.clone(), "arm");
    registry.push(
        &format!("oci:{}:arm", layout.dir.display()),
        "multi:arm",
        &["--all", "--preserve-digests"],
    );
    let arm_ref = format!("{}/multi:arm", registry.host());
    let out = pull(&root, &["--insecure", &arm_ref]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).lines().last().unwrap_or_default(),
        format!(
            "error: {arm_ref}: index {} has no manifest for linux/amd64",
            only_arm_desc["digest"].as_str().unwrap_or_default()
        )
    );
    assert_eq!(names(&root), vec![reference]);
}

#[test]
fn missing_tag_and_unreachable_registry_are_precise_errors() {
    let registry = busybox_registry();
    let root = TestRoot::empty();
    let missing = format!("{}/busybox:nope", registry.host());
    let out = pull(&root, &["--insecure", &missing]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: {missing}: manifest unknown")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // A digest the registry does not have.
    let unknown = format!("{}/busybox@sha256:{}", registry.host(), "0".repeat(64));
    let stderr = text(&pull(&root, &["--insecure", &unknown]).stderr);
    assert!(
        stderr.starts_with(&format!("error: {unknown}: manifest unknown")),
        "{stderr}"
    );

    // Without --insecure the client speaks TLS to a plain HTTP registry.
    let out = pull(&root, &[&format!("{}/busybox:1", registry.host())]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: {}/busybox:1: cannot reach registry {}: ",
            registry.host(),
            registry.host()
        )),
        "{stderr}"
    );
    // A server that answers garbage where a manifest should be.
    let garbage = registry.scratch("garbage");
    let manifests = garbage.join("v2/busybox/manifests");
    std::fs::create_dir_all(&manifests).expect("mkdir");
    std::fs::write(manifests.join("1"), "<html>not a manifest</html>").expect("write");
    let server = registry::StaticServer::start(&garbage);
    let reference = format!("127.0.0.1:{}/busybox:1", server.port);
    let out = pull(&root, &["--insecure", &reference]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: {reference}: invalid manifest sha256:")),
        "{stderr}"
    );
    // A server that accepts and never answers: the pull gives up after the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_ref = format!("{}/busybox:1", silent.local_addr().expect("addr"));
    let out = Command::new(common::peapod_bin())
        .args(["image", "pull", "--insecure", &silent_ref])
        .env("PEAPOD_ROOT", root.path())
        .env("PEAPOD_REGISTRY_TIMEOUT", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run peapod");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: {silent_ref}: cannot reach registry "))
            && stderr.contains("timed out"),
        "{stderr}"
    );
    drop(silent);

    let bad = pull(&root, &["Not/A/Reference"]);
    assert!(
        text(&bad.stderr).starts_with("error: invalid image reference \"Not/A/Reference\""),
        "{}",
        text(&bad.stderr)
    );
    assert!(names(&root).is_empty());
}

#[test]
fn private_registry_needs_its_ca_and_credentials() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::create(scratch.path());
    let registry = Registry::secure(&ca);
    let source = format!("oci-archive:{}", image_archive(BUSYBOX_ARCHIVE).display());
    registry.push(&source, "private/busybox:1", &[]);
    let root = TestRoot::empty();
    let reference = format!("{}/private/busybox:1", registry.host());
    let ca_arg = ca.ca.to_string_lossy().into_owned();
    let authfile = |user: &str, password: &str| {
        let path = scratch.path().join(format!("auth-{user}-{password}.json"));
        let doc = serde_json::json!({"auths": {registry.host(): {"username": user, "password": password}}});
        std::fs::write(&path, doc.to_string()).expect("write authfile");
        path.to_string_lossy().into_owned()
    };
    let empty_auth = scratch.path().join("none.json");
    std::fs::write(&empty_auth, "{}").expect("write");
    let empty_auth = empty_auth.to_string_lossy().into_owned();

    // The system roots do not know the test CA.
    let out = pull(&root, &["--authfile", &empty_auth, &reference]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot reach registry") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    // Anonymous, and with a wrong password: the registry's 401.
    for auth in [empty_auth.clone(), authfile(registry::USER, "wrong")] {
        let out = pull(&root, &["--ca", &ca_arg, "--authfile", &auth, &reference]);
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("error: {reference}: 401 Unauthorized")),
            "{stderr}"
        );
    }
    assert!(names(&root).is_empty());
    let good = authfile(registry::USER, registry::PASSWORD);
    pull_ok(&root, &["--ca", &ca_arg, "--authfile", &good, &reference]);
    // The CA by environment, the credentials from $REGISTRY_AUTH_FILE.
    let again = Command::new(common::peapod_bin())
        .args(["image", "pull", &reference])
        .env("PEAPOD_ROOT", root.path())
        .env("PEAPOD_REGISTRY_CA", &ca.ca)
        .env("REGISTRY_AUTH_FILE", &good)
        .stdin(Stdio::null())
        .output()
        .expect("run peapod");
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(names(&root), vec![reference]);
}

#[test]
fn a_pull_killed_halfway_leaves_no_corrupt_blob_and_can_be_retried() {
    let registry = Registry::plain();
    let layout = Layout::new(registry.scratch("big"));
    let random = random_bytes(48 << 20);
    let layer = layer_tar(&[("big", &random)]);
    let manifest = layout.image(&layer, "amd64", &["true"]);
    layout.finish(manifest, "big");
    registry.push(&format!("oci:{}:big", layout.dir.display()), "big:1", &[]);

    let root = TestRoot::empty();
    let reference = format!("{}/big:1", registry.host());
    let downloads = root.path().join("images/downloads");
    // skopeo may have compressed the layer on its way in: look for any partial download.
    let partial_size = || {
        std::fs::read_dir(&downloads)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max()
    };
    let mut child = Command::new(common::peapod_bin())
        .args(["image", "pull", "--insecure", &reference])
        .env("PEAPOD_ROOT", root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pull");
    let started = poll_until(deadline_in(Duration::from_secs(60)), || {
        partial_size().filter(|len| *len > 1 << 20)
    });
    let _ = child.kill();
    let status = child.wait().expect("wait pull");
    let started = started.expect("the download started");
    assert!(
        !status.success(),
        "killed after {started} bytes, yet it succeeded"
    );
    assert!(names(&root).is_empty(), "no name after a killed pull");
    assert_store_consistent(&root);
    // Left alone while it may belong to a running pull; `prune` removes it once it is stale.
    let prune = root.peapod(["image", "prune"]);
    assert!(prune.status.success(), "{}", text(&prune.stderr));
    assert!(partial_size().is_some(), "a fresh partial download is kept");
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for entry in std::fs::read_dir(&downloads)
        .expect("read downloads")
        .flatten()
    {
        std::fs::File::options()
            .write(true)
            .open(entry.path())
            .and_then(|f| f.set_modified(two_hours_ago))
            .expect("age the download");
    }
    let prune = root.peapod(["image", "prune"]);
    assert!(prune.status.success(), "{}", text(&prune.stderr));
    assert_eq!(root.entries("images/downloads"), Vec::<String>::new());

    pull_ok(&root, &["--insecure", &reference]);
    assert_eq!(names(&root), vec![reference]);
    assert_store_consistent(&root);
    assert_eq!(
        partial_size(),
        None,
        "the retry replaced the partial download"
    );
}

/// Generous: two cores, tests in parallel, a debug build.
const POD_EXIT: Duration = Duration::from_secs(90);

/// A pod of one container printing `hello from <name>`, with `policy` (none: the default).
fn echo_pod(name: &str, image: &str, policy: Option<&str>, extra_spec: &str) -> String {
    let policy = policy
        .map(|p| format!("\n    imagePullPolicy: {p}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n{extra_spec}  containers:\n  - name: c\n    image: {image}{policy}\n    command: [\"echo\", \"hello from {name}\"]\n"
    )
}

/// Runs a manifest to completion (exit 0); returns its stderr lines.
fn run_ok(root: &TestRoot, file: &str, manifest: &str) -> Vec<String> {
    let path = root.manifest(file, manifest);
    let mut pod = root.run(&path);
    let code = pod.exit_code(deadline_in(POD_EXIT));
    assert_eq!(code, 0, "exit code\n{}", pod.transcript());
    pod.assert_no_leaks(root);
    pod.stderr()
}

fn pulled(lines: &[String], pod: &str) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with(&format!("pod/{pod}: Pulling: Pulling image ")))
}

#[test]
fn pods_follow_each_pull_policy() {
    let registry = busybox_registry();
    let source = format!("oci-archive:{}", image_archive(BUSYBOX_ARCHIVE).display());
    registry.push(&source, "busybox:latest", &[]);
    let mut root = TestRoot::empty();
    root.set_env("PEAPOD_INSECURE_REGISTRIES", &registry.host());
    let tagged = format!("{}/busybox:1", registry.host());
    let latest = format!("{}/busybox", registry.host());

    // Never, and not there: refused before anything is created.
    let path = root.manifest("never.yaml", &echo_pod("never", &tagged, Some("Never"), ""));
    let out = root.peapod(["run".as_ref(), "-f".as_ref(), path.as_os_str()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("imagePullPolicy is Never"),
        "{}",
        text(&out.stderr)
    );
    root.assert_nothing_created();

    // `:1` defaults to IfNotPresent: pulled once, then used as it is.
    assert!(pulled(
        &run_ok(&root, "a.yaml", &echo_pod("a", &tagged, None, "")),
        "a"
    ));
    assert!(!pulled(
        &run_ok(&root, "b.yaml", &echo_pod("b", &tagged, None, "")),
        "b"
    ));
    // Never, now that it is there.
    assert!(!pulled(
        &run_ok(
            &root,
            "nev.yaml",
            &echo_pod("nev", &tagged, Some("Never"), "")
        ),
        "nev"
    ));
    // Always pulls every time (the second time only the manifest is fetched).
    for name in ["c", "d"] {
        let manifest = echo_pod(name, &tagged, Some("Always"), "");
        let lines = run_ok(&root, &format!("{name}.yaml"), &manifest);
        assert!(pulled(&lines, name), "{lines:?}");
    }
    // No tag: `:latest`, Always by default.
    assert!(pulled(
        &run_ok(&root, "l.yaml", &echo_pod("l", &latest, None, "")),
        "l"
    ));
    assert_store_consistent(&root);
}

#[test]
fn a_missing_image_backs_off_and_starts_once_pushed() {
    let registry = busybox_registry();
    let mut root = TestRoot::empty();
    root.set_env("PEAPOD_INSECURE_REGISTRIES", &registry.host());
    let later = format!("{}/busybox:later", registry.host());
    let path = root.manifest("later.yaml", &echo_pod("later", &later, None, ""));
    let mut pod = root.run(&path);
    let deadline = deadline_in(POD_EXIT);
    let failed = pod.wait_for_line(
        |l| l.starts_with("pod/later: Failed: Failed to pull image"),
        deadline,
    );
    assert!(
        failed.ends_with(&format!(
            "{later}: manifest unknown ({{\"Tag\":\"later\"}})"
        )),
        "{failed}"
    );
    pod.wait_for_line(
        |l| l.starts_with("pod/later: container c failed to start: ErrImagePull: "),
        deadline,
    );
    pod.wait_for_line(
        |l| l == format!("pod/later: BackOff: Back-off pulling image \"{later}\""),
        deadline,
    );
    // The registry gets the image; the next try after the back-off finds it.
    let source = format!("oci-archive:{}", image_archive(BUSYBOX_ARCHIVE).display());
    registry.push(&source, "busybox:later", &[]);
    pod.wait_for_line(|l| l == "later/c | hello from later", deadline);
    assert_eq!(pod.exit_code(deadline), 0, "{}", pod.transcript());
    pod.assert_no_leaks(&root);
}

#[test]
fn image_pull_secrets_reach_a_private_registry() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::create(scratch.path());
    let registry = Registry::secure(&ca);
    let source = format!("oci-archive:{}", image_archive(BUSYBOX_ARCHIVE).display());
    registry.push(&source, "private/busybox:1", &[]);
    let mut root = TestRoot::empty();
    root.set_env("PEAPOD_REGISTRY_CA", &ca.ca.to_string_lossy());
    let image = format!("{}/private/busybox:1", registry.host());

    // Without the secret: the registry's 401 in the pod's events, retried, until interrupted.
    let path = root.manifest("anon.yaml", &echo_pod("anon", &image, None, ""));
    let mut pod = root.run(&path);
    let deadline = deadline_in(POD_EXIT);
    let failed = pod.wait_for_line(
        |l| l.starts_with("pod/anon: Failed: Failed to pull image"),
        deadline,
    );
    assert!(failed.contains("401 Unauthorized"), "{failed}");
    pod.interrupt();
    pod.wait_exit(deadline);
    pod.assert_no_leaks(&root);

    let config = serde_json::json!({"auths": {registry.host(): {
        "auth": base64_encode(format!("{}:{}", registry::USER, registry::PASSWORD).as_bytes()),
    }}});
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n---\n",
        base64_encode(config.to_string().as_bytes())
    );
    let pod = echo_pod(
        "authed",
        &image,
        None,
        "  imagePullSecrets:\n  - name: regcred\n",
    );
    let lines = run_ok(&root, "authed.yaml", &format!("{secret}{pod}"));
    assert!(pulled(&lines, "authed"), "{lines:?}");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn prune_keeps_what_a_container_uses() {
    let (registry, mut root) = (busybox_and_python_registry(), TestRoot::empty());
    root.set_env("PEAPOD_INSECURE_REGISTRIES", &registry.host());
    let busybox = format!("{}/busybox:1", registry.host());
    let python = format!("{}/python:3", registry.host());
    pull_ok(&root, &[&busybox]);
    pull_ok(&root, &[&python]);
    assert_eq!(
        root.entries("images/layers").len(),
        2,
        "busybox's layer shared"
    );

    let path = root.manifest("sleeper.yaml", &sleeper_pod("sleeper", &busybox));
    let mut pod = root.run(&path);
    pod.wait_for("sleeper/c | up", POD_EXIT);
    let out = root.peapod(["image", "prune"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("Deleted: {python}\n")),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(names(&root), vec![busybox.clone()]);
    assert_eq!(
        root.entries("images/layers").len(),
        1,
        "the running container's layer kept"
    );
    assert_store_consistent(&root);
    pod.interrupt();
    pod.wait_exit(deadline_in(POD_EXIT));
    pod.assert_no_leaks(&root);

    let out = root.peapod(["image", "prune"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(names(&root).is_empty());
    assert!(root.entries("images/layers").is_empty());
    assert!(root.entries("images/blobs/sha256").is_empty());
}

#[test]
fn concurrent_pulls_of_one_image_fetch_each_blob_once() {
    let registry = Registry::plain();
    let layout = Layout::new(registry.scratch("two"));
    let random = random_bytes(8 << 20);
    let manifest = layout.image(&layer_tar(&[("data", &random)]), "amd64", &["true"]);
    layout.finish(manifest, "two");
    registry.push(&format!("oci:{}:two", layout.dir.display()), "two:1", &[]);
    let root = TestRoot::empty();
    let reference = format!("{}/two:1", registry.host());
    let spawn = || {
        Command::new(common::peapod_bin())
            .args(["image", "pull", "--insecure", &reference])
            .env("PEAPOD_ROOT", root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pull")
    };
    let (a, b) = (spawn(), spawn());
    let outputs = [a, b].map(|c| c.wait_with_output().expect("wait pull"));
    let mut fetched = 0;
    for out in &outputs {
        assert!(out.status.success(), "{}", text(&out.stderr));
        fetched += text(&out.stderr).matches(": fetched ").count();
    }
    assert_eq!(fetched, 1, "the layer was downloaded once");
    assert_eq!(names(&root), vec![reference]);
    assert_store_consistent(&root);
}

#[test]
fn garbage_collection_removes_old_unused_images_above_the_threshold() {
    let (registry, mut root) = (busybox_and_python_registry(), TestRoot::empty());
    root.set_env("PEAPOD_INSECURE_REGISTRIES", &registry.host());
    let busybox = format!("{}/busybox:1", registry.host());
    let python = format!("{}/python:3", registry.host());
    let digest = digest_of(&pull_ok(&root, &[&python]));
    // An hour old: past the minimum age the daemon is given below.
    let manifest = root
        .path()
        .join("images/blobs/sha256")
        .join(&digest["sha256:".len()..]);
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&manifest)
        .and_then(|f| f.set_modified(an_hour_ago))
        .expect("age the manifest");
    // Any usage is above 1%: every unused image past 10 minutes goes, checked every second.
    for (key, value) in [
        ("PEAPOD_IMAGE_GC_HIGH", "1"),
        ("PEAPOD_IMAGE_GC_LOW", "0"),
        ("PEAPOD_IMAGE_GC_INTERVAL", "1"),
        ("PEAPOD_IMAGE_GC_MIN_AGE", "600"),
    ] {
        root.set_env(key, value);
    }
    let path = root.manifest("gc.yaml", &sleeper_pod("gc", &busybox));
    let mut pod = root.run(&path);
    pod.wait_for("gc/c | up", POD_EXIT);
    let collected = poll_until(deadline_in(Duration::from_secs(60)), || {
        (names(&root) == vec![busybox.clone()]).then_some(())
    });
    assert!(
        collected.is_some(),
        "python was not collected: {:?}",
        names(&root)
    );
    assert_store_consistent(&root);
    pod.interrupt();
    pod.wait_exit(deadline_in(POD_EXIT));
    pod.assert_no_leaks(&root);
}
