//! The node's own settings, as the kubelet's configuration file holds them
//! (<https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/>), read once from
//! the environment by the daemon and validated here:
//!
//! - `PEAPOD_CONTAINER_LOG_MAX_SIZE` (`containerLogMaxSize`, default `10Mi`, a quantity) and
//!   `PEAPOD_CONTAINER_LOG_MAX_FILES` (`containerLogMaxFiles`, default 5, at least 2): log
//!   rotation of every container started afterwards (each instance keeps the limits it was
//!   created with, also across a daemon restart).
//! - `PEAPOD_PIDS_LIMIT` (like `podPidsLimit`, default 2048 as podman's `pids_limit`; `-1` for
//!   none): `pids.max` of each container's cgroup, so a fork bomb stops at the limit instead
//!   of exhausting the host's PIDs.
//! - `PEAPOD_POD_PIDS_LIMIT` (the kubelet's `podPidsLimit`, default `-1`, none): `pids.max` of
//!   the pod's cgroup (`/peapod/pod<uid>`), which all of a pod's processes count against
//!   together, whatever each container's own limit.

use peapod_runtime::log::LogLimits;

/// The default `pids.max` of a container.
pub const DEFAULT_PIDS_LIMIT: i64 = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeConfig {
    pub log_limits: LogLimits,
    /// `pids.max` of each container; `None` for no limit.
    pub pids_limit: Option<i64>,
    /// `pids.max` of each pod's cgroup; `None` for no limit.
    pub pod_pids_limit: Option<i64>,
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            log_limits: LogLimits::default(),
            pids_limit: Some(DEFAULT_PIDS_LIMIT),
            pod_pids_limit: None,
        }
    }
}

/// A setting that cannot be used: which variable, what it held and why not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {reason}")]
pub struct NodeConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl NodeConfig {
    /// The defaults with the process environment's overrides.
    pub fn from_env() -> Result<NodeConfig, NodeConfigError> {
        NodeConfig::from_lookup(|k| std::env::var(k).ok())
    }

    /// The defaults with the overrides `var` returns (pure, for tests).
    pub fn from_lookup(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<NodeConfig, NodeConfigError> {
        let mut config = NodeConfig::default();
        let get = |name: &'static str| var(name).map(|v| (name, v.trim().to_string()));
        let bad = |var: &'static str, value: &str, reason: &'static str| NodeConfigError {
            var,
            value: value.to_string(),
            reason,
        };
        if let Some((name, v)) = get("PEAPOD_CONTAINER_LOG_MAX_SIZE") {
            config.log_limits.max_size = peapod_api::quantity::parse_quantity(&v)
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(name, &v, "not a positive quantity such as 10Mi"))?;
        }
        if let Some((name, v)) = get("PEAPOD_CONTAINER_LOG_MAX_FILES") {
            config.log_limits.max_files = v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 2)
                .ok_or_else(|| bad(name, &v, "not a whole number of at least 2"))?;
        }
        let pids = |name: &'static str, v: &str| match v.parse::<i64>() {
            Ok(-1) => Ok(None),
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(bad(name, v, "not a positive whole number or -1")),
        };
        if let Some((name, v)) = get("PEAPOD_PIDS_LIMIT") {
            config.pids_limit = pids(name, &v)?;
        }
        if let Some((name, v)) = get("PEAPOD_POD_PIDS_LIMIT") {
            config.pod_pids_limit = pids(name, &v)?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<NodeConfig, NodeConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NodeConfig::from_lookup(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_are_the_kubelets_and_podmans() {
        let c = with(&[]).expect("defaults");
        assert_eq!(c.log_limits.max_size, 10 * 1024 * 1024);
        assert_eq!(c.log_limits.max_files, 5);
        assert_eq!(c.pids_limit, Some(2048));
        assert_eq!(c.pod_pids_limit, None, "podPidsLimit defaults to -1");
    }

    #[test]
    fn overrides_are_parsed_and_checked() {
        let c = with(&[
            ("PEAPOD_CONTAINER_LOG_MAX_SIZE", "64Ki"),
            ("PEAPOD_CONTAINER_LOG_MAX_FILES", "3"),
            ("PEAPOD_PIDS_LIMIT", "-1"),
        ])
        .expect("valid");
        assert_eq!(c.log_limits.max_size, 65536);
        assert_eq!(c.log_limits.max_files, 3);
        assert_eq!(c.pids_limit, None);
        assert_eq!(
            with(&[("PEAPOD_PIDS_LIMIT", "100")])
                .expect("valid")
                .pids_limit,
            Some(100)
        );
        let pod = with(&[("PEAPOD_POD_PIDS_LIMIT", "40")]).expect("valid");
        assert_eq!((pod.pod_pids_limit, pod.pids_limit), (Some(40), Some(2048)));
        for (k, v) in [
            ("PEAPOD_POD_PIDS_LIMIT", "0"),
            ("PEAPOD_CONTAINER_LOG_MAX_SIZE", "big"),
            ("PEAPOD_CONTAINER_LOG_MAX_SIZE", "0"),
            ("PEAPOD_CONTAINER_LOG_MAX_FILES", "1"),
            ("PEAPOD_PIDS_LIMIT", "0"),
            ("PEAPOD_PIDS_LIMIT", "lots"),
        ] {
            let e = with(&[(k, v)]).expect_err(v);
            assert_eq!(e.var, k);
        }
    }
}
