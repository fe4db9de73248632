//! The live side: talking to LXD and reading what is there.
//!
//! Owns: LXD JSON ↔ model conversion (`convert`) and the live-state reader
//! (`live`). Must not: plan or hold policy.

pub mod convert;
pub mod identity;
pub mod live;
