//! Image references: parsing and normalising `busybox` to `docker.io/library/busybox:latest`.
//!
//! The grammar and the defaulting rules are those of the distribution project's reference
//! package (<https://github.com/distribution/reference/blob/main/reference.go>), which is what
//! Docker and containerd (and so Kubernetes' `image:` field) use.

use std::fmt;

use super::ImageError;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, fully-qualified image reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// `docker.io/library/busybox`
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`
    pub digest: Option<String>,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Normalises an image reference the way Docker does: `busybox` ->
/// `docker.io/library/busybox:latest`, `python:3` -> `docker.io/library/python:3`; references
/// with a registry or a digest keep them.
pub fn normalize_reference(name: &str) -> Result<String, ImageError> {
    Ok(Reference::parse(name)?.to_string())
}

impl Reference {
    /// Parses and normalises `name`; a reference with neither tag nor digest gets `:latest`.
    pub(crate) fn parse(name: &str) -> Result<Reference, ImageError> {
        let invalid = |reason| ImageError::InvalidReference {
            reference: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("empty"));
        }
        let (rest, digest) = match name.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(invalid)?;
                (rest, Some(digest.to_owned()))
            }
            None => (name, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(invalid)?;
        }
        let (domain, remainder) = split_domain(path);
        check_domain(&domain).map_err(invalid)?;
        let remainder = if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
            format!("{OFFICIAL_PREFIX}{remainder}")
        } else {
            remainder.to_owned()
        };
        for component in remainder.split('/') {
            check_path_component(component).map_err(invalid)?;
        }
        let repository = format!("{domain}/{remainder}");
        if repository.len() > MAX_NAME_LEN {
            return Err(invalid("repository name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Reference {
            repository,
            tag,
            digest,
        })
    }
}

/// Splits off the registry: the first component is one if it has a '.' or ':', is
/// `localhost`, or has an uppercase letter (never valid in a repository path).
fn split_domain(path: &str) -> (String, &str) {
    match path.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            let domain = if first == LEGACY_DOMAIN {
                DEFAULT_DOMAIN
            } else {
                first
            };
            (domain.to_owned(), rest)
        }
        _ => (DEFAULT_DOMAIN.to_owned(), path),
    }
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("invalid registry port");
        }
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("invalid registry host")
    }
}

/// `[a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*`
fn check_path_component(component: &str) -> Result<(), &'static str> {
    const BAD: &str = "repository path must be lowercase letters, digits and separators";
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return Err("empty repository path component");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (mut i, mut want_alnum) = (0, true);
    while i < bytes.len() {
        if alnum(bytes[i]) {
            want_alnum = false;
            i += 1;
            continue;
        }
        if want_alnum {
            return Err(BAD);
        }
        let sep_len = match bytes[i] {
            b'.' => 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => bytes[i..].iter().take_while(|&&b| b == b'-').count(),
            _ => return Err(BAD),
        };
        i += sep_len;
        want_alnum = true;
    }
    if want_alnum {
        return Err(BAD);
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn check_tag(tag: &str) -> Result<(), &'static str> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    match bytes.first() {
        Some(&b) if word(b) => {}
        _ => return Err("invalid tag"),
    }
    if bytes.len() > MAX_TAG_LEN || !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') {
        return Err("invalid tag");
    }
    Ok(())
}

/// Only sha256 digests are accepted: it is the only algorithm the store verifies.
fn check_digest(digest: &str) -> Result<(), &'static str> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if is_sha256_hex(hex) => Ok(()),
        _ => Err("digest must be sha256 followed by 64 lowercase hex digits"),
    }
}

pub(crate) fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalizes() {
        let with_digest = format!("busybox@{D}");
        let with_digest_want = format!("docker.io/library/busybox@{D}");
        let tag_and_digest = format!("ghcr.io/a/b:v1@{D}");
        let cases: &[(&str, &str)] = &[
            ("busybox", "docker.io/library/busybox:latest"),
            ("python:3", "docker.io/library/python:3"),
            ("library/python:3", "docker.io/library/python:3"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("someone/app", "docker.io/someone/app:latest"),
            ("localhost:5000/a/b:t", "localhost:5000/a/b:t"),
            ("localhost/a", "localhost/a:latest"),
            ("quay.io/a/b-c__d.e:1.2_3-x", "quay.io/a/b-c__d.e:1.2_3-x"),
            ("Registry/app", "Registry/app:latest"),
            ("a---b", "docker.io/library/a---b:latest"),
            (&with_digest, &with_digest_want),
            (&tag_and_digest, &tag_and_digest),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize_reference(input).ok().as_deref(),
                Some(*want),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects() {
        let long = "a".repeat(256);
        let long_tag = format!("busybox:{}", "t".repeat(129));
        let cases: &[&str] = &[
            "",
            "Busybox",
            "busy box",
            "busybox:",
            "busybox:-x",
            "busybox:a b",
            "a//b",
            "/busybox",
            "busybox/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            "localhost:x/a",
            "bad-.host/a",
            &long,
            &long_tag,
        ];
        for input in cases {
            assert!(normalize_reference(input).is_err(), "{input:?} accepted");
        }
    }

    #[test]
    fn parse_splits_parts() {
        let r = Reference::parse("localhost:5000/a/b").expect("valid");
        assert_eq!(r.repository, "localhost:5000/a/b");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.digest, None);
    }
}
