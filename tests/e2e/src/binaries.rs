//! Where the tests find what they run: the `peapod` binary (`PEAPOD_BIN`, else
//! `<workspace>/target/debug/peapod`), the busybox image (`$PEAPOD_TEST_IMAGES/busybox.oci.tar`,
//! else `images/out/busybox.oci.tar`) and the kubectl bundle of google-cloud-sdk
//! (`kubectl.1.27` … `kubectl.1.33`, run directly rather than through its version dispatcher).
//! A missing one fails the test with the command that provides it.

use std::path::{Path, PathBuf};

/// Where the google-cloud-sdk kubectl bundle keeps one binary per minor version.
pub const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// The newest kubectl: used for the commands checked once, readiness and cleanup.
pub const LATEST: u32 = 33;

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `peapod` binary under test.
pub fn peapod_bin() -> PathBuf {
    let bin = std::env::var_os("PEAPOD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/peapod"));
    assert!(
        bin.is_file(),
        "peapod binary {} not found: run `cargo build -p peapod` first, or set PEAPOD_BIN",
        bin.display()
    );
    bin
}

/// The busybox image archive that `peapod image load -i` takes.
pub fn busybox_archive() -> PathBuf {
    let dir = std::env::var_os("PEAPOD_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("images/out"));
    let archive = dir.join("busybox.oci.tar");
    assert!(
        archive.is_file(),
        "test image {} is missing: run `python3 images/build.py` first",
        archive.display()
    );
    archive
}

/// kubectl 1.`minor`.
pub fn kubectl_bin(minor: u32) -> PathBuf {
    let bin = Path::new(KUBECTL_DIR).join(format!("kubectl.1.{minor}"));
    assert!(
        bin.is_file(),
        "{} not found (the google-cloud-sdk kubectl bundle provides kubectl.1.27 … kubectl.1.33)",
        bin.display()
    );
    bin
}
