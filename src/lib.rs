//! lxd-gitops: a GitOps reconciler for LXD clusters.
//!
//! The flow, one direction: `fleet` (desired state from git) and `lxd` (live state)
//! feed the pure `plan`, which `apply` executes; `git` fetches sources and writes
//! audit commits; `serve` runs the loop. See ARCHITECTURE.md.

pub mod apply;
pub mod fleet;
pub mod git;
pub mod lxd;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod run;
pub mod serve;
pub mod snap;
