//! Helpers shared by the end-to-end tests. Everything here runs real LXD.
#![allow(dead_code)]

pub mod standalone;
