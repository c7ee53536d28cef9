//! Real registries on loopback for the pull tests: Debian's `docker-registry` (the distribution
//! project's server) in a tempdir, plain HTTP or TLS from a test CA with htpasswd auth; images
//! pushed into them with `skopeo`, or written as OCI layouts here (a multi-arch index, a large
//! random layer). A [`Registry`] kills its server when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::common::{deadline_in, free_port, poll_until};

pub const USER: &str = "puller";
pub const PASSWORD: &str = "s3cret-pw";

/// Runs a command to completion, failing the test with its output if it fails.
pub fn must(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e} (is it installed? see scripts/install-deps)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A test CA and a server certificate for 127.0.0.1 signed by it.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn create(dir: &Path) -> TestCa {
        let ca_key = dir.join("ca.key");
        let ca = dir.join("ca.pem");
        let key = dir.join("server.key");
        let csr = dir.join("server.csr");
        let cert = dir.join("server.pem");
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        must(
            Command::new("openssl")
                .args(["req", "-x509"])
                .args(ec)
                .args([
                    "-keyout".as_ref(),
                    ca_key.as_os_str(),
                    "-out".as_ref(),
                    ca.as_os_str(),
                    "-days".as_ref(),
                    "2".as_ref(),
                    "-subj".as_ref(),
                    "/CN=peapod test CA".as_ref(),
                ]),
        );
        must(Command::new("openssl").arg("req").args(ec).args([
            "-keyout".as_ref(),
            key.as_os_str(),
            "-out".as_ref(),
            csr.as_os_str(),
            "-subj".as_ref(),
            "/CN=127.0.0.1".as_ref(),
        ]));
        must(Command::new("openssl").args(["x509", "-req"]).args([
            "-in".as_ref(),
            csr.as_os_str(),
            "-CA".as_ref(),
            ca.as_os_str(),
            "-CAkey".as_ref(),
            ca_key.as_os_str(),
            "-CAcreateserial".as_ref(),
            "-days".as_ref(),
            "2".as_ref(),
            "-extfile".as_ref(),
            ext.as_os_str(),
            "-out".as_ref(),
            cert.as_os_str(),
        ]));
        TestCa { ca, cert, key }
    }
}

/// A `docker-registry` process serving a tempdir on 127.0.0.1.
pub struct Registry {
    child: Child,
    pub port: u16,
    /// TLS and basic auth (`USER`/`PASSWORD`); skopeo pushes with credentials.
    secure: bool,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Plain HTTP, no auth.
    pub fn plain() -> Registry {
        Registry::start(None)
    }

    /// TLS with a certificate from `ca`, htpasswd auth.
    pub fn secure(ca: &TestCa) -> Registry {
        Registry::start(Some(ca))
    }

    fn start(ca: Option<&TestCa>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("peapod-registry-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some(ca) = ca {
            let out = must(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: peapod-test\n    path: {}\n",
                ca.cert.display(),
                ca.key.display(),
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry (see scripts/install-deps)");
        let registry = Registry {
            child,
            port,
            secure: ca.is_some(),
            dir,
        };
        let up = poll_until(deadline_in(Duration::from_secs(30)), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "registry did not listen: {}", registry.log());
        registry
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A scratch directory that lives as long as the registry.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).expect("mkdir scratch");
        path
    }

    /// `skopeo copy <source> docker://<host>/<name>` with `extra` flags (e.g. `--all`,
    /// `--format v2s2`).
    pub fn push(&self, source: &str, name: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra)
            .arg(source)
            .arg(format!("docker://{}/{name}", self.host()));
        if self.secure {
            cmd.arg(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        must(&mut cmd);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `python3 -m http.server` on 127.0.0.1 serving `dir`: a "registry" that answers garbage.
pub struct StaticServer {
    child: Child,
    pub port: u16,
}

impl StaticServer {
    pub fn start(dir: &Path) -> StaticServer {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let server = StaticServer { child, port };
        let up = poll_until(deadline_in(Duration::from_secs(30)), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "http.server did not listen");
        server
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An OCI image layout being written: blobs by digest, an `index.json` at the end.
pub struct Layout {
    pub dir: PathBuf,
}

/// A descriptor as JSON.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

impl Layout {
    pub fn new(dir: PathBuf) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir layout");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        Layout { dir }
    }

    /// Writes a blob; returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let digest = sha256(bytes);
        let hex = &digest["sha256:".len()..];
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).expect("write blob");
        descriptor(media_type, bytes)
    }

    /// A single-layer image (an uncompressed tar layer) for `arch`; returns the manifest's
    /// descriptor with its platform.
    pub fn image(&self, layer_tar: &[u8], arch: &str, cmd: &[&str]) -> serde_json::Value {
        let layer = self.blob(OCI_LAYER_TAR, layer_tar);
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
        });
        let config = self.blob(OCI_CONFIG, config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer],
        });
        let mut desc = self.blob(OCI_MANIFEST, manifest.to_string().as_bytes());
        desc["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        desc
    }

    /// Writes `index.json` naming `manifest` (an image manifest or an index) as `tag`.
    pub fn finish(&self, mut manifest: serde_json::Value, tag: &str) {
        manifest["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest]});
        std::fs::write(self.dir.join("index.json"), index.to_string()).expect("write index");
    }
}

/// An uncompressed layer tar holding `files` (path, content).
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, path, *content)
            .expect("append to layer");
    }
    builder.into_inner().expect("finish layer")
}
