//! Reading the two archive formats into images: the OCI image layout
//! (<https://github.com/opencontainers/image-spec/blob/main/image-layout.md>) and the
//! `docker save` format (`manifest.json`,
//! <https://github.com/moby/moby/blob/master/image/spec/v1.2.md>). Both become the same
//! [`ArchiveImage`]: an OCI manifest plus the staged config and layer blobs.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::archive::{Staged, StagedArchive};
use super::oci::{
    host_platform, platform_matches, select_platform, ConfigFile, Descriptor, IndexOrManifest,
    Manifest, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_MANIFEST,
};
use super::reference::{is_sha256_hex, Reference};
use super::unpack::Compression;
use super::ImageError;

const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// One layer of an archive image: its staged blob and the diff id the config promises.
#[derive(Debug, Clone)]
pub(super) struct ArchiveLayer {
    pub blob: Staged,
    pub diff_id: String,
}

/// One image found in an archive, with everything needed to store it.
#[derive(Debug)]
pub(super) struct ArchiveImage {
    /// Normalised names; empty when the archive names none.
    pub names: Vec<String>,
    /// The manifest's bytes (kept verbatim for OCI, generated for `docker save`).
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config: Staged,
    pub layers: Vec<ArchiveLayer>,
}

/// Reads the images out of a staged archive: OCI layout when `index.json` is present (newer
/// `docker save` writes both), else `manifest.json`.
pub(super) fn read_images(staged: &StagedArchive) -> Result<Vec<ArchiveImage>, ImageError> {
    let images = if staged.contains("index.json") {
        read_oci(staged)?
    } else if staged.contains("manifest.json") {
        read_docker(staged)?
    } else {
        return Err(ImageError::UnknownFormat {
            archive: staged.archive.clone(),
        });
    };
    if images.is_empty() {
        return Err(ImageError::Empty {
            archive: staged.archive.clone(),
        });
    }
    Ok(images)
}

fn read_oci(staged: &StagedArchive) -> Result<Vec<ArchiveImage>, ImageError> {
    let index: IndexOrManifest = staged.read_json(staged.get("index.json")?, "index.json")?;
    let platform = host_platform();
    let mut images = Vec::new();
    for desc in index.manifests.unwrap_or_default() {
        if desc
            .platform
            .as_ref()
            .is_some_and(|p| !platform_matches(p, platform))
        {
            continue;
        }
        let names = oci_names(&desc.annotations)?;
        let (manifest_blob, manifest) = resolve_manifest(staged, &desc.digest, platform)?;
        let manifest_bytes = std::fs::read(&manifest_blob.path)
            .map_err(super::io_err("read staged file", &manifest_blob.path))?;
        let find = |digest: &str| staged.blob(digest).cloned();
        let digest = manifest_blob.digest.clone();
        images.push(assemble(
            staged,
            names,
            manifest_bytes,
            digest,
            &manifest,
            &find,
        )?);
    }
    Ok(images)
}

/// Follows `digest` through at most one nested index to the manifest for `platform`.
fn resolve_manifest<'a>(
    staged: &'a StagedArchive,
    digest: &str,
    platform: (&str, &str),
) -> Result<(&'a Staged, Manifest), ImageError> {
    let mut digest = digest.to_owned();
    for _ in 0..2 {
        let blob = staged.blob(&digest)?;
        let doc: IndexOrManifest = staged.read_json(blob, &digest)?;
        match doc {
            IndexOrManifest {
                manifests: Some(manifests),
                ..
            } => {
                let chosen = select_platform(&manifests, platform).ok_or_else(|| {
                    ImageError::NoPlatform {
                        archive: staged.archive.clone(),
                        digest: digest.clone(),
                        platform: format!("{}/{}", platform.0, platform.1),
                    }
                })?;
                digest = chosen.digest.clone();
            }
            IndexOrManifest {
                config: Some(config),
                layers: Some(layers),
                ..
            } => {
                let manifest = Manifest {
                    schema_version: 2,
                    media_type: MEDIA_MANIFEST.to_owned(),
                    config,
                    layers,
                };
                return Ok((blob, manifest));
            }
            _ => break,
        }
    }
    Err(ImageError::MissingFile {
        archive: staged.archive.clone(),
        path: format!("image manifest {digest}"),
    })
}

/// Names from OCI annotations: `ref.name` when it is a full reference, else containerd's
/// annotation (what `docker save` 25+ and `ctr export` write next to a bare tag).
pub(super) fn oci_names(annotations: &BTreeMap<String, String>) -> Result<Vec<String>, ImageError> {
    let ref_name = annotations.get(ANNOTATION_REF_NAME).map(String::as_str);
    let full = match ref_name {
        Some(name) if name.contains(['/', ':', '@']) => Some(name),
        _ => annotations
            .get(ANNOTATION_CONTAINERD_NAME)
            .map(String::as_str),
    };
    full.map(|name| Ok(Reference::parse(name)?.to_string()))
        .into_iter()
        .collect()
}

fn read_docker(staged: &StagedArchive) -> Result<Vec<ArchiveImage>, ImageError> {
    let entries: Vec<DockerEntry> =
        staged.read_json(staged.get("manifest.json")?, "manifest.json")?;
    let mut images = Vec::new();
    for entry in entries {
        let config = staged.get(&entry.config)?;
        // `<hex>.json` and `blobs/sha256/<hex>` promise the config's digest in the name.
        let stem = entry.config.rsplit('/').next().unwrap_or_default();
        let stem = stem.strip_suffix(".json").unwrap_or(stem);
        if is_sha256_hex(stem) && config.digest != format!("sha256:{stem}") {
            return Err(ImageError::DigestMismatch {
                archive: staged.archive.clone(),
                digest: format!("sha256:{stem}"),
                actual: config.digest.clone(),
            });
        }
        let mut layers = Vec::new();
        for path in &entry.layers {
            let blob = staged.get(path)?;
            let compression = Compression::sniff(&blob.path)
                .map_err(super::io_err("read staged file", &blob.path))?;
            let media_type = match compression {
                Compression::Gzip => MEDIA_LAYER_GZIP,
                _ => MEDIA_LAYER_TAR,
            };
            layers.push(plain_descriptor(media_type, blob));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_MANIFEST.to_owned(),
            config: plain_descriptor(MEDIA_CONFIG, config),
            layers,
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|source| ImageError::BadJson {
            archive: staged.archive.clone(),
            path: format!("manifest generated for {}", entry.config),
            source,
        })?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let mut names = Vec::new();
        for tag in entry.repo_tags.unwrap_or_default() {
            names.push(Reference::parse(&tag)?.to_string());
        }
        // The generated manifest names files by content digest; map those back to paths.
        let mut by_digest: Vec<&Staged> = vec![config];
        for path in &entry.layers {
            by_digest.push(staged.get(path)?);
        }
        let find = |digest: &str| {
            by_digest
                .iter()
                .find(|s| s.digest == digest)
                .map(|s| (*s).clone())
                .ok_or_else(|| ImageError::MissingFile {
                    archive: staged.archive.clone(),
                    path: digest.to_owned(),
                })
        };
        images.push(assemble(staged, names, bytes, digest, &manifest, &find)?);
    }
    Ok(images)
}

fn plain_descriptor(media_type: &str, blob: &Staged) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: blob.digest.clone(),
        size: blob.size,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// Pairs the manifest's layers with the config's diff ids; `find` maps a digest to its
/// staged file.
fn assemble(
    staged: &StagedArchive,
    names: Vec<String>,
    manifest: Vec<u8>,
    manifest_digest: String,
    parsed: &Manifest,
    find: &dyn Fn(&str) -> Result<Staged, ImageError>,
) -> Result<ArchiveImage, ImageError> {
    let config = find(&parsed.config.digest)?;
    let config_file: ConfigFile = staged.read_json(&config, &parsed.config.digest)?;
    let diff_ids = &config_file.rootfs.diff_ids;
    if diff_ids.len() != parsed.layers.len() {
        return Err(ImageError::LayerCount {
            digest: manifest_digest,
            layers: parsed.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut layers = Vec::new();
    for (desc, diff_id) in parsed.layers.iter().zip(diff_ids) {
        if !diff_id.strip_prefix("sha256:").is_some_and(is_sha256_hex) {
            return Err(ImageError::InvalidDigest {
                digest: diff_id.clone(),
            });
        }
        let blob = find(&desc.digest)?;
        // An uncompressed layer's digest is its diff id: checking it here costs nothing and
        // covers a layer that is not unpacked again because its directory already exists.
        let compression = Compression::sniff(&blob.path)
            .map_err(super::io_err("read staged file", &blob.path))?;
        if compression == Compression::None && &blob.digest != diff_id {
            return Err(ImageError::DiffIdMismatch {
                digest: blob.digest.clone(),
                expected: diff_id.clone(),
                actual: blob.digest,
            });
        }
        layers.push(ArchiveLayer {
            blob,
            diff_id: diff_id.clone(),
        });
    }
    Ok(ArchiveImage {
        names,
        manifest,
        manifest_digest,
        config,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_annotations() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (
                &[(ANNOTATION_REF_NAME, "docker.io/library/busybox:latest")],
                &["docker.io/library/busybox:latest"],
            ),
            (
                &[(ANNOTATION_REF_NAME, "python:3")],
                &["docker.io/library/python:3"],
            ),
            (
                &[
                    (ANNOTATION_REF_NAME, "latest"),
                    (ANNOTATION_CONTAINERD_NAME, "docker.io/x/y:latest"),
                ],
                &["docker.io/x/y:latest"],
            ),
            (&[(ANNOTATION_REF_NAME, "latest")], &[]),
            (&[], &[]),
        ];
        for (annotations, want) in cases {
            let map = annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(oci_names(&map).expect("valid"), *want);
        }
    }
}
