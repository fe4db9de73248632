//! The parts of lxd-gitops the fuzz targets exercise, compiled from the main
//! crate's own source files (see Cargo.toml for why not the whole crate). The
//! module paths are the main crate's, so `crate::model` inside `fleet` resolves
//! as it does there.

#![allow(dead_code, unused_imports)]

#[path = "../../src/model/mod.rs"]
pub mod model;

#[path = "../../src/fleet/mod.rs"]
pub mod fleet;

#[path = "../../src/serve/webhook.rs"]
pub mod webhook;
