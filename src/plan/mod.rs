//! Planning: the pure step from (desired, live) to an ordered `Plan`, and the
//! renderers that print it.
//!
//! Owns: the plan data model (`model`), field comparison (`compare`), the planner
//! (`diff`) and rendering (`render`: text, Markdown, JSON). Must not: do IO, talk
//! to LXD or git, read the clock, or execute anything; `apply` runs plans.
//!
//! Reading order: `model` (what a plan is), then `diff::plan` (how it is made),
//! then `render`.

mod compare;
mod diff;
pub mod model;
pub mod render;

pub use diff::plan;
pub use model::{
    digest, Action, FieldChange, Flag, Phase, PhaseKind, Plan, PlanFormatError, Step, Summary,
    PLAN_FORMAT_VERSION,
};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
