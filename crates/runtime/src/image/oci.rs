//! The OCI image-spec documents the store reads and writes — descriptors, image indexes,
//! manifests and configs (<https://github.com/opencontainers/image-spec>) — and picking the
//! manifest for this machine out of an index.
//!
//! Own serde structs rather than `oci-spec`'s image types: we need a handful of fields and
//! must tolerate Docker's `null`s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ImageConfig;

pub(super) const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(super) const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(super) const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(super) const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The platform of an index entry; os variants and features are not looked at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
}

/// An image index or an image manifest: the two are told apart by which fields are present,
/// since `mediaType` is optional in both.
#[derive(Debug, Deserialize)]
pub(super) struct IndexOrManifest {
    pub manifests: Option<Vec<Descriptor>>,
    pub config: Option<Descriptor>,
    pub layers: Option<Vec<Descriptor>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
pub(super) struct RootFs {
    pub diff_ids: Vec<String>,
}

/// Docker writes `null` for unset lists, hence the `Option`s.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    stop_signal: Option<String>,
}

impl ConfigFile {
    pub fn image_config(&self) -> ImageConfig {
        let c = self.config.as_ref();
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        ImageConfig {
            entrypoint: c.and_then(|c| c.entrypoint.clone()).unwrap_or_default(),
            cmd: c.and_then(|c| c.cmd.clone()).unwrap_or_default(),
            env: c.and_then(|c| c.env.clone()).unwrap_or_default(),
            working_dir: c.and_then(|c| non_empty(&c.working_dir)),
            user: c.and_then(|c| non_empty(&c.user)),
            stop_signal: c.and_then(|c| non_empty(&c.stop_signal)),
        }
    }
}

/// The platform images are picked for: `linux/<this machine's GOARCH name>`.
pub(super) fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    ("linux", arch)
}

/// The manifest of an index for `platform`; an index without platforms and exactly one
/// entry is taken as it is.
pub(super) fn select_platform<'a>(
    manifests: &'a [Descriptor],
    platform: (&str, &str),
) -> Option<&'a Descriptor> {
    let matching = manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| platform_matches(p, platform))
    });
    match (matching, manifests) {
        (Some(d), _) => Some(d),
        (None, [only]) if only.platform.is_none() => Some(only),
        _ => None,
    }
}

pub(super) fn platform_matches(p: &Platform, (os, arch): (&str, &str)) -> bool {
    p.os == os && p.architecture == arch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(digest: &str, platform: Option<(&str, &str)>) -> Descriptor {
        Descriptor {
            media_type: MEDIA_MANIFEST.to_owned(),
            digest: digest.to_owned(),
            size: 0,
            annotations: BTreeMap::new(),
            platform: platform.map(|(os, arch)| Platform {
                os: os.to_owned(),
                architecture: arch.to_owned(),
            }),
        }
    }

    #[test]
    fn selects_platform() {
        let amd = desc("amd", Some(("linux", "amd64")));
        let arm = desc("arm", Some(("linux", "arm64")));
        let att = desc("att", Some(("unknown", "unknown")));
        let bare = desc("bare", None);
        let cases: &[(&[Descriptor], Option<&str>)] = &[
            (&[arm.clone(), amd.clone(), att.clone()], Some("amd")),
            (&[att.clone(), arm.clone()], None),
            (std::slice::from_ref(&bare), Some("bare")),
            (&[bare.clone(), bare.clone()], None),
            (&[], None),
        ];
        for (manifests, want) in cases {
            let got = select_platform(manifests, ("linux", "amd64")).map(|d| d.digest.as_str());
            assert_eq!(got, *want);
        }
    }

    #[test]
    fn docker_nulls_become_empty() {
        let json = r#"{"config":{"Entrypoint":null,"Cmd":["sh"],"Env":null,"WorkingDir":"","User":""},
                       "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config: ConfigFile = serde_json::from_str(json).expect("parse");
        let want = ImageConfig {
            cmd: vec!["sh".to_owned()],
            ..ImageConfig::default()
        };
        assert_eq!(config.image_config(), want);
    }
}
