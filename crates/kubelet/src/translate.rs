//! `translate`: the only bridge from a Pod's container spec to the runtime's
//! [`ContainerConfig`]. Pure: the caller passes the resolved image and the pod's objects.
//!
//! Command and args follow Kubernetes' rules
//! (<https://kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/#notes>),
//! and `$(VAR)` references in command, args and env values are expanded like the kubelet does
//! (<https://kubernetes.io/docs/tasks/inject-data-application/define-interdependent-environment-variables/>).

use crate::context::PodContext;
use k8s_openapi::api::core::v1::{Container, EnvVar};
use peapod_runtime::image::ImageConfig;
use peapod_runtime::sandbox::SandboxDir;
use peapod_runtime::{ContainerConfig, Mount, SandboxRef, User};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a container's config could not be made (the kubelet's `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no command specified")]
    NoCommand,
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound { name: String },
    #[error("secret {name:?} not found")]
    SecretNotFound { name: String },
    #[error("couldn't find key {key} in {kind} {name}")]
    KeyNotFound {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("unsupported fieldRef {path}")]
    FieldRef { path: String },
    #[error("user {user:?} not found in the image's /etc/passwd")]
    UnknownUser { user: String },
    #[error("{0}")]
    NonRoot(String),
    #[error("{0}")]
    Seccomp(String),
    #[error("volume {volume:?} of the mount at {mount_path} is not defined")]
    NoVolume { volume: String, mount_path: String },
}

/// The final argv from the container's command/args and the image's Entrypoint/Cmd.
pub fn argv(
    container: &Container,
    image: &ImageConfig,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>, ConfigError> {
    let expand_all = |v: &Vec<String>| v.iter().map(|s| expand(s, env)).collect::<Vec<_>>();
    let command = container.command.as_ref().filter(|c| !c.is_empty());
    let args = container.args.as_ref().filter(|a| !a.is_empty());
    let argv = match (command, args) {
        (Some(c), Some(a)) => [expand_all(c), expand_all(a)].concat(),
        (Some(c), None) => expand_all(c),
        (None, Some(a)) => [image.entrypoint.clone(), expand_all(a)].concat(),
        (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
    };
    if argv.is_empty() {
        return Err(ConfigError::NoCommand);
    }
    Ok(argv)
}

/// Expands `$(NAME)` from `env`; `$$` escapes a `$`; unknown references stay as written.
pub fn expand(input: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment: the image's, then envFrom, then env (later wins), each env
/// value expanded against what came before it.
pub fn environment(
    container: &Container,
    image: &ImageConfig,
    ctx: &PodContext,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let set =
        |k: String, v: String, order: &mut Vec<String>, values: &mut BTreeMap<String, String>| {
            if !values.contains_key(&k) {
                order.push(k.clone());
            }
            values.insert(k, v);
        };
    for entry in &image.env {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        set(k.to_string(), v.to_string(), &mut order, &mut values);
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match ctx.config_map_data(&r.name) {
                Some(data) => data
                    .into_iter()
                    .for_each(|(k, v)| set(format!("{prefix}{k}"), v, &mut order, &mut values)),
                None if r.optional == Some(true) => {}
                None => {
                    return Err(ConfigError::ConfigMapNotFound {
                        name: r.name.clone(),
                    })
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            match ctx.secret_data(&r.name) {
                Some(data) => data
                    .into_iter()
                    .for_each(|(k, v)| set(format!("{prefix}{k}"), v, &mut order, &mut values)),
                None if r.optional == Some(true) => {}
                None => {
                    return Err(ConfigError::SecretNotFound {
                        name: r.name.clone(),
                    })
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(var, container, ctx, &values)? {
            set(var.name.clone(), value, &mut order, &mut values);
        }
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = values.get(&k).cloned().unwrap_or_default();
            (k, v)
        })
        .collect())
}

fn env_value(
    var: &EnvVar,
    container: &Container,
    ctx: &PodContext,
    so_far: &BTreeMap<String, String>,
) -> Result<Option<String>, ConfigError> {
    if let Some(value) = &var.value {
        return Ok(Some(expand(value, so_far)));
    }
    let Some(from) = &var.value_from else {
        return Ok(Some(String::new()));
    };
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        return match ctx.config_map_data(&r.name) {
            Some(data) => match data.get(&r.key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => Err(ConfigError::KeyNotFound {
                    kind: "configmap",
                    name: r.name.clone(),
                    key: r.key.clone(),
                }),
            },
            None if optional => Ok(None),
            None => Err(ConfigError::ConfigMapNotFound {
                name: r.name.clone(),
            }),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        return match ctx.secret_data(&r.name) {
            Some(data) => match data.get(&r.key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => Err(ConfigError::KeyNotFound {
                    kind: "secret",
                    name: r.name.clone(),
                    key: r.key.clone(),
                }),
            },
            None if optional => Ok(None),
            None => Err(ConfigError::SecretNotFound {
                name: r.name.clone(),
            }),
        };
    }
    if let Some(r) = &from.resource_field_ref {
        let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => ctx.pod.spec.as_ref().and_then(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .find(|c| c.name == n)
            }),
            None => Some(container),
        };
        let divisor = r.divisor.as_ref().map(|q| q.0.as_str());
        return resource_value(target, &r.resource, divisor)
            .map(Some)
            .ok_or_else(|| ConfigError::FieldRef {
                path: r.resource.clone(),
            });
    }
    if let Some(f) = &from.field_ref {
        return ctx
            .field(&f.field_path)
            .map(Some)
            .ok_or_else(|| ConfigError::FieldRef {
                path: f.field_path.clone(),
            });
    }
    Ok(Some(String::new()))
}

/// The annotation with which a pod asks for peapod-init as its containers' PID 1, like
/// `docker run --init` (docs/init.md).
pub const INIT_ANNOTATION: &str = "peapod.dev/init";
/// Where the injected static peapod-init is bind-mounted in the container.
pub const INIT_PATH: &str = "/run/peapod-init";

pub fn wants_init(ctx: &PodContext) -> bool {
    ctx.pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INIT_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Whether the pod's containers share one PID namespace (`shareProcessNamespace: true`), whose
/// PID 1 is the pod's init rather than any container's process.
pub fn shares_pids(ctx: &PodContext) -> bool {
    ctx.pod
        .spec
        .as_ref()
        .and_then(|s| s.share_process_namespace)
        == Some(true)
}

/// Mounts `binary` read-only at INIT_PATH and runs argv as `INIT_PATH -- argv`, unless argv
/// already starts with INIT_PATH (the container asks for supervision: `--config ...`).
pub fn inject_init(args: &mut Vec<String>, mounts: &mut Vec<Mount>, binary: &Path) {
    mounts.push(Mount {
        source: binary.to_path_buf(),
        destination: INIT_PATH.into(),
        read_only: true,
    });
    if args.first().map(String::as_str) != Some(INIT_PATH) {
        args.splice(0..0, [INIT_PATH.to_owned(), "--".to_owned()]);
    }
}

/// The downward API's `resourceFieldRef`: a container's limit or request, in units of
/// `divisor` rounded up; an unset limit is the node's allocatable amount
/// (<https://kubernetes.io/docs/concepts/workloads/pods/downward-api/#downwardapi-resourcefieldref>).
pub fn resource_value(
    container: Option<&Container>,
    resource: &str,
    divisor: Option<&str>,
) -> Option<String> {
    use peapod_api::quantity::parse_quantity;
    let (section, name) = resource.split_once('.')?;
    let get = |sec: &str| {
        let r = container?.resources.as_ref()?;
        let map = if sec == "limits" {
            r.limits.as_ref()?
        } else {
            r.requests.as_ref()?
        };
        map.get(name).map(|q| q.0.clone())
    };
    let value = get(section).or_else(|| {
        if section == "requests" {
            get("limits")
        } else {
            None
        }
    });
    match name {
        "cpu" => {
            let milli = match value {
                Some(v) => crate::limits::milli_cpu(&v)?,
                None if section == "limits" => std::thread::available_parallelism()
                    .map(|n| n.get() as u64 * 1000)
                    .unwrap_or(1000),
                None => 0,
            };
            let div = divisor
                .and_then(crate::limits::milli_cpu)
                .filter(|d| *d > 0)
                .unwrap_or(1000);
            Some(milli.div_ceil(div).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let bytes = match value {
                Some(v) => parse_quantity(&v)?,
                None if section == "limits" => node_memory_bytes(),
                None => 0,
            };
            let div = divisor
                .and_then(parse_quantity)
                .filter(|d| *d > 0)
                .unwrap_or(1);
            Some(bytes.div_ceil(div).to_string())
        }
        _ => None,
    }
}

fn node_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Resolves the user: securityContext.runAsUser/runAsGroup (container over pod), else the
/// image's `User` (`uid`, `uid:gid`, or names looked up in the image's /etc/passwd and
/// /etc/group, read by the caller into `passwd` and `group`).
pub fn user(
    container: &Container,
    ctx: &PodContext,
    image: &ImageConfig,
    passwd: &str,
    group: &str,
) -> Result<User, ConfigError> {
    let pod_sc = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let (mut uid, mut gid) = (0u32, None::<u32>);
    let image_user = image.user.as_deref().unwrap_or("").trim();
    if !image_user.is_empty() {
        let (u, g) = image_user
            .split_once(':')
            .map(|(u, g)| (u, Some(g)))
            .unwrap_or((image_user, None));
        let (found_uid, found_gid) =
            lookup_user(u, passwd).ok_or_else(|| ConfigError::UnknownUser {
                user: u.to_string(),
            })?;
        uid = found_uid;
        gid = Some(found_gid);
        if let Some(g) = g {
            gid = Some(
                g.parse()
                    .ok()
                    .or_else(|| lookup_group(g, group))
                    .ok_or_else(|| ConfigError::UnknownUser {
                        user: g.to_string(),
                    })?,
            );
        }
    }
    if let Some(u) = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user))
    {
        uid = u as u32;
        if gid.is_none() {
            gid = lookup_uid_gid(uid, passwd);
        }
    }
    if let Some(g) = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|s| s.run_as_group))
    {
        gid = Some(g as u32);
    }
    let mut additional: Vec<u32> = pod_sc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|g| g as u32)
        .collect();
    if let Some(fs_group) = pod_sc.and_then(|s| s.fs_group) {
        additional.push(fs_group as u32);
    }
    Ok(User {
        uid,
        gid: gid.unwrap_or(0),
        additional_gids: additional,
    })
}

fn lookup_user(name: &str, passwd: &str) -> Option<(u32, u32)> {
    if let Ok(uid) = name.parse::<u32>() {
        return Some((uid, lookup_uid_gid(uid, passwd).unwrap_or(0)));
    }
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

fn lookup_uid_gid(uid: u32, passwd: &str) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid))
            .then(|| f[3].parse().ok())
            .flatten()
    })
}

fn lookup_group(name: &str, group: &str) -> Option<u32> {
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

/// Where each pod volume lives on the host.
pub fn volume_source(ctx: &PodContext, sandbox: &SandboxDir, name: &str) -> Option<PathBuf> {
    let volume = ctx
        .pod
        .spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == name)?;
    match (&volume.host_path, &volume.persistent_volume_claim) {
        (Some(hp), _) => Some(PathBuf::from(&hp.path)),
        (None, Some(_)) => ctx.claims.get(name).cloned(),
        (None, None) => Some(sandbox.volume(name)),
    }
}

/// The container's mounts: its volumeMounts (with subPath and readOnly), then the pod's
/// /etc/hosts, /etc/hostname, /etc/resolv.conf and /dev/shm, and its termination log.
pub fn mounts(
    container: &Container,
    ctx: &PodContext,
    sandbox: &SandboxDir,
    termination_log: &Path,
) -> Result<Vec<Mount>, ConfigError> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let base = volume_source(ctx, sandbox, &m.name).ok_or_else(|| ConfigError::NoVolume {
            volume: m.name.clone(),
            mount_path: m.mount_path.clone(),
        })?;
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => base.join(sub),
            None => base,
        };
        let forced_ro = ctx.is_projected_volume(&m.name);
        out.push(Mount {
            source,
            destination: m.mount_path.clone(),
            read_only: m.read_only == Some(true) || forced_ro,
        });
    }
    let has = |dest: &str| out.iter().any(|m: &Mount| m.destination == dest);
    let mut extra = Vec::new();
    for (file, dest) in [
        ("hosts", "/etc/hosts"),
        ("hostname", "/etc/hostname"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        if !has(dest) {
            extra.push(Mount {
                source: sandbox.etc(file),
                destination: dest.into(),
                read_only: false,
            });
        }
    }
    if !has("/dev/shm") {
        extra.push(Mount {
            source: sandbox.shm(),
            destination: "/dev/shm".into(),
            read_only: false,
        });
    }
    let term_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    extra.push(Mount {
        source: termination_log.to_path_buf(),
        destination: term_path,
        read_only: false,
    });
    out.extend(extra);
    Ok(out)
}

/// Builds the runtime config of `container` (one instance: `restart` counts from 0).
#[allow(clippy::too_many_arguments)]
pub fn container_config(
    container: &Container,
    ctx: &PodContext,
    image: &peapod_runtime::image::Image,
    sandbox: &SandboxDir,
    passwd: &str,
    group: &str,
    restart: u32,
    cgroup_path: String,
    termination_log: &Path,
) -> Result<ContainerConfig, ConfigError> {
    let env = environment(container, &image.config, ctx)?;
    let env_map: BTreeMap<String, String> = env.iter().cloned().collect();
    let args = argv(container, &image.config, &env_map)?;
    let cwd = container
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| image.config.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let read_only_rootfs = container
        .security_context
        .as_ref()
        .and_then(|s| s.read_only_root_filesystem)
        == Some(true);
    let user = user(container, ctx, &image.config, passwd, group)?;
    let pod_sc = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref());
    crate::security::check_non_root(container, pod_sc, &user).map_err(ConfigError::NonRoot)?;
    let mut security = crate::security::security(container);
    security.seccomp = crate::security::seccomp(container, pod_sc).map_err(ConfigError::Seccomp)?;
    Ok(ContainerConfig {
        name: container.name.clone(),
        image: image.name.clone(),
        layers: image.layers.clone(),
        args,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd,
        user,
        mounts: mounts(container, ctx, sandbox, termination_log)?,
        sandbox: SandboxRef {
            pid: shares_pids(ctx).then(|| sandbox.pid_ns()),
            ..sandbox.sandbox_ref()
        },
        cgroup_path,
        read_only_rootfs,
        log_path: sandbox.log(&container.name, restart),
        log_limits: Default::default(),
        resources: crate::limits::container_resources(
            container,
            crate::limits::qos_class(&ctx.pod),
        ),
        security,
        stdio: peapod_runtime::Stdio {
            stdin: container.stdin.unwrap_or(false),
            stdin_once: container.stdin_once.unwrap_or(false),
            tty: container.tty.unwrap_or(false),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("container")
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into(), "A=image".into()],
            ..Default::default()
        }
    }

    #[test]
    fn init_injection() {
        let mut args = vec!["sh".to_string(), "-c".to_string(), "x".to_string()];
        let mut mounts = Vec::new();
        inject_init(&mut args, &mut mounts, Path::new("/opt/peapod-init"));
        assert_eq!(args, vec![INIT_PATH, "--", "sh", "-c", "x"]);
        assert_eq!(mounts[0].destination, INIT_PATH);
        assert!(mounts[0].read_only);
        let mut args = vec![
            INIT_PATH.to_string(),
            "--config".to_string(),
            "/etc/init.yaml".to_string(),
        ];
        inject_init(&mut args, &mut Vec::new(), Path::new("/opt/peapod-init"));
        assert_eq!(args[1], "--config");
    }

    #[test]
    fn resource_field_refs() {
        let c = container(
            json!({"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}}),
        );
        assert_eq!(
            resource_value(Some(&c), "limits.cpu", None).as_deref(),
            Some("1")
        );
        assert_eq!(
            resource_value(Some(&c), "limits.cpu", Some("1m")).as_deref(),
            Some("500")
        );
        assert_eq!(
            resource_value(Some(&c), "requests.cpu", Some("1m")).as_deref(),
            Some("250")
        );
        assert_eq!(
            resource_value(Some(&c), "limits.memory", Some("1Mi")).as_deref(),
            Some("64")
        );
        assert_eq!(
            resource_value(Some(&c), "requests.memory", None).as_deref(),
            Some(&*(64u64 << 20).to_string())
        );
        assert_eq!(resource_value(Some(&c), "limits.gpu", None), None);
    }

    #[test]
    fn command_and_args_rules() {
        let env = BTreeMap::new();
        let img = image(&["/ep"], &["cmd"]);
        let cases = [
            (json!({"name": "c"}), vec!["/ep", "cmd"]),
            (json!({"name": "c", "command": ["/x"]}), vec!["/x"]),
            (json!({"name": "c", "args": ["a"]}), vec!["/ep", "a"]),
            (
                json!({"name": "c", "command": ["/x"], "args": ["a"]}),
                vec!["/x", "a"],
            ),
        ];
        for (c, want) in cases {
            assert_eq!(
                argv(&container(c.clone()), &img, &env).expect("argv"),
                want,
                "{c}"
            );
        }
        let none = image(&[], &[]);
        assert_eq!(
            argv(&container(json!({"name": "c"})), &none, &env),
            Err(ConfigError::NoCommand)
        );
    }

    #[test]
    fn expands_references() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$RANDOM", &env), "$RANDOM");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn environment_order_and_overrides() {
        let pod = serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}}),
        )
        .expect("pod");
        let cm = serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"K": "v"}}))
            .expect("cm");
        let ctx = PodContext::new(pod, vec![cm], vec![]);
        let c = container(json!({"name": "c", "env": [
            {"name": "A", "value": "mine-$(PATH)"},
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "K"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ]}));
        let env = environment(&c, &image(&[], &["sh"]), &ctx).expect("env");
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/bin".into()),
                ("A".into(), "mine-/bin".into()),
                ("FROM_CM".into(), "v".into()),
                ("POD".into(), "p".into()),
            ]
        );
        let missing = container(
            json!({"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "K"}}}]}),
        );
        assert_eq!(
            environment(&missing, &image(&[], &[]), &ctx),
            Err(ConfigError::ConfigMapNotFound {
                name: "nope".into()
            })
        );
    }

    #[test]
    fn users() {
        let pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}))
                .expect("pod");
        let ctx = PodContext::new(pod, vec![], vec![]);
        let passwd = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
        let mut img = image(&[], &["sh"]);
        assert_eq!(
            user(&container(json!({"name": "c"})), &ctx, &img, passwd, "")
                .expect("user")
                .uid,
            0
        );
        img.user = Some("nobody".into());
        let u = user(&container(json!({"name": "c"})), &ctx, &img, passwd, "").expect("user");
        assert_eq!((u.uid, u.gid), (65534, 65534));
        let c = container(
            json!({"name": "c", "securityContext": {"runAsUser": 1000, "runAsGroup": 3000}}),
        );
        let u = user(&c, &ctx, &img, passwd, "").expect("user");
        assert_eq!((u.uid, u.gid), (1000, 3000));
        img.user = Some("ghost".into());
        assert!(user(&container(json!({"name": "c"})), &ctx, &img, passwd, "").is_err());
    }
}
