//! The image step before a container is created, as the kubelet's image manager does it
//! (<https://kubernetes.io/docs/concepts/containers/images/#image-pull-policy>): decide from
//! `imagePullPolicy` and the store whether to pull, pull with the pod's `imagePullSecrets`, and
//! report `Pulling`/`Pulled` events or the failure (`ErrImagePull`, `ErrImageNeverPull`,
//! `InvalidImageName`) that the worker turns into `ImagePullBackOff`.
//!
//! One deliberate difference: an image put in the store by `peapod image load` is the user's own
//! copy, so `Always` uses it as it is instead of asking a registry (a machine with no registry
//! access, and every pod of `image: busybox` in a loaded-images workflow, would otherwise fail).
//! A pulled image is pulled again under `Always`, which costs one manifest request when it is
//! unchanged.

use std::time::Instant;

use peapod_runtime::image::pull::{self, AuthConfig, RegistryConfig};
use peapod_runtime::image::{Image, ImageError, ImageSource};
use peapod_runtime::monitor::error_chain;

use crate::context::PodContext;
use crate::worker::Node;

/// What to do about a container's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullDecision {
    /// Use the image in the store.
    UsePresent,
    /// Fetch it from its registry first.
    Pull,
    /// `Never`, and the store does not have it.
    NeverPullMissing,
}

/// The decision for `policy` (`Always`, `IfNotPresent`, `Never`; anything else counts as the
/// API server's default for `image`) when the store holds the image from `present`.
pub fn decide(policy: Option<&str>, image: &str, present: Option<ImageSource>) -> PullDecision {
    let policy = match policy {
        Some(p @ ("Always" | "IfNotPresent" | "Never")) => p,
        _ => peapod_api::defaults::default_pull_policy(image),
    };
    match (policy, present) {
        ("Never", None) => PullDecision::NeverPullMissing,
        ("Always", Some(ImageSource::Pulled)) | (_, None) => PullDecision::Pull,
        (_, Some(_)) => PullDecision::UsePresent,
    }
}

/// Why the image step failed: the waiting reason and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullFailure {
    pub reason: &'static str,
    pub message: String,
}

/// A kubelet event the image step reports.
#[derive(Debug, Clone)]
pub struct PullNote {
    pub reason: &'static str,
    pub message: String,
}

/// Credentials from the pod's `imagePullSecrets`, in order: `.dockerconfigjson` of a
/// `kubernetes.io/dockerconfigjson` Secret, or the older `.dockercfg` (the `auths` map alone).
/// A secret that is missing or unreadable is skipped, as the kubelet does, with a note.
pub fn pull_secrets(ctx: &PodContext) -> (AuthConfig, Vec<String>) {
    let mut auth = AuthConfig::default();
    let mut problems = Vec::new();
    let spec = ctx.pod.spec.as_ref();
    for reference in spec
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
    {
        let name = &reference.name;
        let origin = format!("secret {}/{name}", ctx.namespace());
        let Some(data) = ctx.secret_bytes(name) else {
            problems.push(format!("{origin} not found"));
            continue;
        };
        let added = if let Some(json) = data.get(".dockerconfigjson") {
            auth.add_json(&origin, json)
        } else if let Some(legacy) = data.get(".dockercfg") {
            let wrapped = format!(r#"{{"auths": {}}}"#, String::from_utf8_lossy(legacy));
            auth.add_json(&origin, wrapped.as_bytes())
        } else {
            problems.push(format!("{origin} has no .dockerconfigjson"));
            continue;
        };
        if let Err(e) = added {
            problems.push(error_chain(&e));
        }
    }
    (auth, problems)
}

/// Makes sure the container's image is in the store as its pull policy wants; `note` gets the
/// kubelet's events on the way. The image as found when the one present is used (`None` after
/// a pull).
pub async fn ensure_image(
    node: &Node,
    ctx: &PodContext,
    image: &str,
    policy: Option<&str>,
    note: &(dyn Fn(PullNote) + Send + Sync),
) -> Result<Option<Image>, PullFailure> {
    let store = node.images.clone();
    let name = image.to_owned();
    let present = tokio::task::spawn_blocking(move || store.resolve(&name))
        .await
        .map_err(|e| PullFailure {
            reason: "ErrImagePull",
            message: e.to_string(),
        })?;
    let present = match present {
        Ok(found) => Some(found),
        Err(ImageError::NotFound { .. }) => None,
        Err(e @ ImageError::InvalidReference { .. }) => {
            return Err(PullFailure {
                reason: "InvalidImageName",
                message: format!("Failed to apply default image tag {image:?}: {e}"),
            })
        }
        Err(e) => {
            return Err(PullFailure {
                reason: "ErrImagePull",
                message: error_chain(&e),
            })
        }
    };
    match decide(policy, image, present.as_ref().map(|found| found.source)) {
        PullDecision::UsePresent => {
            note(PullNote {
                reason: "Pulled",
                message: format!("Container image {image:?} already present on machine"),
            });
            Ok(present)
        }
        PullDecision::NeverPullMissing => Err(PullFailure {
            reason: "ErrImageNeverPull",
            message: format!("Container image {image:?} is not present with pull policy of Never"),
        }),
        PullDecision::Pull => {
            let (auth, problems) = pull_secrets(ctx);
            for problem in problems {
                note(PullNote {
                    reason: "FailedToRetrieveImagePullSecret",
                    message: format!("Unable to retrieve some image pull secrets: {problem}"),
                });
            }
            note(PullNote {
                reason: "Pulling",
                message: format!("Pulling image {image:?}"),
            });
            let started = Instant::now();
            let config = node.registries.clone();
            match pull::pull(&node.images, &config, &auth, image, &|_| {}).await {
                Ok(report) => {
                    note(PullNote {
                        reason: "Pulled",
                        message: format!(
                            "Successfully pulled image {image:?} in {:.3}s. Image size: {} bytes.",
                            started.elapsed().as_secs_f64(),
                            report.image.size
                        ),
                    });
                    Ok(None)
                }
                Err(e) => {
                    let message = error_chain(&e);
                    note(PullNote {
                        reason: "Failed",
                        message: format!("Failed to pull image {image:?}: {message}"),
                    });
                    Err(PullFailure {
                        reason: "ErrImagePull",
                        message,
                    })
                }
            }
        }
    }
}

/// The registries every pull of the daemon may reach (from the environment at start).
pub fn registries_from_env() -> RegistryConfig {
    RegistryConfig::from_env()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{LocalObjectReference, Pod, PodSpec, Secret};
    use k8s_openapi::ByteString;

    #[test]
    fn decisions_follow_the_policy() {
        use ImageSource::{Loaded, Pulled};
        use PullDecision::*;
        let cases: &[(Option<&str>, &str, Option<ImageSource>, PullDecision)] = &[
            (Some("Never"), "app:1", None, NeverPullMissing),
            (Some("Never"), "app:1", Some(Pulled), UsePresent),
            (Some("IfNotPresent"), "app:1", None, Pull),
            (Some("IfNotPresent"), "app:1", Some(Pulled), UsePresent),
            (Some("Always"), "app:1", Some(Pulled), Pull),
            (Some("Always"), "app:1", None, Pull),
            // A loaded image is the user's copy: not replaced from a registry.
            (Some("Always"), "app:1", Some(Loaded), UsePresent),
            // No policy: the API server's default (`:latest` or no tag means Always).
            (None, "app", Some(Pulled), Pull),
            (None, "app:latest", Some(Pulled), Pull),
            (None, "app:1", Some(Pulled), UsePresent),
            (Some("Sometimes"), "app:1", None, Pull),
        ];
        for (policy, image, present, want) in cases {
            assert_eq!(
                decide(*policy, image, *present),
                *want,
                "{policy:?} {image} {present:?}"
            );
        }
    }

    fn ctx_with(secrets: Vec<Secret>, names: &[&str]) -> PodContext {
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                image_pull_secrets: Some(
                    names
                        .iter()
                        .map(|n| LocalObjectReference {
                            name: n.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        PodContext::new(pod, vec![], secrets)
    }

    fn secret(name: &str, key: &str, value: &str) -> Secret {
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(
                [(key.to_string(), ByteString(value.as_bytes().to_vec()))]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn pull_secrets_in_order_and_problems_named() {
        let json = r#"{"auths":{"r.example:5000":{"username":"u","password":"p"}}}"#;
        let legacy = r#"{"old.example":{"auth":"dTI6cDI="}}"#;
        let ctx = ctx_with(
            vec![
                secret("regcred", ".dockerconfigjson", json),
                secret("old", ".dockercfg", legacy),
                secret("broken", ".dockerconfigjson", "nope"),
            ],
            &["missing", "regcred", "old", "broken"],
        );
        let (auth, problems) = pull_secrets(&ctx);
        let got = auth.get("r.example:5000").map(|c| c.username.as_str());
        assert_eq!(got, Some("u"));
        let got = auth.get("old.example").map(|c| c.password.as_str());
        assert_eq!(got, Some("p2"));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0], "secret default/missing not found");
        assert!(
            problems[1].starts_with("secret default/broken: not a docker config"),
            "{problems:?}"
        );
    }
}
