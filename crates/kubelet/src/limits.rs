//! Container resources to cgroup values, as the kubelet computes them
//! (<https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/>), and the
//! pod's QoS class (<https://kubernetes.io/docs/concepts/workloads/pods/pod-qos/>).

use k8s_openapi::api::core::v1::{Container, Pod};
use peapod_api::quantity::parse_quantity;
use peapod_runtime::Resources;

/// The CFS period the kubelet uses.
pub const CPU_PERIOD_US: u64 = 100_000;
/// cgroup v1's minimum cpu.shares.
const MIN_SHARES: u64 = 2;

/// A CPU quantity in millicores (`500m`, `1`, `0.25`).
pub fn milli_cpu(q: &str) -> Option<u64> {
    match q.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => q.parse::<f64>().ok().map(|c| (c * 1000.0).ceil() as u64),
    }
}

fn quantity(
    c: &Container,
    section: fn(
        &k8s_openapi::api::core::v1::ResourceRequirements,
    ) -> Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
    name: &str,
) -> Option<String> {
    c.resources
        .as_ref()
        .and_then(section)
        .and_then(|m| m.get(name))
        .map(|q| q.0.clone())
}

fn requests(
    r: &k8s_openapi::api::core::v1::ResourceRequirements,
) -> Option<
    &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
> {
    r.requests.as_ref()
}

fn limits(
    r: &k8s_openapi::api::core::v1::ResourceRequirements,
) -> Option<
    &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
> {
    r.limits.as_ref()
}

/// cgroup values for a container: shares from the CPU request (the limit when no request),
/// quota from the CPU limit, the memory limit in bytes.
pub fn container_resources(c: &Container, qos: QosClass) -> Resources {
    let cpu_limit = quantity(c, limits, "cpu").and_then(|q| milli_cpu(&q));
    let cpu_request = quantity(c, requests, "cpu")
        .and_then(|q| milli_cpu(&q))
        .or(cpu_limit);
    let memory_limit = quantity(c, limits, "memory").and_then(|q| parse_quantity(&q));
    Resources {
        memory_limit_bytes: memory_limit.map(|b| b as i64),
        cpu_shares: Some(cpu_request.map_or(MIN_SHARES, |m| (m * 1024 / 1000).max(MIN_SHARES))),
        cpu_quota_us: cpu_limit.map(|m| ((m * CPU_PERIOD_US / 1000) as i64).max(1000)),
        cpu_period_us: cpu_limit.map(|_| CPU_PERIOD_US),
        pids_limit: None,
        oom_score_adj: Some(match qos {
            QosClass::Guaranteed => -997,
            QosClass::BestEffort => 1000,
            QosClass::Burstable => 999,
        }),
    }
}

/// The pod's QoS class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// BestEffort: no container sets a request or limit. Guaranteed: every container has cpu and
/// memory limits equal to its requests (requests default to limits). Burstable otherwise.
pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = pod.spec.as_ref() else {
        return QosClass::BestEffort;
    };
    let all: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    let any_set = all.iter().any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            r.requests.as_ref().is_some_and(|m| !m.is_empty())
                || r.limits.as_ref().is_some_and(|m| !m.is_empty())
        })
    });
    if !any_set {
        return QosClass::BestEffort;
    }
    let guaranteed = all.iter().all(|c| {
        ["cpu", "memory"].iter().all(|res| {
            let limit = quantity(c, limits, res);
            let request = quantity(c, requests, res).or_else(|| limit.clone());
            limit.is_some() && normalized(res, &limit) == normalized(res, &request)
        })
    });
    if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

fn normalized(resource: &str, q: &Option<String>) -> Option<u64> {
    let q = q.as_deref()?;
    if resource == "cpu" {
        milli_cpu(q)
    } else {
        parse_quantity(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": containers}}),
        )
        .expect("pod")
    }

    #[test]
    fn millicores() {
        assert_eq!(milli_cpu("500m"), Some(500));
        assert_eq!(milli_cpu("2"), Some(2000));
        assert_eq!(milli_cpu("0.25"), Some(250));
        assert_eq!(milli_cpu("x"), None);
    }

    #[test]
    fn cgroup_values() {
        let p =
            pod(json!([{"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]));
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let r = container_resources(c, qos_class(&p));
        assert_eq!(r.cpu_shares, Some(512));
        assert_eq!(r.cpu_quota_us, Some(50_000));
        assert_eq!(r.memory_limit_bytes, Some(64 << 20));
        assert_eq!(r.oom_score_adj, Some(-997));
        let empty = pod(json!([{"name": "c"}]));
        let r = container_resources(
            &empty.spec.as_ref().expect("spec").containers[0],
            QosClass::BestEffort,
        );
        assert_eq!(
            (r.cpu_shares, r.cpu_quota_us, r.memory_limit_bytes),
            (Some(2), None, None)
        );
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&pod(json!([{"name": "c"}]))),
            QosClass::BestEffort
        );
        assert_eq!(
            qos_class(&pod(
                json!([{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}])
            )),
            QosClass::Guaranteed
        );
        assert_eq!(
            qos_class(&pod(
                json!([{"name": "c", "resources": {"requests": {"cpu": "100m"}}}])
            )),
            QosClass::Burstable
        );
        assert_eq!(
            qos_class(&pod(
                json!([{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}, {"name": "d"}])
            )),
            QosClass::Burstable
        );
    }
}
