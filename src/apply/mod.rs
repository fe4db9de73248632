//! The executor: turning a reviewed plan into LXD requests, in order.
//!
//! Owns: request shapes per kind (`requests`). Must not: diff (the planner does).

pub mod conflict;
pub mod engine;
pub mod executor;
pub mod lxd_api;
pub mod requests;
pub mod snap;
