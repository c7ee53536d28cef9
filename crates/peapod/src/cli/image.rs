//! `peapod image`: load archives into the local image store, pull from registries (`pull.rs`),
//! list and remove images.
//! The output mimics `docker load` / `docker images` / `docker rmi`, so it reads familiar.

use std::io::Write;
use std::path::{Path, PathBuf};

use peapod_runtime::image::{ImageError, ImageStore, ImageSummary};

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// load an OCI or docker-save archive
    Load {
        /// the archive (`.tar`, as written by `docker save` or an OCI image layout)
        #[arg(short = 'i', long = "input")]
        input: PathBuf,
        /// name to give the image instead of the one in the archive
        #[arg(long)]
        name: Option<String>,
    },
    /// pull an image from a registry
    Pull(super::pull::PullArgs),
    /// list images
    Ls,
    /// remove the images no container (running or exited, not yet removed) uses
    Prune,
    /// remove images
    Rm {
        /// image names, e.g. `busybox` or `docker.io/library/python:3`
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Runs one `peapod image` command against the store at `<root>/images`.
pub fn run(cmd: ImageCommand, root: &Path) -> anyhow::Result<()> {
    let store = ImageStore::open(&root.join("images"))?;
    let mut out = std::io::stdout().lock();
    match cmd {
        ImageCommand::Load { input, name } => {
            let loaded = store
                .load(&input, name.as_deref())
                .map_err(|e| with_archive(e, &input))?;
            for image in loaded {
                writeln!(out, "Loaded image: {}", image.name)?;
            }
        }
        ImageCommand::Pull(args) => super::pull::run(args, &store, &mut out)?,
        ImageCommand::Ls => {
            let images = store.list()?;
            out.write_all(table(&images).as_bytes())?;
        }
        ImageCommand::Prune => {
            let in_use = peapod_runtime::image::gc::layers_in_use(&root.join("containers"))?;
            let removed = store.prune(&in_use)?;
            for image in &removed {
                writeln!(out, "Deleted: {}", image.name)?;
            }
            let freed: u64 = removed.iter().map(|i| i.size).sum();
            writeln!(
                out,
                "Removed {} images ({} at most)",
                removed.len(),
                human_size(freed)
            )?;
        }
        ImageCommand::Rm { names } => {
            for name in names {
                let removed = store.remove(&name)?;
                writeln!(out, "Untagged: {}", removed.name)?;
            }
        }
    }
    Ok(())
}

/// Names the archive once: errors about its content already start with it.
fn with_archive(error: ImageError, input: &Path) -> anyhow::Error {
    if error.archive().is_some() {
        error.into()
    } else {
        anyhow::Error::new(error).context(input.display().to_string())
    }
}

/// `NAME  ID  SIZE` columns, the name column as wide as the longest name.
fn table(images: &[ImageSummary]) -> String {
    let width = images
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut text = format!("{:width$}  {:12}  {}\n", "NAME", "ID", "SIZE");
    for image in images {
        let id = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
        let short = id.get(..12).unwrap_or(id);
        let size = human_size(image.size);
        text.push_str(&format!("{:width$}  {short:12}  {size}\n", image.name));
    }
    text
}

/// Decimal units, as `docker images` prints them: 1.04MB, 14kB, 512B.
pub(super) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else if value < 10.0 {
        format!("{value:.2}{}", UNITS[unit])
    } else if value < 100.0 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        let cases = [
            (0, "0B"),
            (999, "999B"),
            (1000, "1.00kB"),
            (14_039, "14.0kB"),
            (1_044_480, "1.04MB"),
            (123_456_789, "123MB"),
            (5_000_000_000_000_000, "5000TB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(human_size(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn table_columns() {
        let images = [ImageSummary {
            name: "docker.io/library/busybox:latest".to_owned(),
            id: format!("sha256:{}", "ab".repeat(32)),
            size: 1_044_480,
            source: peapod_runtime::image::ImageSource::Loaded,
        }];
        let want = "NAME                              ID            SIZE\n\
                    docker.io/library/busybox:latest  abababababab  1.04MB\n";
        assert_eq!(table(&images), want);
        assert_eq!(table(&[]), "NAME  ID            SIZE\n");
    }
}
