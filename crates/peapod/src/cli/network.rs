//! `peapod network`: the host side of the pod network that outlives daemons.
//!
//! The bridge (`peapod0`) and its guard table are node setup, like a CNI bridge: the first
//! daemon makes them and every later one reuses them, so `peapod run` does not pay for making
//! and removing a bridge each time. `peapod network remove` takes them away once no pod is
//! plugged in (the same variables as the daemon choose which bridge).

use anyhow::{bail, Context};
use peapod_net::NetworkConfig;
use std::io::Write;
use std::path::Path;

#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// remove the bridge and its nftables guard table (refused while a pod is plugged in)
    Remove,
}

pub fn run(cmd: NetworkCommand, root: &Path) -> anyhow::Result<()> {
    let NetworkCommand::Remove = cmd;
    let Some(config) = NetworkConfig::from_env(root).context("read the network configuration")?
    else {
        bail!("PEAPOD_NETWORK=none: there is no pod network to remove");
    };
    let removed = peapod_net::network::remove_bridge(&config)
        .with_context(|| format!("remove bridge {}", config.bridge))?;
    if !removed {
        bail!(
            "bridge {} still has pods plugged in: stop them first",
            config.bridge
        );
    }
    writeln!(
        std::io::stdout().lock(),
        "removed bridge {} and its guard table",
        config.bridge
    )?;
    Ok(())
}
