//! `peapod image pull REF`: an image from a registry into the local store, with a progress
//! bar per layer when stderr is a terminal (plain lines otherwise) and a summary at the end.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use peapod_runtime::image::pull::{self, AuthConfig, PullEvent, RegistryConfig};
use peapod_runtime::image::{normalize_reference, ImageStore};

use super::image::human_size;

/// How to reach the registry, beyond what `PEAPOD_INSECURE_REGISTRIES` and
/// `PEAPOD_REGISTRY_CA` say.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// image reference, e.g. `busybox`, `127.0.0.1:5000/app:1`, `app@sha256:...`
    pub reference: String,
    /// docker-style config with registry credentials (default: $REGISTRY_AUTH_FILE,
    /// $DOCKER_CONFIG/config.json, ~/.docker/config.json)
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// reach this reference's registry over plain HTTP
    #[arg(long)]
    pub insecure: bool,
    /// trust this CA certificate (PEM) for the registry's TLS, as well as the system's
    #[arg(long = "ca", value_name = "FILE")]
    pub ca: Vec<PathBuf>,
}

pub fn run(args: PullArgs, store: &ImageStore, out: &mut impl Write) -> anyhow::Result<()> {
    let name = normalize_reference(&args.reference)?;
    let mut config = RegistryConfig::from_env();
    config.ca_files.extend(args.ca);
    if args.insecure {
        config.insecure.push(registry_of(&name).to_owned());
    }
    let mut auth = AuthConfig::default();
    match args.authfile {
        // Named explicitly, so it must be there.
        Some(path) => {
            let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            auth.add_json(&path.display().to_string(), &bytes)?;
        }
        None => {
            if let Some(path) = pull::default_auth_file() {
                auth.add_file(&path)?;
            }
        }
    }
    let display = Display::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let report = runtime.block_on(pull::pull(store, &config, &auth, &name, &|event| {
        display.event(event)
    }));
    display.finish();
    let report = report?;
    writeln!(
        out,
        "Pulled image: {} (id {}, {} in the store, {} fetched in {})",
        report.image.name,
        short_id(&report.image.id),
        human_size(report.image.size),
        human_size(report.fetched_bytes),
        seconds(report.elapsed),
    )?;
    writeln!(out, "Digest: {}", report.manifest_digest)?;
    Ok(())
}

/// `host[:port]` of a normalised reference.
fn registry_of(name: &str) -> &str {
    name.split('/').next().unwrap_or(name)
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Progress on stderr: bars on a terminal, one line per step otherwise.
enum Display {
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
    },
    Lines(Mutex<std::io::Stderr>),
}

impl Display {
    fn new() -> Display {
        let stderr = std::io::stderr();
        if stderr.is_terminal() {
            Display::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            Display::Lines(Mutex::new(stderr))
        }
    }

    fn event(&self, event: PullEvent<'_>) {
        match self {
            Display::Lines(stderr) => {
                let line = match event {
                    PullEvent::Resolved {
                        manifest_digest,
                        layers,
                    } => format!("manifest {manifest_digest}: {layers} layers"),
                    PullEvent::LayerPresent { digest, .. } => {
                        format!("{}: already present", short_id(digest))
                    }
                    PullEvent::LayerDone { digest, size } => {
                        format!("{}: fetched {}", short_id(digest), human_size(size))
                    }
                    PullEvent::Storing => "unpacking and storing".to_owned(),
                    PullEvent::LayerProgress { .. } => return,
                };
                if let Ok(mut stderr) = stderr.lock() {
                    let _ = writeln!(stderr, "{line}");
                }
            }
            Display::Bars { multi, bars } => {
                let Ok(mut bars) = bars.lock() else {
                    return;
                };
                match event {
                    PullEvent::Resolved { .. } | PullEvent::Storing => {}
                    PullEvent::LayerPresent { digest, .. } => {
                        let bar = multi.add(ProgressBar::new_spinner());
                        bar.finish_with_message(format!("{}: already present", short_id(digest)));
                    }
                    PullEvent::LayerProgress { digest, done, size } => {
                        let bar = bars.entry(digest.to_owned()).or_insert_with(|| {
                            let bar = multi.add(ProgressBar::new(size));
                            bar.set_style(bar_style());
                            bar.set_prefix(short_id(digest).to_owned());
                            bar
                        });
                        bar.set_position(done);
                    }
                    PullEvent::LayerDone { digest, size } => {
                        if let Some(bar) = bars.get(digest) {
                            bar.finish_with_message(format!("fetched {}", human_size(size)));
                        }
                    }
                }
            }
        }
    }

    fn finish(&self) {
        if let Display::Bars { multi, .. } = self {
            let _ = multi.clear();
        }
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}
