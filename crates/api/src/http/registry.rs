//! The resources peapod serves, as data: what discovery advertises and what the generic
//! handlers accept.

/// One served resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// API group; "" for core.
    pub group: &'static str,
    pub version: &'static str,
    /// Plural, lower case: `pods`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
}

impl Resource {
    /// The store's name for the resource: the plural, with `.group` for named groups.
    pub fn store_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const POD_SUBRESOURCES: &[(&str, &str, &[&str])] = &[
    ("status", "Pod", &["get", "patch", "update"]),
    ("log", "Pod", &["get"]),
    ("exec", "PodExecOptions", &["create", "get"]),
    ("attach", "PodAttachOptions", &["create", "get"]),
    ("portforward", "PodPortForwardOptions", &["create", "get"]),
];

const fn core(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
) -> Resource {
    Resource {
        group: "",
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        categories,
        subresources: &[],
    }
}

/// Every resource peapod serves.
pub const RESOURCES: &[Resource] = &[
    Resource {
        subresources: POD_SUBRESOURCES,
        ..core("pods", "pod", "Pod", true, &["po"], &["all"])
    },
    core("configmaps", "configmap", "ConfigMap", true, &["cm"], &[]),
    core("secrets", "secret", "Secret", true, &[], &[]),
    core("services", "service", "Service", true, &["svc"], &["all"]),
    core("endpoints", "endpoints", "Endpoints", true, &["ep"], &[]),
    core("events", "event", "Event", true, &["ev"], &[]),
    core(
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        &[],
    ),
    core(
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        &[],
    ),
    Resource {
        subresources: &[("status", "Namespace", &["get", "patch", "update"])],
        ..core("namespaces", "namespace", "Namespace", false, &["ns"], &[])
    },
    Resource {
        subresources: &[("status", "Node", &["get", "patch", "update"])],
        ..core("nodes", "node", "Node", false, &["no"], &[])
    },
    core(
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        false,
        &["pv"],
        &[],
    ),
    Resource {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "storage.k8s.io",
        version: "v1",
        plural: "storageclasses",
        singular: "storageclass",
        kind: "StorageClass",
        namespaced: false,
        short_names: &["sc"],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
];

/// The resource served at `group`/`version` under `plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The named API groups, each with its one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(lookup("", "v1", "pods").map(|r| r.kind), Some("Pod"));
        assert_eq!(
            lookup("events.k8s.io", "v1", "events").map(|r| r.store_name()),
            Some("events.events.k8s.io".into())
        );
        assert!(lookup("", "v1", "deployments").is_none());
        assert_eq!(
            groups(),
            vec![
                ("events.k8s.io", "v1"),
                ("discovery.k8s.io", "v1"),
                ("storage.k8s.io", "v1"),
                ("coordination.k8s.io", "v1")
            ]
        );
    }
}
