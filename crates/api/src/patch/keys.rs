//! Which lists a strategic merge patch merges, and by which key: the `patchStrategy` and
//! `patchMergeKey` tags of the Kubernetes API types, written down as data for the kinds peapod
//! serves
//! (<https://github.com/kubernetes/community/blob/master/contributors/devel/sig-api-machinery/strategic-merge-patch.md>).
//!
//! Paths are field names joined by `.`, with `[]` after a list whose items are descended into:
//! `spec.containers`, `spec.containers[].ports`. Three rules apply to every kind, including
//! ones not in the table: ObjectMeta's lists (`metadata.finalizers`, also inside templates),
//! Pod specs (at `spec` of a Pod and under any `template.spec`, which covers Deployments,
//! ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs and PodTemplates), and otherwise
//! "replace the list", which is also the right answer for unknown kinds.

use MergeStrategy::{ByKey, Primitives, Replace};

/// How a list in the original object is combined with the same list in a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeStrategy {
    /// Items are objects: a patch item merges into the original item with the same value of this
    /// field, items with new values are appended.
    ByKey(&'static str),
    /// Items are scalars: the result is the union, original order first.
    Primitives,
    /// The patch's list replaces the original one (`patchStrategy:"replace"`). Lists without an
    /// entry behave the same; this marks where the API types say so explicitly.
    Replace,
}

type Table = &'static [(&'static str, MergeStrategy)];

/// ObjectMeta, relative to `metadata`.
const OBJECT_META: Table = &[
    ("ownerReferences", ByKey("uid")),
    ("finalizers", Primitives),
];

/// PodSpec, relative to the spec.
const POD_SPEC: Table = &[
    ("containers", ByKey("name")),
    ("initContainers", ByKey("name")),
    ("ephemeralContainers", ByKey("name")),
    ("volumes", ByKey("name")),
    ("imagePullSecrets", ByKey("name")),
    ("hostAliases", ByKey("ip")),
    ("topologySpreadConstraints", ByKey("topologyKey")),
    ("resourceClaims", ByKey("name")),
    ("schedulingGates", ByKey("name")),
];

/// The PodSpec lists whose items are containers.
const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Container (and EphemeralContainer), relative to the container.
const CONTAINER: Table = &[
    ("ports", ByKey("containerPort")),
    ("env", ByKey("name")),
    ("volumeMounts", ByKey("mountPath")),
    ("volumeDevices", ByKey("devicePath")),
    ("resizePolicy", ByKey("resourceName")),
];

/// Per kind, paths from the object's root that the shared rules above do not cover.
const KINDS: &[(&str, Table)] = &[
    (
        "Pod",
        &[
            ("status.conditions", ByKey("type")),
            ("status.containerStatuses", ByKey("name")),
            ("status.podIPs", ByKey("ip")),
            ("status.hostIPs", ByKey("ip")),
        ],
    ),
    (
        "Service",
        &[
            ("spec.ports", ByKey("port")),
            ("status.conditions", ByKey("type")),
        ],
    ),
    ("Endpoints", &[("subsets", Replace)]),
    (
        "Node",
        &[
            ("spec.podCIDRs", Primitives),
            ("status.conditions", ByKey("type")),
            ("status.addresses", ByKey("type")),
        ],
    ),
    ("Namespace", &[("status.conditions", ByKey("type"))]),
    ("ServiceAccount", &[("secrets", ByKey("name"))]),
    (
        "PersistentVolumeClaim",
        &[("status.conditions", ByKey("type"))],
    ),
    ("Deployment", &[("status.conditions", ByKey("type"))]),
    ("ReplicaSet", &[("status.conditions", ByKey("type"))]),
    ("StatefulSet", &[("status.conditions", ByKey("type"))]),
    ("DaemonSet", &[("status.conditions", ByKey("type"))]),
    (
        "ReplicationController",
        &[("status.conditions", ByKey("type"))],
    ),
    ("Job", &[("status.conditions", ByKey("type"))]),
];

/// How the list at `path` in an object of kind `kind` is merged; `None` means it is replaced.
pub fn merge_key(kind: &str, path: &str) -> Option<MergeStrategy> {
    if let Some(rest) = under(path, "metadata") {
        if let Some(strategy) = lookup(OBJECT_META, rest) {
            return Some(strategy);
        }
    }
    let pod_spec = if kind == "Pod" {
        path.strip_prefix("spec.")
    } else {
        None
    };
    if let Some(rest) = pod_spec.or_else(|| under(path, "template.spec")) {
        if let Some(strategy) = pod_spec_list(rest) {
            return Some(strategy);
        }
    }
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .and_then(|(_, table)| lookup(table, path))
}

/// The part of `path` after the last occurrence of the whole segments `prefix`, e.g.
/// `under("spec.template.spec.volumes", "template.spec") == Some("volumes")`.
fn under<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    if let Some(rest) = path.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
        // A later occurrence (a template inside a template) wins.
        return Some(under(rest, prefix).unwrap_or(rest));
    }
    let needle = format!(".{prefix}.");
    path.rfind(&needle).map(|at| &path[at + needle.len()..])
}

/// The strategy for a path relative to a PodSpec.
fn pod_spec_list(rest: &str) -> Option<MergeStrategy> {
    if let Some(strategy) = lookup(POD_SPEC, rest) {
        return Some(strategy);
    }
    CONTAINER_LISTS.iter().find_map(|list| {
        let field = rest.strip_prefix(list)?.strip_prefix("[].")?;
        lookup(CONTAINER, field)
    })
}

fn lookup(table: Table, path: &str) -> Option<MergeStrategy> {
    table
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, strategy)| *strategy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("Pod", "spec.containers", Some(ByKey("name"))),
            ("Pod", "spec.initContainers", Some(ByKey("name"))),
            ("Pod", "spec.ephemeralContainers", Some(ByKey("name"))),
            (
                "Pod",
                "spec.containers[].ports",
                Some(ByKey("containerPort")),
            ),
            ("Pod", "spec.initContainers[].env", Some(ByKey("name"))),
            (
                "Pod",
                "spec.containers[].volumeMounts",
                Some(ByKey("mountPath")),
            ),
            (
                "Pod",
                "spec.containers[].volumeDevices",
                Some(ByKey("devicePath")),
            ),
            (
                "Pod",
                "spec.containers[].resizePolicy",
                Some(ByKey("resourceName")),
            ),
            ("Pod", "spec.containers[].args", None),
            ("Pod", "spec.volumes", Some(ByKey("name"))),
            ("Pod", "spec.imagePullSecrets", Some(ByKey("name"))),
            ("Pod", "spec.hostAliases", Some(ByKey("ip"))),
            (
                "Pod",
                "spec.topologySpreadConstraints",
                Some(ByKey("topologyKey")),
            ),
            ("Pod", "spec.resourceClaims", Some(ByKey("name"))),
            ("Pod", "spec.schedulingGates", Some(ByKey("name"))),
            ("Pod", "spec.tolerations", None),
            ("Pod", "status.conditions", Some(ByKey("type"))),
            ("Pod", "status.containerStatuses", Some(ByKey("name"))),
            ("Pod", "metadata.finalizers", Some(Primitives)),
            ("Pod", "metadata.ownerReferences", Some(ByKey("uid"))),
            ("Pod", "containers", None),
            ("ConfigMap", "metadata.finalizers", Some(Primitives)),
            ("Widget", "metadata.ownerReferences", Some(ByKey("uid"))),
            ("Widget", "spec.items", None),
            ("Widget", "status.conditions", None),
            ("Service", "spec.ports", Some(ByKey("port"))),
            ("Service", "spec.containers", None),
            ("Endpoints", "subsets", Some(Replace)),
            ("Node", "status.conditions", Some(ByKey("type"))),
            ("Node", "status.addresses", Some(ByKey("type"))),
            (
                "Deployment",
                "spec.template.spec.containers",
                Some(ByKey("name")),
            ),
            (
                "Deployment",
                "spec.template.spec.containers[].env",
                Some(ByKey("name")),
            ),
            (
                "Deployment",
                "spec.template.metadata.finalizers",
                Some(Primitives),
            ),
            ("Deployment", "spec.containers", None),
            ("Deployment", "status.conditions", Some(ByKey("type"))),
            ("PodTemplate", "template.spec.volumes", Some(ByKey("name"))),
            (
                "CronJob",
                "spec.jobTemplate.spec.template.spec.initContainers[].ports",
                Some(ByKey("containerPort")),
            ),
            (
                "StatefulSet",
                "spec.volumeClaimTemplates[].metadata.finalizers",
                Some(Primitives),
            ),
        ];
        for (kind, path, want) in cases {
            assert_eq!(merge_key(kind, path), want, "{kind} {path}");
        }
    }

    #[test]
    fn under_finds_the_innermost_segment() {
        let cases = [
            ("metadata.finalizers", "metadata", Some("finalizers")),
            (
                "spec.template.metadata.finalizers",
                "metadata",
                Some("finalizers"),
            ),
            ("xmetadata.finalizers", "metadata", None),
            ("spec.mytemplate.spec.containers", "template.spec", None),
            (
                "template.spec.containers",
                "template.spec",
                Some("containers"),
            ),
            (
                "template.spec.x.template.spec.volumes",
                "template.spec",
                Some("volumes"),
            ),
            ("metadata", "metadata", None),
        ];
        for (path, prefix, want) in cases {
            assert_eq!(under(path, prefix), want, "{path} under {prefix}");
        }
    }
}
