//! Logging setup: `tracing` to stderr, filtered by `PEAPOD_LOG` (default `warn`).

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("PEAPOD_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logging into a file of its own (for the monitor process).
pub fn init_file(path: &std::path::Path) {
    if let Some(subscriber) = file_subscriber(path) {
        let _ = tracing::subscriber::set_global_default(subscriber);
    }
}

/// Logging into a file of its own for this thread, over the process's (a monitor forked from
/// `peapod run`, whose own logging it inherited). Lasts as long as the guard.
pub fn init_file_for_thread(path: &std::path::Path) -> Option<tracing::subscriber::DefaultGuard> {
    file_subscriber(path).map(tracing::subscriber::set_default)
}

fn file_subscriber(path: &std::path::Path) -> Option<impl tracing::Subscriber + Send + Sync> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok()?;
    // A fixed level, not an EnvFilter: parsing filters costs resident memory in every monitor.
    let level = match std::env::var("PEAPOD_LOG").as_deref() {
        Ok("debug") => tracing::Level::DEBUG,
        Ok("info") => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    };
    Some(
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .finish(),
    )
}
