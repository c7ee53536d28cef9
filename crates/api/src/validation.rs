//! Validation of objects, a subset of the API server's `ValidatePod` covering every field peapod
//! acts on, with its messages and field paths
//! (<https://github.com/kubernetes/kubernetes/blob/master/pkg/apis/core/validation/validation.go>).

use crate::field::{FieldError, FieldPath};
use crate::names::{config_map_key, dns1123_label, dns1123_subdomain, iana_svc_name};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::HashSet;

/// Volume sources peapod implements.
pub const SUPPORTED_VOLUMES: [&str; 7] = [
    "emptyDir",
    "hostPath",
    "configMap",
    "secret",
    "downwardAPI",
    "projected",
    "persistentVolumeClaim",
];

/// Every problem of a (defaulted) Pod; empty when valid.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = validate_meta(&pod.metadata, true);
    let spec_path = FieldPath::root("spec");
    let Some(spec) = pod.spec.as_ref() else {
        errs.push(FieldError::required(spec_path));
        return errs;
    };
    let volumes = validate_volumes(
        spec.volumes.as_deref().unwrap_or(&[]),
        &spec_path.child("volumes"),
        &mut errs,
    );
    if spec.containers.is_empty() {
        errs.push(FieldError::required(spec_path.child("containers")));
    }
    let mut names = HashSet::new();
    let mut host_ports = HashSet::new();
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
            validate_container(c, &path, &volumes, &mut errs);
            if !c.name.is_empty() && !names.insert(c.name.clone()) {
                errs.push(FieldError::duplicate(path.child("name"), &c.name));
            }
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let host_port = p.host_port.unwrap_or(0);
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                if host_port != 0 && !host_ports.insert((host_port, protocol)) {
                    let hp = path.child("ports").index(j).child("hostPort");
                    errs.push(FieldError::duplicate(hp, host_port));
                }
            }
        }
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if !["Always", "OnFailure", "Never"].contains(&policy) {
        let path = spec_path.child("restartPolicy");
        errs.push(FieldError::not_supported(
            path,
            policy,
            &["Always", "OnFailure", "Never"],
        ));
    }
    if let Some(grace) = spec.termination_grace_period_seconds {
        if grace < 0 {
            let path = spec_path.child("terminationGracePeriodSeconds");
            errs.push(FieldError::invalid(
                path,
                grace,
                "must be greater than or equal to 0",
            ));
        }
    }
    if spec.host_network == Some(true) {
        errs.push(FieldError::forbidden(
            spec_path.child("hostNetwork"),
            "not supported by peapod",
        ));
    }
    errs
}

fn validate_meta(meta: &ObjectMeta, subdomain: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = FieldPath::root("metadata");
    match meta.name.as_deref() {
        None | Some("") => errs.push(FieldError::required(path.child("name"))),
        Some(name) => {
            let check = if subdomain {
                dns1123_subdomain(name)
            } else {
                dns1123_label(name)
            };
            if let Err(detail) = check {
                errs.push(FieldError::invalid(path.child("name"), name, detail));
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref() {
        if let Err(detail) = dns1123_label(ns) {
            errs.push(FieldError::invalid(path.child("namespace"), ns, detail));
        }
    }
    errs
}

/// Validates the volumes and returns their names.
fn validate_volumes(
    volumes: &[Volume],
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let vpath = path.index(i);
        if let Err(detail) = dns1123_label(&v.name) {
            errs.push(FieldError::invalid(vpath.child("name"), &v.name, detail));
        } else if !names.insert(v.name.clone()) {
            errs.push(FieldError::duplicate(vpath.child("name"), &v.name));
        }
        let sources = volume_sources(v);
        match sources.as_slice() {
            [] => errs.push(FieldError::invalid(
                vpath.clone(),
                &v.name,
                "must specify a volume type",
            )),
            [one] if SUPPORTED_VOLUMES.contains(one) => {}
            [one] => errs.push(FieldError::not_supported(
                vpath.child(one),
                one,
                &SUPPORTED_VOLUMES,
            )),
            [_, second, ..] => errs.push(FieldError::forbidden(
                vpath.child(second),
                "may not specify more than 1 volume type",
            )),
        }
        if let Some(claim) = &v.persistent_volume_claim {
            if claim.claim_name.is_empty() {
                errs.push(FieldError::required(
                    vpath.child("persistentVolumeClaim").child("claimName"),
                ));
            }
        }
        if let Some(hp) = &v.host_path {
            if !hp.path.starts_with('/') {
                errs.push(FieldError::invalid(
                    vpath.child("hostPath").child("path"),
                    &hp.path,
                    "must be an absolute path",
                ));
            }
        }
    }
    names
}

/// The names of the source fields set on a volume, read off its JSON form so every source
/// Kubernetes knows is seen.
fn volume_sources(v: &Volume) -> Vec<&'static str> {
    let value = serde_json::to_value(v).unwrap_or_default();
    const ALL: [&str; 30] = [
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cephfs",
        "cinder",
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "fc",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "gitRepo",
        "glusterfs",
        "hostPath",
        "image",
        "iscsi",
        "nfs",
        "persistentVolumeClaim",
        "photonPersistentDisk",
        "portworxVolume",
        "projected",
        "quobyte",
        "rbd",
        "scaleIO",
        "secret",
        "storageos",
        "vsphereVolume",
    ];
    ALL.into_iter()
        .filter(|k| value.get(*k).is_some_and(|x| !x.is_null()))
        .collect()
}

fn validate_container(
    c: &Container,
    path: &FieldPath,
    volumes: &HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
    if c.name.is_empty() {
        errs.push(FieldError::required(path.child("name")));
    } else if let Err(detail) = dns1123_label(&c.name) {
        errs.push(FieldError::invalid(path.child("name"), &c.name, detail));
    }
    if c.image.as_deref().unwrap_or("").trim().is_empty() {
        errs.push(FieldError::required(path.child("image")));
    }
    let mut port_names = HashSet::new();
    for (j, p) in c.ports.iter().flatten().enumerate() {
        let ppath = path.child("ports").index(j);
        if !(1..=65535).contains(&p.container_port) {
            errs.push(FieldError::invalid(
                ppath.child("containerPort"),
                p.container_port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(hp) = p.host_port {
            if !(0..=65535).contains(&hp) {
                errs.push(FieldError::invalid(
                    ppath.child("hostPort"),
                    hp,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&protocol) {
            errs.push(FieldError::not_supported(
                ppath.child("protocol"),
                protocol,
                &["SCTP", "TCP", "UDP"],
            ));
        }
        if let Some(name) = p.name.as_deref() {
            if let Err(detail) = iana_svc_name(name) {
                errs.push(FieldError::invalid(ppath.child("name"), name, detail));
            } else if !port_names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(ppath.child("name"), name));
            }
        }
    }
    let mut mount_paths = HashSet::new();
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mpath = path.child("volumeMounts").index(j);
        if m.name.is_empty() {
            errs.push(FieldError::required(mpath.child("name")));
        } else if !volumes.contains(&m.name) {
            errs.push(FieldError::not_found(mpath.child("name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(mpath.child("mountPath")));
        } else if !m.mount_path.starts_with('/') {
            errs.push(FieldError::invalid(
                mpath.child("mountPath"),
                &m.mount_path,
                "must be an absolute path",
            ));
        } else if !mount_paths.insert(m.mount_path.trim_end_matches('/').to_string()) {
            errs.push(FieldError::invalid(
                mpath.child("mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
        if let Some(sub) = m.sub_path.as_deref() {
            if sub.starts_with('/') {
                errs.push(FieldError::invalid(
                    mpath.child("subPath"),
                    sub,
                    "must be a relative path",
                ));
            } else if sub.split('/').any(|part| part == "..") {
                errs.push(FieldError::invalid(
                    mpath.child("subPath"),
                    sub,
                    "must not contain '..'",
                ));
            }
        }
    }
    for (j, e) in c.env.iter().flatten().enumerate() {
        if e.name.is_empty() {
            errs.push(FieldError::required(
                path.child("env").index(j).child("name"),
            ));
        }
    }
    let probes = [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ];
    for (field, probe) in probes {
        let Some(grpc) = probe.as_ref().and_then(|p| p.grpc.as_ref()) else {
            continue;
        };
        if !(1..=65535).contains(&grpc.port) {
            errs.push(FieldError::invalid(
                path.child(field).child("grpc").child("port"),
                grpc.port,
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
}

/// Every problem of a ConfigMap.
pub fn validate_config_map(cm: &ConfigMap) -> Vec<FieldError> {
    let mut errs = validate_meta(&cm.metadata, true);
    validate_keys(
        cm.data.as_ref().map(|d| d.keys()),
        &FieldPath::root("data"),
        &mut errs,
    );
    validate_keys(
        cm.binary_data.as_ref().map(|d| d.keys()),
        &FieldPath::root("binaryData"),
        &mut errs,
    );
    errs
}

/// Every problem of a Secret.
pub fn validate_secret(s: &Secret) -> Vec<FieldError> {
    let mut errs = validate_meta(&s.metadata, true);
    validate_keys(
        s.data.as_ref().map(|d| d.keys()),
        &FieldPath::root("data"),
        &mut errs,
    );
    validate_keys(
        s.string_data.as_ref().map(|d| d.keys()),
        &FieldPath::root("stringData"),
        &mut errs,
    );
    errs
}

fn validate_keys<'a>(
    keys: Option<std::collections::btree_map::Keys<'a, String, impl Sized + 'a>>,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    for key in keys.into_iter().flatten() {
        if let Err(detail) = config_map_key(key) {
            errs.push(FieldError::invalid(path.key(key), key, detail));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::default_pod;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        let mut pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": spec}))
                .expect("pod");
        default_pod(&mut pod);
        pod
    }

    fn errors(spec: serde_json::Value) -> Vec<String> {
        validate_pod(&pod(spec))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn valid_pod_has_no_errors() {
        let errs = errors(json!({
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [
                {"name": "a", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/d"}],
                 "ports": [{"containerPort": 8000, "hostPort": 8000, "name": "http"}]},
                {"name": "b", "image": "busybox"}
            ]
        }));
        assert_eq!(errs, Vec::<String>::new());
    }

    #[test]
    fn table_of_invalid_pods() {
        let cases = [
            (json!({"containers": []}), "spec.containers: Required value"),
            (
                json!({"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "x"}]}),
                "spec.containers[1].name: Duplicate value: \"a\"",
            ),
            (
                json!({"initContainers": [{"name": "a", "image": "x"}], "containers": [{"name": "a", "image": "x"}]}),
                "spec.containers[0].name: Duplicate value: \"a\"",
            ),
            (
                json!({"containers": [{"name": "A", "image": "x"}]}),
                "spec.containers[0].name: Invalid value: \"A\"",
            ),
            (
                json!({"containers": [{"name": "a"}]}),
                "spec.containers[0].image: Required value",
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 1, "hostPort": 80}]},
                                   {"name": "b", "image": "x", "ports": [{"containerPort": 2, "hostPort": 80}]}]}),
                "spec.containers[1].ports[0].hostPort: Duplicate value: \"80\"",
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 1, "name": "p"}, {"containerPort": 2, "name": "p"}]}]}),
                "spec.containers[0].ports[1].name: Duplicate value: \"p\"",
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 70000}]}]}),
                "spec.containers[0].ports[0].containerPort: Invalid value: \"70000\"",
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "readinessProbe": {"grpc": {"port": 0}}}]}),
                "spec.containers[0].readinessProbe.grpc.port: Invalid value: \"0\": must be between 1 and 65535, inclusive",
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "livenessProbe": {"grpc": {"port": 65536, "service": "s"}}}]}),
                "spec.containers[0].livenessProbe.grpc.port: Invalid value: \"65536\"",
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]}),
                "spec.containers[0].volumeMounts[0].name: Not found: \"nope\"",
            ),
            (
                json!({"volumes": [{"name": "v", "emptyDir": {}}], "containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": "../etc"}]}]}),
                "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../etc\"",
            ),
            (
                json!({"volumes": [{"name": "v", "nfs": {"server": "s", "path": "/p"}}], "containers": [{"name": "a", "image": "x"}]}),
                "spec.volumes[0].nfs: Unsupported value",
            ),
            (
                json!({"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": ""}}], "containers": [{"name": "a", "image": "x"}]}),
                "spec.volumes[0].persistentVolumeClaim.claimName: Required value",
            ),
            (
                json!({"volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}], "containers": [{"name": "a", "image": "x"}]}),
                "spec.volumes[1].name: Duplicate value: \"v\"",
            ),
            (
                json!({"restartPolicy": "Sometimes", "containers": [{"name": "a", "image": "x"}]}),
                "spec.restartPolicy: Unsupported value: \"Sometimes\"",
            ),
        ];
        for (spec, want) in cases {
            let errs = errors(spec.clone());
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{spec}: want {want}, got {errs:?}"
            );
        }
    }

    #[test]
    fn invalid_pod_name() {
        let mut p = pod(json!({"containers": [{"name": "a", "image": "x"}]}));
        p.metadata.name = Some("Web_1".into());
        let errs: Vec<String> = validate_pod(&p).iter().map(ToString::to_string).collect();
        assert!(
            errs[0].starts_with("metadata.name: Invalid value: \"Web_1\""),
            "{errs:?}"
        );
    }

    #[test]
    fn config_map_keys() {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "c"}, "data": {"ok.conf": "", "bad/key": ""}}),
        )
        .expect("cm");
        let errs = validate_config_map(&cm);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path.as_str(), "data[bad/key]");
    }
}
