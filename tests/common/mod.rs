//! Helpers shared by the end-to-end tests. Everything here runs real LXD:
//! `lab` is the shared 3-member cluster plus image server (scripts/lab),
//! `standalone` starts a private daemon for tests that need one of their own.
#![allow(dead_code)]

pub mod lab;
pub mod standalone;
