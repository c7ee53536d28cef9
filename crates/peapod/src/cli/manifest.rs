//! Reading a manifest file for `peapod run`: decode strictly, default, validate, and check
//! what the pods refer to (images in the store, ConfigMaps and Secrets in the file), so that a
//! bad manifest fails before anything is created. Every problem is one line naming the file,
//! the object and the field path.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use peapod_api::validation::{validate_config_map, validate_pod, validate_secret};
use peapod_api::{decode_manifests, FieldError, FieldPath, ManifestError, Object};
use peapod_runtime::image::{ImageError, ImageStore};
use std::collections::HashSet;
use std::path::Path;

/// The objects of a manifest, checked.
#[derive(Debug, Default)]
pub struct Manifest {
    pub pods: Vec<Pod>,
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
}

/// All problems of a manifest, one line each.
#[derive(Debug)]
pub struct ManifestProblems(pub Vec<String>);

impl std::fmt::Display for ManifestProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\nerror: "))
    }
}

impl std::error::Error for ManifestProblems {}

fn line(file: &Path, kind: &str, name: &str, error: &FieldError) -> String {
    let what = if name.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} {name:?}")
    };
    format!("{}: {what}: {error}", file.display())
}

/// Reads, decodes, defaults and validates `file`.
pub fn load(file: &Path, text: &str) -> Result<Manifest, ManifestProblems> {
    let objects = decode_manifests(text).map_err(|e| {
        ManifestProblems(vec![match e {
            ManifestError::Yaml { message } => {
                format!("{}: invalid YAML: {message}", file.display())
            }
            ManifestError::Field {
                document,
                kind,
                name,
                error,
            } => {
                let kind = kind.unwrap_or_else(|| format!("document {document}"));
                line(file, &kind, name.as_deref().unwrap_or(""), &error)
            }
        }])
    })?;
    let mut problems = Vec::new();
    let mut manifest = Manifest::default();
    let mut seen = HashSet::new();
    for object in objects {
        let (kind, name) = (object.kind(), object.name().to_string());
        let errors = match object {
            Object::Pod(mut pod) => {
                peapod_api::defaults::default_pod(&mut pod);
                let errs = validate_pod(&pod);
                manifest.pods.push(*pod);
                errs
            }
            Object::ConfigMap(cm) => {
                let errs = validate_config_map(&cm);
                manifest.config_maps.push(cm);
                errs
            }
            Object::Secret(s) => {
                let errs = validate_secret(&s);
                manifest.secrets.push(s);
                errs
            }
        };
        problems.extend(errors.iter().map(|e| line(file, kind, &name, e)));
        if errors.is_empty() && !seen.insert((kind, name.clone())) {
            let e = FieldError::duplicate(FieldPath::root("metadata").child("name"), &name);
            problems.push(line(file, kind, &name, &e));
        }
    }
    if manifest.pods.is_empty() && problems.is_empty() {
        problems.push(format!("{}: no Pod in the manifest", file.display()));
    }
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(ManifestProblems(problems))
    }
}

/// Checks what the pods refer to: images in the local store, ConfigMaps and Secrets in the
/// manifest (unless marked optional).
pub fn check_references(
    file: &Path,
    manifest: &Manifest,
    images: &ImageStore,
) -> Result<(), ManifestProblems> {
    let mut problems = Vec::new();
    let cm_names: HashSet<&str> = manifest
        .config_maps
        .iter()
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    let secret_names: HashSet<&str> = manifest
        .secrets
        .iter()
        .filter_map(|s| s.metadata.name.as_deref())
        .collect();
    for pod in &manifest.pods {
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let mut push = |e: FieldError| problems.push(line(file, "Pod", name, &e));
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let spec_path = FieldPath::root("spec");
        let groups = [
            (
                "initContainers",
                spec.init_containers.as_deref().unwrap_or(&[]),
            ),
            ("containers", spec.containers.as_slice()),
        ];
        for (field, containers) in groups {
            for (i, c) in containers.iter().enumerate() {
                let path = spec_path.child(field).index(i);
                let image = c.image.as_deref().unwrap_or("");
                let never = c.image_pull_policy.as_deref() == Some("Never");
                match images.resolve(image) {
                    Ok(_) => {}
                    // The kubelet pulls it (a failure is ErrImagePull, retried as on a node).
                    Err(ImageError::NotFound { .. }) if !never => {}
                    Err(ImageError::NotFound { .. }) => push(FieldError::invalid(
                        path.child("image"),
                        image,
                        "image not in the local store and imagePullPolicy is Never \
                         (load it with `peapod image load` or `peapod image pull` it)",
                    )),
                    Err(e) => push(FieldError::invalid(
                        path.child("image"),
                        image,
                        peapod_runtime::monitor::error_chain(&e),
                    )),
                }
                for (j, var) in c.env.iter().flatten().enumerate() {
                    let from = var.value_from.as_ref();
                    let vpath = path.child("env").index(j).child("valueFrom");
                    if let Some(r) = from.and_then(|f| f.config_map_key_ref.as_ref()) {
                        if r.optional != Some(true) && !cm_names.contains(r.name.as_str()) {
                            push(FieldError::not_found(
                                vpath.child("configMapKeyRef").child("name"),
                                &r.name,
                            ));
                        }
                    }
                    if let Some(r) = from.and_then(|f| f.secret_key_ref.as_ref()) {
                        if r.optional != Some(true) && !secret_names.contains(r.name.as_str()) {
                            push(FieldError::not_found(
                                vpath.child("secretKeyRef").child("name"),
                                &r.name,
                            ));
                        }
                    }
                }
            }
        }
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            let vpath = spec_path.child("volumes").index(i);
            if v.persistent_volume_claim.is_some() {
                // A run's objects live as long as the run: a claim would lose its data.
                push(FieldError::forbidden(
                    vpath.child("persistentVolumeClaim"),
                    "peapod run does not provision claims: use `peapod serve` and kubectl, or a hostPath volume",
                ));
            }
            if let Some(cm) = &v.config_map {
                if cm.optional != Some(true) && !cm_names.contains(cm.name.as_str()) {
                    push(FieldError::not_found(
                        vpath.child("configMap").child("name"),
                        &cm.name,
                    ));
                }
            }
            if let Some(s) = &v.secret {
                let n = s.secret_name.as_deref().unwrap_or("");
                if s.optional != Some(true) && !secret_names.contains(n) {
                    push(FieldError::not_found(
                        vpath.child("secret").child("secretName"),
                        n,
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ManifestProblems(problems))
    }
}
