//! `peapod serve`: the daemon — the Kubernetes API for kubectl, the object store and the
//! kubelet, until SIGINT or SIGTERM. Running pods keep running when it stops (their monitors
//! outlive it).

use crate::daemon::{Daemon, Objects};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address the API listens on (TLS)
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
}

pub fn run(args: ServeArgs, root: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start tokio")?;
    rt.block_on(async {
        let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
        let mut daemon =
            Daemon::start(root, root, args.listen, Objects::OnDisk, Default::default()).await?;
        daemon.serving().await?;
        eprintln!(
            "peapod: serving the Kubernetes API on https://{}",
            daemon.address
        );
        eprintln!("peapod: export KUBECONFIG={}", daemon.kubeconfig.display());
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        daemon.stop_serving();
        Ok(())
    })
}

/// `peapod kubeconfig`: prints the admin kubeconfig of a data root.
#[derive(Debug, clap::Args)]
pub struct KubeconfigArgs {}

pub fn kubeconfig(root: &Path) -> anyhow::Result<()> {
    let path = root.join("kubeconfig");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "read {} (has `peapod serve --root {}` run?)",
            path.display(),
            root.display()
        )
    })?;
    print!("{text}");
    Ok(())
}
