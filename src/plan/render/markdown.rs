//! The plan as a pull-request comment (GitHub-flavoured Markdown): a heading, a
//! blocked banner, a summary table (phase × counts), one collapsed `<details>` per
//! object with a `diff` block, flags as bold warnings.
//!
//! Owns: the Markdown layout and keeping the comment under the size forges accept.
//! Must not: post anything.

use super::{marker, show, summary_line, verb, LineKind, Shown};
use crate::plan::model::{Plan, Step, Summary};
use std::fmt::Write;

/// How to render Markdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkdownOptions {
    /// Stop adding object details beyond this many bytes (GitHub refuses comments
    /// over 65,536 characters); the summary and banner are always shown.
    pub max_len: usize,
}

impl Default for MarkdownOptions {
    fn default() -> Self {
        MarkdownOptions { max_len: 60_000 }
    }
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A code fence longer than any backtick run inside `body`.
fn fence(body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat(longest.max(2) + 1)
}

/// Renders `plan` as Markdown for a pull-request comment. Ends with a newline.
pub fn markdown(plan: &Plan, opts: &MarkdownOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## lxd-gitops plan for `{}`\n", plan.cluster);
    if let Some(b) = &plan.blocked {
        let _ = writeln!(
            out,
            "> [!CAUTION]\n> **Blocked:** {b}\n>\n> Nothing in this plan will be applied.\n"
        );
    }
    if plan.is_empty() {
        let _ = writeln!(out, "{}", summary_line(plan));
    } else {
        let _ = writeln!(out, "**{}**\n", summary_line(plan));
        let _ = writeln!(out, "| Phase | Create | Update | Delete | Other |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        let mut total = Summary::default();
        for phase in &plan.phases {
            let c = phase.counts();
            total.create += c.create;
            total.update += c.update;
            total.delete += c.delete;
            total.other += c.other;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                phase.kind.title(),
                c.create,
                c.update,
                c.delete,
                c.other
            );
        }
        let _ = writeln!(
            out,
            "| **Total** | **{}** | **{}** | **{}** | **{}** |",
            total.create, total.update, total.delete, total.other
        );
        let held = plan.steps().filter(|s| !s.runs()).count();
        if held > 0 {
            let _ = writeln!(
                out,
                "\n**⚠ {held} step(s) are held or blocked and will be skipped.**"
            );
        }
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(
            out,
            "\n<details><summary>{} warning(s)</summary>\n",
            plan.warnings.len()
        );
        for w in &plan.warnings {
            let _ = writeln!(out, "- {w}");
        }
        let _ = writeln!(out, "\n</details>");
    }
    let mut omitted = 0usize;
    for phase in &plan.phases {
        let groups = by_object(&phase.steps);
        let mut section = format!("\n### {}\n", phase.kind.title());
        let mut shown = 0usize;
        for group in &groups {
            let block = object_details(group);
            if out.len() + section.len() + block.len() > opts.max_len {
                omitted += 1;
                continue;
            }
            section.push_str(&block);
            shown += 1;
        }
        if shown > 0 {
            out.push_str(&section);
        }
    }
    if omitted > 0 {
        let _ = writeln!(
            out,
            "\n_{omitted} more object(s) not shown to keep this comment short; see the JSON plan (`lxd-gitops plan --format json`)._"
        );
    }
    out
}

/// Consecutive steps on the same object, grouped.
fn by_object(steps: &[Step]) -> Vec<&[Step]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=steps.len() {
        if i == steps.len() || steps[i].object != steps[start].object {
            groups.push(&steps[start..i]);
            start = i;
        }
    }
    groups
}

fn object_details(steps: &[Step]) -> String {
    let mut out = String::new();
    let actions: Vec<String> = steps
        .iter()
        .map(|s| format!("{} {}", marker(s.action), verb(s.action)))
        .collect();
    let skipped = steps.iter().any(|s| !s.runs());
    let _ = writeln!(
        out,
        "\n<details><summary><code>{}</code> <b>{}</b>{}</summary>\n",
        html(&actions.join(", ")),
        html(&steps[0].object.to_string()),
        if skipped { " ⚠ skipped" } else { "" }
    );
    for s in steps {
        let _ = writeln!(
            out,
            "`{} {}` — {}\n",
            marker(s.action),
            verb(s.action),
            s.reason
        );
        for f in &s.flags {
            let icon = if f.skips_step() { "⛔" } else { "⚠" };
            let _ = writeln!(out, "**{icon} {}**\n", f.label());
        }
        let mut body = String::new();
        for c in &s.changes {
            match show(c) {
                Shown::Inline {
                    path,
                    before,
                    after,
                } => {
                    if before != "(none)" {
                        let _ = writeln!(body, "- {path}: {before}");
                    }
                    if after != "(none)" {
                        let _ = writeln!(body, "+ {path}: {after}");
                    }
                }
                Shown::Block { path, lines } => {
                    let _ = writeln!(body, "  {path}:");
                    for l in lines {
                        let _ = match l.kind {
                            LineKind::Hunk => writeln!(body, "{}", l.text),
                            LineKind::Same => writeln!(body, "    {}", l.text),
                            LineKind::Removed => writeln!(body, "-   {}", l.text),
                            LineKind::Added => writeln!(body, "+   {}", l.text),
                        };
                    }
                }
            }
        }
        if !body.is_empty() {
            let f = fence(&body);
            let _ = writeln!(out, "{f}diff\n{body}{f}\n");
        }
    }
    let _ = writeln!(out, "</details>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::render::fixture;

    #[test]
    fn snapshot() {
        insta::assert_snapshot!(markdown(&fixture::plan(), &MarkdownOptions::default()));
    }

    #[test]
    fn snapshot_no_changes() {
        insta::assert_snapshot!(markdown(&fixture::empty(), &MarkdownOptions::default()));
    }

    #[test]
    fn long_plans_are_cut_with_a_note() {
        let md = markdown(&fixture::plan(), &MarkdownOptions { max_len: 900 });
        assert!(md.len() < 1500, "{}", md.len());
        assert!(md.contains("more object(s) not shown"), "{md}");
        assert!(md.contains("| **Total** |"));
    }

    #[test]
    fn fences_outgrow_backticks_in_values() {
        assert_eq!(fence("a ``` b"), "````");
        assert_eq!(fence("plain"), "```");
    }
}
