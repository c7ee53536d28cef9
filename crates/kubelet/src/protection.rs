//! Storage object in-use protection, as the kube-controller-manager's pvc-protection and
//! pv-protection controllers do it
//! (<https://kubernetes.io/docs/concepts/storage/persistent-volumes/#storage-object-in-use-protection>):
//!
//! - every claim carries the finalizer `kubernetes.io/pvc-protection`; a deleted claim stays
//!   (Terminating) while a pod that is not finished uses it, and goes once none does;
//! - every volume carries `kubernetes.io/pv-protection`; a deleted volume stays while it is
//!   Bound to a claim.
//!
//! `plan` decides (pure); the volume controller (`volumes.rs`) writes what it decided.

use serde_json::Value;

pub const CLAIM_FINALIZER: &str = "kubernetes.io/pvc-protection";
pub const VOLUME_FINALIZER: &str = "kubernetes.io/pv-protection";

/// What to do to one claim or volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Add the finalizer (an object that does not have it yet).
    Protect,
    /// Remove the finalizer from an object being deleted; delete it when no finalizer is left.
    Release,
}

/// One object's step: resource, namespace (empty for volumes), name, step.
pub type Action = (&'static str, String, String, Step);

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn has(object: &Value, finalizer: &str) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

fn deleting(object: &Value) -> bool {
    object["metadata"]
        .get("deletionTimestamp")
        .is_some_and(|d| !d.is_null())
}

/// Whether a pod in namespace `ns` that has not finished names claim `name`.
fn in_use(pods: &[Value], ns: &str, name: &str) -> bool {
    pods.iter().any(|p| {
        s(p, "/metadata/namespace") == ns
            && !matches!(s(p, "/status/phase"), "Succeeded" | "Failed")
            && p["spec"]["volumes"].as_array().is_some_and(|vs| {
                vs.iter()
                    .any(|v| s(v, "/persistentVolumeClaim/claimName") == name)
            })
    })
}

/// The steps for every claim and volume.
pub fn plan(claims: &[Value], volumes: &[Value], pods: &[Value]) -> Vec<Action> {
    let mut out = Vec::new();
    for c in claims {
        let (ns, name) = (s(c, "/metadata/namespace"), s(c, "/metadata/name"));
        let step = match (deleting(c), has(c, CLAIM_FINALIZER)) {
            (false, false) => Step::Protect,
            (true, true) if !in_use(pods, ns, name) => Step::Release,
            _ => continue,
        };
        out.push(("persistentvolumeclaims", ns.into(), name.into(), step));
    }
    for v in volumes {
        let name = s(v, "/metadata/name");
        let step = match (deleting(v), has(v, VOLUME_FINALIZER)) {
            (false, false) => Step::Protect,
            (true, true) if s(v, "/status/phase") != "Bound" => Step::Release,
            _ => continue,
        };
        out.push(("persistentvolumes", String::new(), name.into(), step));
    }
    out
}

/// The finalizer of `resource`.
pub fn finalizer(resource: &str) -> &'static str {
    if resource == "persistentvolumes" {
        VOLUME_FINALIZER
    } else {
        CLAIM_FINALIZER
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_in_use_and_bound_volumes_are_kept() {
        let gone = json!("2026-11-22T00:00:00Z");
        let claims = vec![
            json!({"metadata": {"namespace": "a", "name": "new"}}),
            json!({"metadata": {"namespace": "a", "name": "used", "deletionTimestamp": gone, "finalizers": [CLAIM_FINALIZER]}}),
            json!({"metadata": {"namespace": "a", "name": "free", "deletionTimestamp": gone, "finalizers": [CLAIM_FINALIZER]}}),
            json!({"metadata": {"namespace": "a", "name": "done", "deletionTimestamp": gone, "finalizers": [CLAIM_FINALIZER]}}),
            json!({"metadata": {"namespace": "a", "name": "kept", "finalizers": [CLAIM_FINALIZER]}}),
        ];
        let pod = |name: &str, claim: &str, phase: &str| {
            json!({"metadata": {"namespace": "a", "name": name}, "status": {"phase": phase},
                   "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}})
        };
        let pods = vec![
            pod("p", "used", "Running"),
            pod("q", "done", "Succeeded"),
            json!({"metadata": {"namespace": "b", "name": "r"}, "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "free"}}]}}),
        ];
        let volumes = vec![
            json!({"metadata": {"name": "pv-new"}}),
            json!({"metadata": {"name": "pv-bound", "deletionTimestamp": gone, "finalizers": [VOLUME_FINALIZER]}, "status": {"phase": "Bound"}}),
            json!({"metadata": {"name": "pv-released", "deletionTimestamp": gone, "finalizers": [VOLUME_FINALIZER]}, "status": {"phase": "Released"}}),
        ];
        let steps: Vec<(String, Step)> = plan(&claims, &volumes, &pods)
            .into_iter()
            .map(|(_, _, name, step)| (name, step))
            .collect();
        assert_eq!(
            steps,
            vec![
                ("new".into(), Step::Protect),
                ("free".into(), Step::Release),
                ("done".into(), Step::Release),
                ("pv-new".into(), Step::Protect),
                ("pv-released".into(), Step::Release),
            ]
        );
    }
}
