//! The plan for machines: the `Plan` serialized as pretty JSON, the format of
//! `plan --out plan.json` and `apply --plan plan.json` (see `docs/plan-json.md`).
//!
//! Owns: nothing beyond delegating to `Plan::to_json`, so that there is exactly
//! one JSON form. Must not: reshape the plan (consumers rely on the documented form).

use crate::plan::model::Plan;

/// Renders `plan` as pretty JSON. Ends with a newline.
pub fn json(plan: &Plan) -> String {
    let mut s = plan.to_json();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::render::fixture;

    #[test]
    fn snapshot() {
        insta::assert_snapshot!(json(&fixture::plan()));
    }

    #[test]
    fn round_trips() {
        let p = fixture::plan();
        assert_eq!(Plan::from_json(&json(&p)).unwrap(), p);
    }
}
