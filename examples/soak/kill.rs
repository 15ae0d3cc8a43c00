//! Peer-death stress (placeholder).

use asyncfutex::BackendKind;

use crate::Options;

/// Runs the peer-death stress.
pub fn run(_opts: &Options, _backend: BackendKind) -> Result<(), String> {
    Err("kill mode not implemented yet".to_owned())
}
