//! The snap side of a member: LXD's snap settings and channel, through snapd.
//!
//! Owns: the snapd REST client (`client`), how to reach a member's snapd
//! (`transport`: local socket or SSH-forwarded socket), what a snap key needs to
//! take effect and how channels order (`policy`, pure), the record of keys written
//! but not yet in effect (`pending`), and a protocol-faithful stand-in snapd for
//! tests and demos where snapd cannot run (`standin`).
//! Must not: plan or order work across members (the planner and executor do: snap
//! settings are applied rolling, one member at a time), reload daemons or reboot
//! hosts on its own.

pub mod client;
pub mod pending;
pub mod policy;
pub mod standin;
pub mod transport;

pub use client::{Change, ChangeId, ChangeStatus, SnapError, SnapInfo, SnapdClient, SnapdErrorKind};
pub use pending::{PendingKey, PendingStore};
pub use policy::{effect_of, is_downgrade, KeyEffect, Needs};
pub use transport::{Endpoint, SshTarget, Transport, TransportError};
