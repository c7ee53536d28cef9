//! Registry credentials in Docker's config format: `~/.docker/config.json`, podman's
//! `auth.json` (`$REGISTRY_AUTH_FILE`) and the `.dockerconfigjson` key of a Kubernetes
//! `kubernetes.io/dockerconfigjson` Secret all hold `{"auths": {"<registry>": {"auth":
//! "<base64 user:password>"}}}` (<https://kubernetes.io/docs/concepts/configuration/secret/#docker-config-secrets>).
//! Credential helpers (`credsStore`) are not run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

/// A user name and password for HTTP basic auth (or a registry's token service).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a credentials document was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: not a docker config")]
    Json {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{origin}: auths.{registry:?}: {reason}")]
    Entry {
        origin: String,
        registry: String,
        reason: &'static str,
    },
}

/// Credentials by registry host (`docker.io`, `127.0.0.1:5000`), from one or more documents;
/// the first document that names a registry wins, as the kubelet tries pull secrets in order.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    by_registry: BTreeMap<String, Credentials>,
}

#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl AuthConfig {
    /// Adds the registries of one document; `origin` (a path or `secret ns/name`) names it in
    /// errors.
    pub fn add_json(&mut self, origin: &str, bytes: &[u8]) -> Result<(), AuthError> {
        let doc: Document = serde_json::from_slice(bytes).map_err(|source| AuthError::Json {
            origin: origin.to_owned(),
            source,
        })?;
        for (key, entry) in doc.auths {
            let bad = |reason| AuthError::Entry {
                origin: origin.to_owned(),
                registry: key.clone(),
                reason,
            };
            let creds = match (entry.auth.filter(|a| !a.is_empty()), entry.username) {
                (Some(auth), _) => decode_auth(&auth).map_err(bad)?,
                (None, Some(username)) => Credentials {
                    username,
                    password: entry.password.unwrap_or_default(),
                },
                // An entry without credentials (`{}`, as `docker login` with a helper leaves).
                (None, None) => continue,
            };
            self.by_registry.entry(registry_host(&key)).or_insert(creds);
        }
        Ok(())
    }

    /// Adds a config file; a missing file adds nothing.
    pub fn add_file(&mut self, path: &Path) -> Result<(), AuthError> {
        match std::fs::read(path) {
            Ok(bytes) => self.add_json(&path.display().to_string(), &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(AuthError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The credentials for `registry` (as in a normalised reference: `docker.io`, `host:port`).
    pub fn get(&self, registry: &str) -> Option<&Credentials> {
        self.by_registry.get(&registry_host(registry))
    }
}

/// The default file of the CLI: `$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`.
pub fn default_auth_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(path));
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// `base64(user:password)`.
fn decode_auth(auth: &str) -> Result<Credentials, &'static str> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "auth is not base64")?;
    let text = String::from_utf8(bytes).map_err(|_| "auth is not UTF-8")?;
    let (username, password) = text.split_once(':').ok_or("auth is not user:password")?;
    Ok(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// A config key as a registry host: `https://index.docker.io/v1/` -> `docker.io`,
/// `http://127.0.0.1:5000` -> `127.0.0.1:5000`.
fn registry_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            username: user.to_owned(),
            password: password.to_owned(),
        }
    }

    #[test]
    fn reads_docker_and_secret_documents() {
        // base64("alice:s3cr:et"): the password may hold a colon.
        let doc = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "YWxpY2U6czNjcjpldA=="},
            "http://127.0.0.1:5000": {"username": "bob", "password": "pw"},
            "helper.example": {}
        }, "credsStore": "desktop"}"#;
        let mut config = AuthConfig::default();
        config.add_json("config.json", doc).expect("valid");
        assert_eq!(config.get("docker.io"), Some(&creds("alice", "s3cr:et")));
        assert_eq!(config.get("127.0.0.1:5000"), Some(&creds("bob", "pw")));
        assert_eq!(config.get("helper.example"), None);
        assert_eq!(config.get("quay.io"), None);
    }

    #[test]
    fn first_document_wins() {
        let mut config = AuthConfig::default();
        let first = br#"{"auths": {"r.example": {"username": "a", "password": "1"}}}"#;
        let second = br#"{"auths": {"r.example": {"username": "b", "password": "2"}}}"#;
        config.add_json("first", first).expect("valid");
        config.add_json("second", second).expect("valid");
        assert_eq!(config.get("r.example"), Some(&creds("a", "1")));
    }

    #[test]
    fn bad_documents_name_the_entry() {
        let cases: &[(&[u8], &str)] = &[
            (b"[1]", "secret default/x: not a docker config"),
            (
                br#"{"auths": {"r.example": {"auth": "***"}}}"#,
                "secret default/x: auths.\"r.example\": auth is not base64",
            ),
            (
                br#"{"auths": {"r.example": {"auth": "bm9jb2xvbg=="}}}"#,
                "secret default/x: auths.\"r.example\": auth is not user:password",
            ),
        ];
        for (doc, want) in cases {
            let err = AuthConfig::default()
                .add_json("secret default/x", doc)
                .expect_err("invalid");
            assert_eq!(err.to_string(), *want);
        }
    }

    #[test]
    fn registry_hosts() {
        let cases = [
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("http://LOCALHOST:5000/", "localhost:5000"),
            ("quay.io", "quay.io"),
        ];
        for (key, want) in cases {
            assert_eq!(registry_host(key), want, "{key}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        assert!(!format!("{:?}", creds("u", "hunter2")).contains("hunter2"));
    }
}
