//! A pod together with the objects its spec refers to (ConfigMaps, Secrets), and the lookups
//! translate needs.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use std::collections::BTreeMap;

/// One pod and what it can see.
#[derive(Debug, Clone)]
pub struct PodContext {
    pub pod: Pod,
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
    /// The pod's IP once it has one (`status.podIP`).
    pub pod_ip: Option<String>,
    /// Each `persistentVolumeClaim` volume's directory on the host (its bound volume's path).
    pub claims: BTreeMap<String, std::path::PathBuf>,
    pub node_name: String,
}

impl PodContext {
    pub fn new(pod: Pod, config_maps: Vec<ConfigMap>, secrets: Vec<Secret>) -> PodContext {
        PodContext {
            pod,
            config_maps,
            secrets,
            pod_ip: None,
            claims: BTreeMap::new(),
            node_name: hostname(),
        }
    }

    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    pub fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or("")
    }

    /// A ConfigMap's `data` and `binaryData` (lossily as text), by name in the pod's namespace.
    pub fn config_map_data(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let cm = self.config_maps.iter().find(|c| {
            c.metadata.name.as_deref() == Some(name)
                && self.same_namespace(c.metadata.namespace.as_deref())
        })?;
        let mut out = cm.data.clone().unwrap_or_default();
        for (k, v) in cm.binary_data.iter().flatten() {
            out.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
        }
        Some(out)
    }

    /// A ConfigMap's entries as bytes.
    pub fn config_map_bytes(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cm = self.config_maps.iter().find(|c| {
            c.metadata.name.as_deref() == Some(name)
                && self.same_namespace(c.metadata.namespace.as_deref())
        })?;
        let mut out: BTreeMap<String, Vec<u8>> = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (k, v) in cm.binary_data.iter().flatten() {
            out.insert(k.clone(), v.0.clone());
        }
        Some(out)
    }

    /// A Secret's `data` and `stringData`, decoded, as bytes.
    pub fn secret_bytes(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self.secrets.iter().find(|s| {
            s.metadata.name.as_deref() == Some(name)
                && self.same_namespace(s.metadata.namespace.as_deref())
        })?;
        let mut out: BTreeMap<String, Vec<u8>> = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in s.string_data.iter().flatten() {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Some(out)
    }

    pub fn secret_data(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.secret_bytes(name).map(|m| {
            m.into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect()
        })
    }

    fn same_namespace(&self, ns: Option<&str>) -> bool {
        ns.unwrap_or("default") == self.namespace()
    }

    /// The downward API's `fieldRef` values
    /// (<https://kubernetes.io/docs/concepts/workloads/pods/downward-api/>).
    pub fn field(&self, path: &str) -> Option<String> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        match path {
            "metadata.name" => meta.name.clone(),
            "metadata.namespace" => Some(self.namespace().to_string()),
            "metadata.uid" => meta.uid.clone(),
            "spec.nodeName" => Some(self.node_name.clone()),
            "spec.serviceAccountName" => Some(
                spec.and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".into()),
            ),
            "status.podIP" => Some(self.pod_ip.clone().unwrap_or_default()),
            "status.podIPs" => Some(self.pod_ip.clone().unwrap_or_default()),
            "status.hostIP" | "status.hostIPs" => Some("127.0.0.1".into()),
            _ => {
                let label = |p: &str, map: &Option<BTreeMap<String, String>>| {
                    let key = p.strip_suffix("']")?;
                    map.as_ref()?.get(key).cloned()
                };
                if let Some(rest) = path.strip_prefix("metadata.labels['") {
                    label(rest, &meta.labels)
                } else if let Some(rest) = path.strip_prefix("metadata.annotations['") {
                    label(rest, &meta.annotations)
                } else {
                    None
                }
            }
        }
    }

    /// Volumes the kubelet writes (configMap, secret, downwardAPI, projected) are always
    /// mounted read-only, as the kubelet does.
    pub fn is_projected_volume(&self, name: &str) -> bool {
        let kubelet_written = |v: &k8s_openapi::api::core::v1::Volume| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
        };
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .any(|v| v.name == name && kubelet_written(v))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
