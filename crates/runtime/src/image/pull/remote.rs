//! One registry repository as the pull sees it: the `oci-client` client (plain HTTP only to
//! insecure registries, extra CAs, our own platform choice), the manifest requests with their
//! digest checks, and the client's errors turned into the registry's own words.

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};

use super::super::oci::{host_platform, select_platform, Descriptor, IndexOrManifest};
use super::super::reference::Reference;
use super::{AuthConfig, PullError, RegistryConfig, ACCEPTED, MAX_MANIFEST};

/// The image manifest for this platform, as fetched and parsed.
pub(super) struct Resolved {
    pub bytes: bytes::Bytes,
    pub digest: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// One registry repository, with its client and credentials.
pub(super) struct Remote {
    pub client: oci_client::Client,
    pub target: oci_client::Reference,
    auth: RegistryAuth,
    /// The normalised reference, for errors.
    pub name: String,
    pub registry: String,
}

impl Remote {
    pub fn new(
        parsed: &Reference,
        config: &RegistryConfig,
        auth: &AuthConfig,
    ) -> Result<Remote, PullError> {
        let (registry, target) = target(parsed);
        Ok(Remote {
            client: client(config)?,
            target,
            auth: match auth.get(&registry) {
                Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
                None => RegistryAuth::Anonymous,
            },
            name: parsed.to_string(),
            registry,
        })
    }

    /// The target's image manifest: through an index to this platform's entry.
    pub async fn resolve(&self) -> Result<Resolved, PullError> {
        let (mut bytes, mut digest) = self.manifest(self.target.digest()).await?;
        let mut doc = self.parse_manifest(&bytes, &digest)?;
        if let Some(manifests) = doc.manifests.take() {
            let platform = host_platform();
            let chosen =
                select_platform(&manifests, platform).ok_or_else(|| PullError::NoPlatform {
                    reference: self.name.clone(),
                    digest: digest.clone(),
                    platform: format!("{}/{}", platform.0, platform.1),
                })?;
            let chosen = chosen.digest.clone();
            (bytes, digest) = self.manifest(Some(&chosen)).await?;
            doc = self.parse_manifest(&bytes, &digest)?;
        }
        match (doc.config, doc.layers, doc.manifests) {
            (Some(config), Some(layers), None) => Ok(Resolved {
                bytes,
                digest,
                config,
                layers,
            }),
            _ => Err(PullError::Unsupported {
                reference: self.name.clone(),
                what: format!("{digest}: neither an image manifest nor an index"),
            }),
        }
    }

    /// The manifest for the target's tag, or for `digest` (then checked against it).
    async fn manifest(&self, digest: Option<&str>) -> Result<(bytes::Bytes, String), PullError> {
        let target = match digest {
            Some(d) => self.target.clone_with_digest(d.to_owned()),
            None => self.target.clone(),
        };
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&target, &self.auth, &ACCEPTED)
            .await
            .map_err(|e| self.error(e))?;
        if bytes.len() > MAX_MANIFEST {
            return Err(PullError::Unsupported {
                reference: self.name.clone(),
                what: format!("of {} bytes", bytes.len()),
            });
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        match digest {
            Some(expected) if expected != actual => Err(PullError::DigestMismatch {
                reference: self.name.clone(),
                what: "manifest",
                digest: expected.to_owned(),
                actual,
            }),
            _ => Ok((bytes, actual)),
        }
    }

    /// Parses an index or image manifest, refusing schema 1 and foreign media types.
    fn parse_manifest(&self, bytes: &[u8], digest: &str) -> Result<IndexOrManifest, PullError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head {
            #[serde(default)]
            schema_version: u32,
            #[serde(default)]
            media_type: Option<String>,
        }
        let bad = |source| PullError::BadManifest {
            reference: self.name.clone(),
            digest: digest.to_owned(),
            source,
        };
        let head: Head = serde_json::from_slice(bytes).map_err(bad)?;
        if head.schema_version != 2 {
            return Err(PullError::Unsupported {
                reference: self.name.clone(),
                what: format!("{digest}: schema version {}", head.schema_version),
            });
        }
        if let Some(media_type) = head.media_type.filter(|m| !ACCEPTED.contains(&m.as_str())) {
            return Err(PullError::Unsupported {
                reference: self.name.clone(),
                what: format!("{digest}: media type {media_type}"),
            });
        }
        serde_json::from_slice(bytes).map_err(bad)
    }

    /// Turns a client error into the registry's own words where it answered, or "cannot
    /// reach" with the transport's cause where it did not.
    pub fn error(&self, error: OciDistributionError) -> PullError {
        let message = match &error {
            OciDistributionError::RegistryError { envelope, .. } => envelope
                .errors
                .iter()
                .map(|e| {
                    let detail = match &e.detail {
                        serde_json::Value::Null => String::new(),
                        serde_json::Value::Object(m) if m.is_empty() => String::new(),
                        d => format!(" ({d})"),
                    };
                    format!("{}{detail}", e.message)
                })
                .collect::<Vec<_>>()
                .join("; "),
            OciDistributionError::UnauthorizedError { .. } => {
                "401 Unauthorized: the registry wants credentials, or refused the ones given"
                    .to_owned()
            }
            OciDistributionError::AuthenticationFailure(reason) => {
                format!("authentication failed: {}", reason.trim())
            }
            OciDistributionError::ServerError { code, message, .. } => {
                let message = message.trim();
                let message: String = message.chars().take(200).collect();
                format!("registry answered HTTP {code}: {message}")
            }
            OciDistributionError::DigestError(e) => format!("digest: {e}"),
            OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
                return PullError::Unreachable {
                    reference: self.name.clone(),
                    registry: self.registry.clone(),
                    source: error,
                }
            }
            other => other.to_string(),
        };
        PullError::Registry {
            reference: self.name.clone(),
            message,
        }
    }
}

/// The registry host and the client's reference for a normalised reference: a digest wins
/// over a tag, as a pull by `repo:tag@digest` fetches the digest.
pub(super) fn target(parsed: &Reference) -> (String, oci_client::Reference) {
    let (registry, repository) = parsed
        .repository
        .split_once('/')
        .unwrap_or((parsed.repository.as_str(), ""));
    let (registry, repository) = (registry.to_owned(), repository.to_owned());
    let reference = match (&parsed.digest, &parsed.tag) {
        (Some(digest), _) => {
            oci_client::Reference::with_digest(registry.clone(), repository, digest.clone())
        }
        (None, tag) => oci_client::Reference::with_tag(
            registry.clone(),
            repository,
            tag.clone().unwrap_or_else(|| "latest".to_owned()),
        ),
    };
    (registry, reference)
}

/// A client for `config`: plain HTTP only to the insecure registries, extra CAs trusted,
/// index platforms chosen by us (so the choice is the same as for archives).
pub(super) fn client(config: &RegistryConfig) -> Result<oci_client::Client, PullError> {
    // reqwest is built without a default provider: ring it is, as everywhere in peapod. Fails
    // harmlessly when a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut certs = Vec::new();
    for path in &config.ca_files {
        let data = std::fs::read(path).map_err(|source| PullError::Ca {
            path: path.clone(),
            source,
        })?;
        certs.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    let protocol = if config.insecure.is_empty() {
        ClientProtocol::Https
    } else {
        ClientProtocol::HttpsExcept(config.insecure.clone())
    };
    Ok(oci_client::Client::new(ClientConfig {
        protocol,
        extra_root_certificates: certs,
        platform_resolver: None,
        connect_timeout: Some(config.timeout),
        read_timeout: Some(config.timeout),
        user_agent: concat!("peapod/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn targets_split_registry_repository_and_tag_or_digest() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let cases = [
            (
                "busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
            ),
            (
                "127.0.0.1:5000/a/b:1",
                "127.0.0.1:5000",
                "a/b",
                Some("1"),
                None,
            ),
            (
                &*format!("localhost:5000/app:v1@{digest}"),
                "localhost:5000",
                "app",
                None,
                Some(digest.as_str()),
            ),
        ];
        for (input, registry, repository, tag, want_digest) in cases {
            let parsed = Reference::parse(input).expect("valid");
            let (host, reference) = target(&parsed);
            assert_eq!(host, registry, "{input}");
            assert_eq!(reference.registry(), registry, "{input}");
            assert_eq!(reference.repository(), repository, "{input}");
            assert_eq!(reference.tag(), tag, "{input}");
            assert_eq!(reference.digest(), want_digest, "{input}");
        }
    }

    #[test]
    fn a_client_needs_a_readable_ca() {
        let config = RegistryConfig {
            insecure: vec!["127.0.0.1:5000".into()],
            ..RegistryConfig::default()
        };
        assert!(client(&config).is_ok());
        let missing_ca = RegistryConfig {
            ca_files: vec![PathBuf::from("/nonexistent/ca.pem")],
            ..RegistryConfig::default()
        };
        let err = client(&missing_ca).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("read registry CA /nonexistent/ca.pem"));
    }
}
