//! Rendering plans: Terraform-style text and a versioned JSON document.
//!
//! Text: drift first ("changed outside jaam"), then one block per change with
//! `+ ~ - -/+ +/-` and attribute-level `before -> after`; multi-line strings are
//! shown as a line diff (through `similar`). Unchanged attributes of an update are
//! hidden and counted. Colour (ANSI) only when asked for; the text reads the
//! same without it. Sensitive values print as `(sensitive value)`.
//!
//! JSON: the [`Plan`] itself with sensitive values replaced by `"(sensitive)"`
//! and a `summary` object added; `format_version` is the schema version
//! (documented in `docs/plan-json.md`).

use std::fmt::Write;

use similar::{ChangeTag, TextDiff};

use super::{Action, Plan, ResourceChange};
use crate::value::{Attrs, Value};

/// Text rendering options.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextOptions {
    /// Use ANSI colours.
    pub colour: bool,
}

struct Painter {
    colour: bool,
}

impl Painter {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn symbol(&self, symbol: &str) -> String {
        let code = match symbol.trim() {
            "+" => "32",
            "~" => "33",
            "-" => "31",
            "-/+" | "+/-" => "35",
            _ => return symbol.to_owned(),
        };
        self.paint(code, symbol)
    }
}

fn display(value: &Value, sensitive: bool) -> String {
    if sensitive && !value.is_null() && !matches!(value, Value::Unknown(_)) {
        "(sensitive value)".to_owned()
    } else {
        value.render()
    }
}

fn heading(change: &ResourceChange, drift: bool) -> String {
    let addr = &change.addr;
    let verb = match (&change.action, drift) {
        (Action::Delete, true) => "has been deleted",
        (Action::Create, true) => "has been found",
        (_, true) => "has changed",
        (Action::Create, false) => "will be created",
        (Action::Update { .. }, false) => "will be updated in place",
        (Action::Replace { .. }, false) => "must be replaced",
        (Action::Delete, false) => "will be destroyed",
        (Action::NoOp, false) => "is unchanged",
    };
    match &change.reason {
        Some(reason) => format!("  # {addr} {verb} ({reason})"),
        None => format!("  # {addr} {verb}"),
    }
}

fn name_width(attrs: &[&Attrs]) -> usize {
    attrs
        .iter()
        .flat_map(|a| a.keys())
        .map(String::len)
        .max()
        .unwrap_or(0)
}

fn multiline_diff(
    out: &mut String,
    painter: &Painter,
    name: &str,
    before: &str,
    after: &str,
    forces: bool,
) {
    let note = if forces { " # forces replacement" } else { "" };
    let _ = writeln!(out, "      {} {name} = <<-EOT{note}", painter.symbol("~"));
    let diff = TextDiff::from_lines(before, after);
    for change in diff.iter_all_changes() {
        let line = change.value().trim_end_matches('\n');
        let _ = match change.tag() {
            ChangeTag::Equal => writeln!(out, "            {line}"),
            ChangeTag::Delete => writeln!(out, "          {} {line}", painter.symbol("-")),
            ChangeTag::Insert => writeln!(out, "          {} {line}", painter.symbol("+")),
        };
    }
    let _ = writeln!(out, "        EOT");
}

fn block(out: &mut String, painter: &Painter, change: &ResourceChange, drift: bool) {
    let _ = writeln!(out, "{}", heading(change, drift));
    let symbol = change.action.symbol();
    let _ = writeln!(
        out,
        "{} {} {{",
        painter.symbol(&format!("{symbol:>3}")),
        change.addr
    );
    let empty = Attrs::new();
    let before = change.before.as_ref().unwrap_or(&empty);
    let after = change.after.as_ref().unwrap_or(&empty);
    let width = name_width(&[before, after]);
    let is_sensitive = |name: &str| change.sensitive.iter().any(|s| s == name);
    match &change.action {
        Action::Create => {
            for (name, value) in after.iter().filter(|(_, v)| !v.is_null()) {
                let _ = writeln!(
                    out,
                    "      {} {name:<width$} = {}",
                    painter.symbol("+"),
                    display(value, is_sensitive(name))
                );
            }
        }
        Action::Delete => {
            for (name, value) in before.iter().filter(|(_, v)| !v.is_null()) {
                let _ = writeln!(
                    out,
                    "      {} {name:<width$} = {}",
                    painter.symbol("-"),
                    display(value, is_sensitive(name))
                );
            }
        }
        Action::NoOp => {}
        Action::Update { changed } | Action::Replace { changed, .. } => {
            let forcing: &[String] = match &change.action {
                Action::Replace { forcing, .. } => forcing,
                _ => &[],
            };
            let mut shown = changed.clone();
            if drift {
                shown = super::diff::changed_attributes(before, after);
            }
            for name in &shown {
                let old = before.get(name).unwrap_or(&Value::Null);
                let new = after.get(name).unwrap_or(&Value::Null);
                let sensitive = is_sensitive(name);
                match (old, new) {
                    (Value::String(a), Value::String(b))
                        if !sensitive && (a.contains('\n') || b.contains('\n')) =>
                    {
                        multiline_diff(out, painter, name, a, b, forcing.contains(name));
                    }
                    _ => {
                        let note = if forcing.contains(name) {
                            " # forces replacement"
                        } else {
                            ""
                        };
                        let _ = writeln!(
                            out,
                            "      {} {name:<width$} = {} -> {}{note}",
                            painter.symbol("~"),
                            display(old, sensitive),
                            display(new, sensitive)
                        );
                    }
                }
            }
            if !drift {
                // Computed attributes a replacement will re-assign.
                if matches!(change.action, Action::Replace { .. }) {
                    for (name, value) in after
                        .iter()
                        .filter(|(n, v)| matches!(v, Value::Unknown(_)) && !shown.contains(n))
                    {
                        let _ = writeln!(
                            out,
                            "      {} {name:<width$} = {}",
                            painter.symbol("~"),
                            value.render()
                        );
                    }
                }
                let hidden = after
                    .iter()
                    .filter(|(n, v)| {
                        !shown.contains(n) && !v.is_null() && !matches!(v, Value::Unknown(_))
                    })
                    .count();
                if hidden > 0 {
                    let _ = writeln!(
                        out,
                        "        # ({hidden} unchanged attribute{} hidden)",
                        if hidden == 1 { "" } else { "s" }
                    );
                }
            }
        }
    }
    let _ = writeln!(out, "    }}");
}

/// Renders `plan` as text.
pub fn text(plan: &Plan, options: TextOptions) -> String {
    let painter = Painter {
        colour: options.colour,
    };
    let mut out = String::new();
    if !plan.drift.is_empty() {
        let _ = writeln!(out, "Note: objects have changed outside of jaam\n");
        let _ = writeln!(
            out,
            "jaam detected the following changes made outside of jaam since the last apply:\n"
        );
        for change in &plan.drift {
            block(&mut out, &painter, change, true);
            out.push('\n');
        }
    }
    if !plan.has_changes() {
        let _ = writeln!(
            out,
            "No changes. Your infrastructure matches the configuration."
        );
        return out;
    }
    let _ = writeln!(out, "jaam will perform the following actions:\n");
    for change in plan
        .changes
        .iter()
        .filter(|c| c.action.is_change())
        .chain(&plan.deposed)
    {
        block(&mut out, &painter, change, false);
        out.push('\n');
    }
    let summary = plan.summary();
    let _ = writeln!(
        out,
        "Plan: {} to add, {} to change, {} to destroy.",
        summary.add, summary.change, summary.destroy
    );
    out
}

fn redact(change: &ResourceChange) -> serde_json::Value {
    let mut value = serde_json::to_value(change).expect("changes serialize");
    for side in ["before", "after"] {
        if let Some(serde_json::Value::Object(attrs)) = value.get_mut(side) {
            for name in &change.sensitive {
                if let Some(slot) = attrs.get_mut(name)
                    && !slot.is_null()
                {
                    *slot = serde_json::Value::String("(sensitive)".into());
                }
            }
        }
    }
    value
}

/// Renders `plan` as the documented JSON document (sensitive values redacted).
pub fn json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "format_version": plan.format_version,
        "stack": plan.stack,
        "prior": plan.prior,
        "destroy": plan.destroy,
        "summary": plan.summary(),
        "drift": plan.drift.iter().map(redact).collect::<Vec<_>>(),
        "changes": plan.changes.iter().map(redact).collect::<Vec<_>>(),
        "deposed": plan.deposed.iter().map(redact).collect::<Vec<_>>(),
    })
}
