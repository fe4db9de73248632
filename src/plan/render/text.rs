//! The plan for a terminal: `+ create`, `~ update`, `- delete`, `> other` markers,
//! per-field `before → after`, unified diffs for multi-line values, ANSI colours
//! only when asked.
//!
//! Owns: the terminal layout. Must not: decide whether to colour (the caller knows
//! whether stdout is a terminal and what `NO_COLOR` says) or write anywhere.

use super::{marker, show, summary_line, verb, LineKind, Shown};
use crate::plan::model::{Action, Plan};
use std::fmt::Write;

/// How to render text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// Emit ANSI colour codes.
    pub color: bool,
}

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn action(&self, a: Action, s: &str) -> String {
        let code = match a {
            Action::Create => "32",
            Action::Update => "33",
            Action::Delete | Action::RemoveMember => "31",
            _ => "36",
        };
        self.wrap(code, s)
    }
}

/// Renders `plan` for a terminal. Ends with a newline.
pub fn text(plan: &Plan, opts: &TextOptions) -> String {
    let p = Paint { on: opts.color };
    let mut out = String::new();
    if let Some(b) = &plan.blocked {
        let _ = writeln!(out, "{}", p.wrap("1;31", &format!("BLOCKED: {b}")));
        let _ = writeln!(
            out,
            "{}",
            p.wrap("31", "Nothing in this plan will be applied.")
        );
        out.push('\n');
    }
    for phase in &plan.phases {
        let _ = writeln!(
            out,
            "{}",
            p.wrap("1", &format!("── {} ──", phase.kind.title()))
        );
        for step in &phase.steps {
            let head = format!("{} {}", marker(step.action), verb(step.action));
            let _ = writeln!(
                out,
                "{} {}",
                p.action(step.action, &head),
                p.wrap("1", &step.object.to_string())
            );
            let _ = writeln!(out, "    {}", step.reason);
            for f in &step.flags {
                let (mark, code) = if f.skips_step() {
                    ("!!", "1;31")
                } else {
                    ("!", "1;33")
                };
                let line = format!("{mark} {}", f.label().to_uppercase_first());
                let _ = writeln!(out, "    {}", p.wrap(code, &line));
            }
            let creates = matches!(step.action, Action::Create | Action::Join);
            for c in &step.changes {
                match show(c) {
                    Shown::Inline { path, after, .. } if creates => {
                        let _ = writeln!(out, "    {path}: {}", p.wrap("32", &after));
                    }
                    Shown::Inline {
                        path,
                        before,
                        after,
                    } => {
                        let _ = writeln!(
                            out,
                            "    {path}: {} → {}",
                            p.wrap("31", &before),
                            p.wrap("32", &after)
                        );
                    }
                    Shown::Block { path, lines } => {
                        let _ = writeln!(out, "    {path}:");
                        for l in lines {
                            let (prefix, code) = match l.kind {
                                LineKind::Hunk => ("", "36"),
                                LineKind::Same => (" ", ""),
                                LineKind::Removed => ("-", "31"),
                                LineKind::Added => ("+", "32"),
                            };
                            let line = format!("{prefix}{}", l.text);
                            let line = if code.is_empty() {
                                line
                            } else {
                                p.wrap(code, &line)
                            };
                            let _ = writeln!(out, "      {line}");
                        }
                    }
                }
            }
            if !step.depends_on.is_empty() {
                let _ = writeln!(
                    out,
                    "    {}",
                    p.wrap("2", &format!("after: {}", step.depends_on.join(", ")))
                );
            }
        }
        out.push('\n');
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "{}", p.wrap("1;33", "Warnings:"));
        for w in &plan.warnings {
            let _ = writeln!(out, "  - {w}");
        }
        out.push('\n');
    }
    let held = plan.steps().filter(|s| !s.runs()).count();
    let _ = writeln!(out, "{}", p.wrap("1", &summary_line(plan)));
    if held > 0 {
        let _ = writeln!(
            out,
            "{}",
            p.wrap(
                "1;31",
                &format!("{held} step(s) are held or blocked and will be skipped (marked !!).")
            )
        );
    }
    if let Some(b) = &plan.blocked {
        let _ = writeln!(out, "{}", p.wrap("1;31", &format!("BLOCKED: {b}")));
    }
    out
}

trait UpperFirst {
    fn to_uppercase_first(&self) -> String;
}

impl UpperFirst for String {
    fn to_uppercase_first(&self) -> String {
        let mut c = self.chars();
        match c.next() {
            Some(f) => f.to_uppercase().chain(c).collect(),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::render::fixture;

    #[test]
    fn snapshot_plain() {
        insta::assert_snapshot!(text(&fixture::plan(), &TextOptions { color: false }));
    }

    #[test]
    fn snapshot_no_changes() {
        insta::assert_snapshot!(text(&fixture::empty(), &TextOptions::default()));
    }

    #[test]
    fn colour_only_when_asked() {
        assert!(!text(&fixture::plan(), &TextOptions { color: false }).contains('\x1b'));
        let coloured = text(&fixture::plan(), &TextOptions { color: true });
        assert!(coloured.contains("\x1b[32m+ create\x1b[0m"));
    }
}
