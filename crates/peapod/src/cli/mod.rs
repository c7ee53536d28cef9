//! One file per subcommand.

pub mod image;
pub mod logging;
pub mod manifest;
pub mod network;
pub mod pull;
pub mod run;
pub mod serve;
