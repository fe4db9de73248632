//! The desired side: a fleet repository on disk, loaded and validated.
//!
//! Owns: YAML with positions (`yaml`), the JSON Schemas (`schema`), loading into the
//! model (`load`), rules between objects (`semantic`), cron lines (`cron`) and the
//! diagnostics all of them report (`diagnostic`). Must not: talk to LXD or git.
//! An invalid repository never yields a `DesiredState`: callers get every problem
//! at once, sorted, and nothing is applied.

pub mod cron;
pub mod diagnostic;
pub mod export;
pub mod load;
pub mod schema;
pub mod semantic;
pub mod yaml;

pub use diagnostic::Diagnostic;
pub use load::LoadedFleet;

use std::path::Path;

/// Loads and validates the repository at `root`. Either the whole fleet is valid,
/// or every problem found is returned, sorted by file, line and column.
pub fn load_and_validate(root: &Path) -> Result<LoadedFleet, Vec<Diagnostic>> {
    let (fleet, mut diags) = load::load_dir(root);
    diags.extend(semantic::check(&fleet));
    if diags.is_empty() && fleet.desired.clusters.is_empty() {
        diags.push(Diagnostic {
            file: ".".into(),
            line: 1,
            column: 1,
            object: None,
            path: String::new(),
            rule: diagnostic::Rule::Kind,
            message: format!("no `kind: Cluster` document found under {}", root.display()),
            hint: Some("a fleet repository describes at least one Cluster".into()),
        });
    }
    if diags.is_empty() {
        Ok(fleet)
    } else {
        Err(diagnostic::finish(diags))
    }
}
