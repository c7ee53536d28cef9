//! PersistentVolumeClaims on one node: the default StorageClass `local-path` (as k3s ships)
//! and its provisioner, and the binding of claims to volumes — what the PV controller and a
//! local-path provisioner do on a cluster, in one level-triggered loop.
//!
//! - A claim with no volume whose class is `local-path` (or unset: the default class) gets a
//!   PersistentVolume `pvc-<claim uid>` backed by the directory `<root>/volumes/pvc-<uid>`,
//!   with the claim's requested size and access modes, and both are Bound at once
//!   (`volumeBindingMode: Immediate`: there is only one node to choose).
//! - A claim naming a volume (`spec.volumeName`) is bound to that volume if it is Available.
//! - When a claim goes, its volume is Released; with `persistentVolumeReclaimPolicy: Delete`
//!   (the provisioned ones) the directory and the volume are deleted.
//! - Claims and volumes carry the in-use protection finalizers (`protection.rs`): a deleted
//!   claim stays Terminating while a pod uses it.
//!
//! The kubelet mounts a claim's volume (`claim_paths`) like a hostPath: the pod waits in
//! Pending until every claim it names is Bound.
//! <https://kubernetes.io/docs/concepts/storage/persistent-volumes/#lifecycle-of-a-volume-and-claim>

use crate::protection::{self, Step};
use peapod_api::store::{Filter, ListOptions, ObjectKey, Store, Watch};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tracing::{debug, info, warn};

/// The default StorageClass's name and its provisioner.
pub const DEFAULT_CLASS: &str = "local-path";
pub const PROVISIONER: &str = "peapod.dev/local-path";

const CLAIMS: &str = "persistentvolumeclaims";
const VOLUMES: &str = "persistentvolumes";
const CLASSES: &str = "storageclasses.storage.k8s.io";

/// The default StorageClass object (created at start if missing).
pub fn default_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": DEFAULT_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    })
}

/// The default StorageClass's key and object (the daemon creates it unless it exists).
pub fn default_class_object() -> (ObjectKey, Value) {
    (ObjectKey::cluster(CLASSES, DEFAULT_CLASS), default_class())
}

/// Runs until the store goes away: provisions, binds and reclaims on every claim or volume
/// change. `dir` holds the provisioned directories.
pub async fn run(store: Store, dir: PathBuf) {
    loop {
        let since = store.revision();
        let (Ok(claims), Ok(volumes), Ok(pods)) = (
            store.watch(CLAIMS, None, since, Filter::default()),
            store.watch(VOLUMES, None, since, Filter::default()),
            store.watch("pods", None, since, Filter::default()),
        ) else {
            warn!("cannot watch persistent volume claims");
            return;
        };
        let mut watches = [claims, volumes, pods];
        reconcile(&store, &dir);
        loop {
            if next(&mut watches).await.is_none() {
                break;
            }
            // A burst of changes (our own binding writes among them) is one pass.
            while let Ok(Some(_)) = tokio::time::timeout(SETTLE, next(&mut watches)).await {}
            reconcile(&store, &dir);
        }
    }
}

/// Events closer together than this are handled as one change.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// The next event of any watch (claims, volumes, pods); `None` when one ended.
async fn next([claims, volumes, pods]: &mut [Watch; 3]) -> Option<()> {
    tokio::select! {
        e = claims.next() => e.map(drop),
        e = volumes.next() => e.map(drop),
        e = pods.next() => e.map(drop),
    }
}

fn list(store: &Store, resource: &str) -> Vec<Value> {
    store
        .list(resource, None, &ListOptions::default())
        .map(|r| r.items)
        .unwrap_or_default()
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn claim_key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::namespaced(CLAIMS, ns, name)
}

/// One pass: bind or provision pending claims, release or delete volumes whose claim is gone.
fn reconcile(store: &Store, dir: &Path) {
    let claims = list(store, CLAIMS);
    let mut volumes = list(store, VOLUMES);
    for claim in &claims {
        if s(claim, "/status/phase") == "Bound"
            || claim["metadata"]
                .get("deletionTimestamp")
                .is_some_and(|d| !d.is_null())
        {
            continue;
        }
        let (ns, name) = (s(claim, "/metadata/namespace"), s(claim, "/metadata/name"));
        let wanted = s(claim, "/spec/volumeName");
        let volume = if wanted.is_empty() {
            match claim_class(claim) {
                DEFAULT_CLASS => provision(store, dir, claim),
                other => {
                    debug!(claim = %name, class = %other, "no provisioner for this class");
                    continue;
                }
            }
        } else {
            volumes
                .iter()
                .find(|v| s(v, "/metadata/name") == wanted && available_for(v, claim))
                .cloned()
        };
        let Some(volume) = volume else { continue };
        if let Err(error) = bind(store, claim, &volume) {
            warn!(claim = %name, namespace = %ns, %error, "bind claim");
            continue;
        }
        info!(claim = %name, namespace = %ns, volume = %s(&volume, "/metadata/name"), "claim bound");
        volumes = list(store, VOLUMES);
    }
    for volume in &volumes {
        let uid = s(volume, "/spec/claimRef/uid");
        if uid.is_empty() || claims.iter().any(|c| s(c, "/metadata/uid") == uid) {
            continue;
        }
        let name = s(volume, "/metadata/name");
        let key = ObjectKey::cluster(VOLUMES, name);
        if s(volume, "/spec/persistentVolumeReclaimPolicy") == "Delete" {
            if let Some(path) = provisioned_path(volume, dir) {
                if let Err(error) = std::fs::remove_dir_all(&path) {
                    if error.kind() != std::io::ErrorKind::NotFound {
                        warn!(volume = %name, %error, "delete the volume's directory");
                        continue;
                    }
                }
            }
            let _ = store.delete(&key, None);
            info!(volume = %name, "volume deleted with its claim");
        } else if s(volume, "/status/phase") != "Released" {
            let _ = store.update_with(&key, |v| {
                v["status"] = json!({"phase": "Released"});
                Ok(())
            });
        }
    }
    protect(store);
}

/// Adds the in-use protection finalizers, and removes them from deleted claims no pod uses
/// and deleted volumes no claim is bound to (deleting those that have no finalizer left).
fn protect(store: &Store) {
    let (claims, volumes) = (list(store, CLAIMS), list(store, VOLUMES));
    let pods = list(store, "pods");
    for (resource, ns, name, step) in protection::plan(&claims, &volumes, &pods) {
        let key = if ns.is_empty() {
            ObjectKey::cluster(resource, &name)
        } else {
            ObjectKey::namespaced(resource, &ns, &name)
        };
        let finalizer = protection::finalizer(resource);
        let updated = store.update_with(&key, |o| {
            let list = o["metadata"]["finalizers"].as_array().cloned();
            let mut list: Vec<Value> = list.unwrap_or_default();
            match step {
                Step::Protect => list.push(json!(finalizer)),
                Step::Release => list.retain(|f| f != finalizer),
            }
            o["metadata"]["finalizers"] = json!(list);
            Ok(())
        });
        match updated {
            Ok(o) if step == Step::Release => {
                info!(resource, namespace = %ns, name = %name, "no longer in use");
                if o["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
                {
                    let _ = store.delete(&key, None);
                }
            }
            Ok(_) => {}
            Err(error) => debug!(resource, name = %name, %error, "protection finalizer"),
        }
    }
}

/// The class a claim asks for: `spec.storageClassName`, the default class when unset.
fn claim_class(claim: &Value) -> &str {
    match claim.pointer("/spec/storageClassName") {
        Some(Value::String(c)) => c,
        _ => DEFAULT_CLASS,
    }
}

/// Whether `volume` can take `claim`: unclaimed (or claimed by it) and of the same class.
fn available_for(volume: &Value, claim: &Value) -> bool {
    let claimed_by = s(volume, "/spec/claimRef/uid");
    let class = s(volume, "/spec/storageClassName");
    (claimed_by.is_empty() || claimed_by == s(claim, "/metadata/uid"))
        && (claim.pointer("/spec/storageClassName").is_none() || class == claim_class(claim))
}

/// The directory of a volume this provisioner made (and only such: a user's hostPath volume
/// is never deleted).
fn provisioned_path(volume: &Value, dir: &Path) -> Option<PathBuf> {
    if s(
        volume,
        "/metadata/annotations/pv.kubernetes.io~1provisioned-by",
    ) != PROVISIONER
    {
        return None;
    }
    let path = PathBuf::from(s(volume, "/spec/hostPath/path"));
    (path.parent() == Some(dir)).then_some(path)
}

/// Makes the directory and the PersistentVolume for `claim`.
fn provision(store: &Store, dir: &Path, claim: &Value) -> Option<Value> {
    let uid = s(claim, "/metadata/uid");
    let name = format!("pvc-{uid}");
    let path = dir.join(&name);
    if let Err(error) = std::fs::create_dir_all(&path) {
        warn!(claim = %s(claim, "/metadata/name"), %error, "provision a directory");
        return None;
    }
    let volume = provisioned_volume(claim, &name, &path);
    let key = ObjectKey::cluster(VOLUMES, &name);
    match store.create(&key, volume) {
        Ok(v) => Some(v),
        Err(_) => store.get(&key).ok().flatten(),
    }
}

/// The PersistentVolume the provisioner makes for `claim` (pure).
pub fn provisioned_volume(claim: &Value, name: &str, path: &Path) -> Value {
    let storage = claim
        .pointer("/spec/resources/requests/storage")
        .cloned()
        .unwrap_or_else(|| json!("1Gi"));
    let modes = claim
        .pointer("/spec/accessModes")
        .cloned()
        .unwrap_or_else(|| json!(["ReadWriteOnce"]));
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": claim_class(claim),
            "volumeMode": "Filesystem",
            "hostPath": {"path": path.to_string_lossy(), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": s(claim, "/metadata/namespace"),
                "name": s(claim, "/metadata/name"),
                "uid": s(claim, "/metadata/uid"),
            },
        },
        "status": {"phase": "Available"},
    })
}

/// Binds `claim` and `volume` to each other: volume first (claimRef, Bound), then the claim
/// (volumeName, capacity, Bound), as the PV controller orders it.
fn bind(store: &Store, claim: &Value, volume: &Value) -> Result<(), peapod_api::store::StoreError> {
    let volume_name = s(volume, "/metadata/name").to_string();
    let claim_ref = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": s(claim, "/metadata/namespace"),
        "name": s(claim, "/metadata/name"),
        "uid": s(claim, "/metadata/uid"),
    });
    store.update_with(&ObjectKey::cluster(VOLUMES, &volume_name), |v| {
        v["spec"]["claimRef"] = claim_ref.clone();
        v["status"] = json!({"phase": "Bound"});
        Ok(())
    })?;
    let capacity = volume["spec"]["capacity"].clone();
    let modes = volume["spec"]["accessModes"].clone();
    let key = claim_key(s(claim, "/metadata/namespace"), s(claim, "/metadata/name"));
    store.update_with(&key, |c| {
        c["spec"]["volumeName"] = json!(volume_name);
        if c.pointer("/spec/storageClassName").is_none() {
            c["spec"]["storageClassName"] = volume["spec"]["storageClassName"].clone();
        }
        c["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = json!("yes");
        c["status"] = json!({"phase": "Bound", "capacity": capacity, "accessModes": modes});
        Ok(())
    })?;
    Ok(())
}

/// Where each `persistentVolumeClaim` volume of a pod lives on the host; `Err` names the first
/// claim that is missing or not yet Bound (the pod waits).
pub fn claim_paths(
    store: &Store,
    namespace: &str,
    volumes: &[k8s_openapi::api::core::v1::Volume],
) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    for v in volumes {
        let Some(source) = &v.persistent_volume_claim else {
            continue;
        };
        let claim = store
            .get(&claim_key(namespace, &source.claim_name))
            .ok()
            .flatten()
            .ok_or_else(|| format!("persistentvolumeclaim \"{}\" not found", source.claim_name))?;
        let unbound = || {
            format!(
                "pod has unbound immediate PersistentVolumeClaims (claim \"{}\")",
                source.claim_name
            )
        };
        if s(&claim, "/status/phase") != "Bound" {
            return Err(unbound());
        }
        let volume = store
            .get(&ObjectKey::cluster(VOLUMES, s(&claim, "/spec/volumeName")))
            .ok()
            .flatten()
            .ok_or_else(unbound)?;
        let path = match (
            s(&volume, "/spec/hostPath/path"),
            s(&volume, "/spec/local/path"),
        ) {
            ("", "") => {
                return Err(format!(
                    "persistentvolume \"{}\" has neither hostPath nor local path",
                    s(&volume, "/metadata/name")
                ))
            }
            ("", local) => local,
            (host, _) => host,
        };
        out.insert(v.name.clone(), PathBuf::from(path));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioned_volumes_carry_the_claim() {
        let claim = json!({
            "metadata": {"name": "data", "namespace": "default", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
        });
        let pv = provisioned_volume(&claim, "pvc-u1", Path::new("/r/volumes/pvc-u1"));
        assert_eq!(pv["spec"]["capacity"]["storage"], "2Gi");
        assert_eq!(pv["spec"]["storageClassName"], DEFAULT_CLASS);
        assert_eq!(pv["spec"]["claimRef"]["uid"], "u1");
        assert_eq!(pv["spec"]["hostPath"]["path"], "/r/volumes/pvc-u1");
        assert_eq!(
            provisioned_path(&pv, Path::new("/r/volumes")),
            Some(PathBuf::from("/r/volumes/pvc-u1"))
        );
        // Someone else's hostPath volume is never ours to delete.
        let mut theirs = pv.clone();
        theirs["metadata"]["annotations"] = json!({});
        assert_eq!(provisioned_path(&theirs, Path::new("/r/volumes")), None);
        let mut elsewhere = pv;
        elsewhere["spec"]["hostPath"]["path"] = json!("/etc");
        assert_eq!(provisioned_path(&elsewhere, Path::new("/r/volumes")), None);
    }

    #[test]
    fn classes_and_availability() {
        let claim = json!({"metadata": {"uid": "u1"}, "spec": {}});
        assert_eq!(claim_class(&claim), DEFAULT_CLASS);
        let manual = json!({"metadata": {"uid": "u2"}, "spec": {"storageClassName": ""}});
        assert_eq!(claim_class(&manual), "");
        let free = json!({"spec": {"storageClassName": ""}});
        assert!(available_for(&free, &manual));
        let taken = json!({"spec": {"storageClassName": "", "claimRef": {"uid": "other"}}});
        assert!(!available_for(&taken, &manual));
    }
}
