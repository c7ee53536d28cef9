//! Volumes the kubelet writes: configMap, secret, downwardAPI and projected. Each is written
//! atomically the way the kubelet's AtomicWriter does it: the files go into a fresh
//! `..<timestamp>` directory, the `..data` symlink is swapped to it with a rename, and each
//! top-level name is a symlink through `..data` — so a running container that reads a file
//! sees the old content or the new, never a mix, when a ConfigMap or Secret changes
//! (<https://kubernetes.io/docs/concepts/configuration/configmap/#mounted-configmaps-are-updated-automatically>).

use crate::context::PodContext;
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};
use peapod_runtime::sandbox::SandboxDir;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Path inside the volume -> (content, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

const DEFAULT_MODE: u32 = 0o644;

fn safe(path: &str) -> bool {
    !path.is_empty()
        && !Path::new(path).is_absolute()
        && !path.split('/').any(|p| p == ".." || p.starts_with(".."))
}

/// Keys of `data` (or only `items`) as files.
fn key_files(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    out: &mut Files,
) {
    match items {
        None => {
            for (k, v) in data {
                out.insert(k.clone(), (v.clone(), default_mode));
            }
        }
        Some(items) => {
            for i in items.iter().filter(|i| safe(&i.path)) {
                if let Some(v) = data.get(&i.key) {
                    out.insert(
                        i.path.clone(),
                        (v.clone(), i.mode.map_or(default_mode, |m| m as u32)),
                    );
                }
            }
        }
    }
}

/// `metadata.labels` and `metadata.annotations` as the downward API writes them: one
/// `key="value"` per line, sorted.
fn map_lines(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

fn downward_files(
    ctx: &PodContext,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    out: &mut Files,
) {
    for item in items.iter().filter(|i| safe(&i.path)) {
        let value = if let Some(f) = &item.field_ref {
            match f.field_path.as_str() {
                "metadata.labels" => Some(map_lines(ctx.pod.metadata.labels.as_ref())),
                "metadata.annotations" => Some(map_lines(ctx.pod.metadata.annotations.as_ref())),
                path => ctx.field(path),
            }
        } else if let Some(r) = &item.resource_field_ref {
            let spec = ctx.pod.spec.as_ref();
            let container = spec.and_then(|s| {
                s.containers
                    .iter()
                    .find(|c| Some(c.name.as_str()) == r.container_name.as_deref())
            });
            crate::translate::resource_value(
                container,
                &r.resource,
                r.divisor.as_ref().map(|q| q.0.as_str()),
            )
        } else {
            None
        };
        if let Some(v) = value {
            out.insert(
                item.path.clone(),
                (v.into_bytes(), item.mode.map_or(default_mode, |m| m as u32)),
            );
        }
    }
}

/// The files of a kubelet-written volume; `None` for other volume kinds.
pub fn volume_files(ctx: &PodContext, v: &Volume) -> Option<Files> {
    let mut out = Files::new();
    let mode = |m: Option<i32>| m.map_or(DEFAULT_MODE, |m| m as u32);
    if let Some(cm) = &v.config_map {
        key_files(
            &ctx.config_map_bytes(&cm.name).unwrap_or_default(),
            cm.items.as_deref(),
            mode(cm.default_mode),
            &mut out,
        );
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        key_files(
            &ctx.secret_bytes(&name).unwrap_or_default(),
            s.items.as_deref(),
            mode(s.default_mode),
            &mut out,
        );
    } else if let Some(d) = &v.downward_api {
        downward_files(
            ctx,
            d.items.as_deref().unwrap_or(&[]),
            mode(d.default_mode),
            &mut out,
        );
    } else if let Some(p) = &v.projected {
        let default = mode(p.default_mode);
        for source in p.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                key_files(
                    &ctx.config_map_bytes(&cm.name).unwrap_or_default(),
                    cm.items.as_deref(),
                    default,
                    &mut out,
                );
            }
            if let Some(s) = &source.secret {
                key_files(
                    &ctx.secret_bytes(&s.name).unwrap_or_default(),
                    s.items.as_deref(),
                    default,
                    &mut out,
                );
            }
            if let Some(d) = &source.downward_api {
                downward_files(ctx, d.items.as_deref().unwrap_or(&[]), default, &mut out);
            }
        }
    } else {
        return None;
    }
    Some(out)
}

/// Whether the pod reads the ConfigMap (`secret == false`) or Secret named `name`.
pub fn uses(pod: &Pod, secret: bool, name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.volumes.iter().flatten().any(|v| {
        let direct = if secret {
            v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(name)
        } else {
            v.config_map.as_ref().is_some_and(|c| c.name == name)
        };
        let projected = v.projected.as_ref().is_some_and(|p| {
            p.sources.iter().flatten().any(|s| {
                if secret {
                    s.secret.as_ref().is_some_and(|x| x.name == name)
                } else {
                    s.config_map.as_ref().is_some_and(|x| x.name == name)
                }
            })
        });
        direct || projected
    })
}

/// Writes `files` into `dir` atomically (the `..data` swap); unchanged content is left alone.
pub fn write_atomic(dir: &Path, files: &Files) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        if read_tree(&dir.join(&current)).as_ref() == Some(files) {
            return Ok(());
        }
    }
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S%.9f"));
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh)?;
    for (path, (content, mode)) in files {
        let target = fresh.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, content)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link)?;
    std::fs::rename(&tmp_link, &data_link)?;
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if name.starts_with("..") && name != "..data" && name != stamp {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if !name.starts_with("..") && is_link && !tops.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

fn read_tree(dir: &Path) -> Option<Files> {
    fn walk(base: &Path, dir: &Path, out: &mut Files) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(base, &path, out)?;
            } else {
                let rel = path
                    .strip_prefix(base)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mode = entry.metadata()?.permissions().mode() & 0o7777;
                out.insert(rel, (std::fs::read(&path)?, mode));
            }
        }
        Ok(())
    }
    let mut out = Files::new();
    walk(dir, dir, &mut out).ok()?;
    Some(out)
}

/// Writes every kubelet-written volume of the pod.
pub fn write_all(ctx: &PodContext, sandbox: &SandboxDir) -> std::io::Result<()> {
    for v in ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(files) = volume_files(ctx, v) {
            write_atomic(&sandbox.volume(&v.name), &files)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(volumes: serde_json::Value) -> PodContext {
        let pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default", "labels": {"app": "web", "tier": "a"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}], "volumes": volumes}})).expect("pod");
        let cm = serde_json::from_value(
            json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}}),
        )
        .expect("cm");
        PodContext::new(pod, vec![cm], vec![])
    }

    #[test]
    fn files_of_each_volume_kind() {
        let c = ctx(json!([
            {"name": "cm", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "conf/a.txt", "mode": 384}, {"key": "b", "path": "../x"}]}},
            {"name": "dw", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}, {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}, {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}]}},
            {"name": "pj", "projected": {"sources": [{"configMap": {"name": "cfg"}}, {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
            {"name": "ed", "emptyDir": {}}
        ]));
        let vols = c
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .expect("volumes");
        let cm = volume_files(&c, &vols[0]).expect("configMap");
        assert_eq!(cm.len(), 1);
        assert_eq!(cm["conf/a.txt"], (b"1".to_vec(), 0o600));
        let dw = volume_files(&c, &vols[1]).expect("downwardAPI");
        assert_eq!(dw["labels"].0, b"app=\"web\"\ntier=\"a\"\n".to_vec());
        assert_eq!(dw["name"].0, b"p".to_vec());
        assert_eq!(dw["mem"].0, b"64".to_vec());
        let pj = volume_files(&c, &vols[2]).expect("projected");
        assert_eq!(pj.keys().cloned().collect::<Vec<_>>(), vec!["a", "b", "ns"]);
        assert!(volume_files(&c, &vols[3]).is_none());
        assert!(uses(&c.pod, false, "cfg"));
        assert!(!uses(&c.pod, true, "cfg"));
    }

    #[test]
    fn atomic_writes_swap_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = Files::new();
        files.insert("a".into(), (b"one".to_vec(), 0o644));
        files.insert("sub/b".into(), (b"two".to_vec(), 0o644));
        write_atomic(dir.path(), &files).expect("write");
        assert_eq!(std::fs::read(dir.path().join("a")).expect("a"), b"one");
        assert_eq!(std::fs::read(dir.path().join("sub/b")).expect("b"), b"two");
        let first = std::fs::read_link(dir.path().join("..data")).expect("link");
        write_atomic(dir.path(), &files).expect("unchanged");
        assert_eq!(
            std::fs::read_link(dir.path().join("..data")).expect("link"),
            first
        );
        files.insert("a".into(), (b"uno".to_vec(), 0o644));
        files.remove("sub/b");
        write_atomic(dir.path(), &files).expect("update");
        assert_eq!(std::fs::read(dir.path().join("a")).expect("a"), b"uno");
        assert!(std::fs::symlink_metadata(dir.path().join("sub")).is_err());
        let dirs = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("..2"))
            .count();
        assert_eq!(dirs, 1);
    }
}
