//! Rendering plans: Terraform-style text and a versioned JSON document.
//!
//! Text: drift first ("changed outside jaam"), then one block per change with
//! `+ ~ - -/+ +/-` and attribute-level `before -> after`. A multi-line string
//! prints as a heredoc (`<<-EOT … EOT`), and a changed one as a line diff
//! (through `similar`). A multi-line value jaam generated — an attribute of a
//! resource a `site` expanded into, such as its user data — prints as its
//! size, line count and digest unless [`TextOptions::full`] (`--full`); its
//! changes still print as a line diff. Unchanged attributes of an update are
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
    /// Print generated values in full instead of summarized.
    pub full: bool,
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

/// How many columns `text` takes on a terminal (ANSI colour codes take none).
fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut escape = false;
    for c in text.chars() {
        match (escape, c) {
            (false, '\x1b') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}

/// One attribute as text after `prefix` (`"      + "` in a plan, indentation
/// in `jaam show`): `name = value`; a multi-line string as a heredoc whose
/// body is indented four more than the prefix; a generated multi-line value
/// (unless `full`) as a summary.
pub fn attribute(
    prefix: &str,
    name: &str,
    width: usize,
    value: &Value,
    sensitive: bool,
    generated: bool,
    full: bool,
) -> String {
    if !sensitive && let Some(entries) = text_map(value) {
        return map_attribute(prefix, name, width, &entries, generated, full);
    }
    let text = match value {
        Value::String(text) if !sensitive && text.contains('\n') => text,
        _ => return format!("{prefix}{name:<width$} = {}\n", display(value, sensitive)),
    };
    if generated && !full {
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        return format!(
            "{prefix}{name:<width$} = (generated: {} bytes, {} lines, sha256 {}…; --full shows it)\n",
            text.len(),
            text.lines().count(),
            &digest[..12]
        );
    }
    let indent = " ".repeat(visible_width(prefix));
    let mut out = format!("{prefix}{name:<width$} = <<-EOT\n");
    for line in text.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{indent}    {line}");
        }
    }
    let _ = writeln!(out, "{indent}EOT");
    out
}

/// The entries of a map holding multi-line text (an instance's `files`),
/// which print one by one; `None` for any other value.
fn text_map(value: &Value) -> Option<Vec<(&String, &Value)>> {
    match value {
        Value::Map(map)
            if map
                .values()
                .any(|v| matches!(v, Value::String(text) if text.contains('\n'))) =>
        {
            Some(map.iter().collect())
        }
        _ => None,
    }
}

/// A map of multi-line text: a summary when generated (unless `full`), else
/// `name = {` and each entry as its own attribute.
fn map_attribute(
    prefix: &str,
    name: &str,
    width: usize,
    entries: &[(&String, &Value)],
    generated: bool,
    full: bool,
) -> String {
    if generated && !full {
        use sha2::Digest as _;
        let mut digest = sha2::Sha256::new();
        let mut bytes = 0;
        for (key, value) in entries {
            let text = value.as_str().map_or_else(|| value.render(), str::to_owned);
            bytes += text.len();
            digest.update(key.as_bytes());
            digest.update([0]);
            digest.update(text.as_bytes());
        }
        return format!(
            "{prefix}{name:<width$} = (generated: {} entries, {bytes} bytes, sha256 {}…; --full shows them)\n",
            entries.len(),
            &hex::encode(digest.finalize())[..12]
        );
    }
    let indent = " ".repeat(visible_width(prefix));
    let mut out = format!("{prefix}{name:<width$} = {{\n");
    let inner = format!("{indent}    ");
    let key_width = entries
        .iter()
        .map(|(key, _)| key.len() + 2)
        .max()
        .unwrap_or(0);
    for (key, value) in entries {
        out.push_str(&attribute(
            &inner,
            &format!("{key:?}"),
            key_width,
            value,
            false,
            false,
            true,
        ));
    }
    let _ = writeln!(out, "{indent}}}");
    out
}

/// The changed entries of two maps of text, each as a line diff (or an
/// added or removed entry).
fn map_diff(
    out: &mut String,
    painter: &Painter,
    name: &str,
    before: &std::collections::BTreeMap<String, Value>,
    after: &std::collections::BTreeMap<String, Value>,
    forces: bool,
) {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let note = if forces { " # forces replacement" } else { "" };
    for key in keys {
        let entry = format!("{name}[{key:?}]");
        match (before.get(key), after.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(Value::String(a)), Some(Value::String(b))) => {
                multiline_diff(out, painter, &entry, a, b, forces);
            }
            (None, Some(value)) | (Some(value), None) => {
                let symbol = if before.contains_key(key) { "-" } else { "+" };
                let prefix = format!("      {} ", painter.symbol(symbol));
                out.push_str(&attribute(&prefix, &entry, 0, value, false, false, true));
            }
            (old, new) => {
                let text =
                    |value: Option<&Value>| value.map_or_else(|| "null".to_owned(), Value::render);
                let _ = writeln!(
                    out,
                    "      {} {entry} = {} -> {}{note}",
                    painter.symbol("~"),
                    text(old),
                    text(new)
                );
            }
        }
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

fn block(out: &mut String, painter: &Painter, change: &ResourceChange, drift: bool, full: bool) {
    let generated = change.addr.composite().is_some();
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
        Action::Create | Action::Delete => {
            let (symbol, attrs) = if change.action == Action::Create {
                ("+", after)
            } else {
                ("-", before)
            };
            let prefix = format!("      {} ", painter.symbol(symbol));
            for (name, value) in attrs.iter().filter(|(_, v)| !v.is_null()) {
                out.push_str(&attribute(
                    &prefix,
                    name,
                    width,
                    value,
                    is_sensitive(name),
                    generated,
                    full,
                ));
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
                    (Value::Map(a), Value::Map(b))
                        if !sensitive && (text_map(old).is_some() || text_map(new).is_some()) =>
                    {
                        map_diff(out, painter, name, a, b, forcing.contains(name));
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
            block(&mut out, &painter, change, true, options.full);
            out.push('\n');
        }
    }
    for note in &plan.notes {
        let _ = writeln!(out, "Note: {note}\n");
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
        block(&mut out, &painter, change, false, options.full);
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
    let mut out = serde_json::json!({
        "format_version": plan.format_version,
        "stack": plan.stack,
        "prior": plan.prior,
        "destroy": plan.destroy,
        "summary": plan.summary(),
        "drift": plan.drift.iter().map(redact).collect::<Vec<_>>(),
        "changes": plan.changes.iter().map(redact).collect::<Vec<_>>(),
        "deposed": plan.deposed.iter().map(redact).collect::<Vec<_>>(),
    });
    if !plan.notes.is_empty() {
        out["notes"] = serde_json::json!(plan.notes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::ResourceAddr;

    fn create(addr: &str, attributes: &[(&str, &str)]) -> ResourceChange {
        let addr: ResourceAddr = addr.parse().unwrap();
        ResourceChange {
            kind: addr.kind().to_owned(),
            addr,
            action: Action::Create,
            id: None,
            before: None,
            after: Some(
                attributes
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                    .collect(),
            ),
            dependencies: Vec::new(),
            sensitive: Vec::new(),
            reason: None,
        }
    }

    /// Issue 16, item 4: multi-line strings as heredocs; a generated value
    /// (of a resource a site expanded into) as a summary unless `--full`.
    #[test]
    fn multi_line_and_generated_values_should_render_like_terraform() {
        let script = "#!/bin/bash\necho one\n\necho two\n";
        let plan = Plan {
            format_version: super::super::FORMAT_VERSION,
            stack: "demo".into(),
            prior: None,
            lineage: uuid::Uuid::nil(),
            destroy: false,
            drift: Vec::new(),
            changes: vec![
                create(
                    "instance.web",
                    &[("instance_type", "t3.micro"), ("user_data", script)],
                ),
                create(
                    "site.blog.instance",
                    &[("instance_type", "t3.micro"), ("user_data", script)],
                ),
            ],
            deposed: Vec::new(),
            resolved_intents: Vec::new(),
            notes: Vec::new(),
        };
        insta::assert_snapshot!("plan_heredocs", text(&plan, TextOptions::default()));
        insta::assert_snapshot!(
            "plan_heredocs_full",
            text(
                &plan,
                TextOptions {
                    full: true,
                    ..TextOptions::default()
                }
            )
        );
        // `jaam show` prints state attributes through the same function.
        let value = Value::from(script);
        let shown: String = [false, true]
            .iter()
            .map(|full| attribute("    ", "user_data", 9, &value, false, true, *full))
            .collect();
        insta::assert_snapshot!("show_generated_and_full", shown);
        // Colour codes take no columns: the heredoc body lines up the same.
        let coloured = attribute(
            "      \x1b[32m+\x1b[0m ",
            "v",
            1,
            &value,
            false,
            false,
            false,
        );
        let plain = attribute("      + ", "v", 1, &value, false, false, false);
        assert_eq!(coloured.lines().nth(1), plain.lines().nth(1));
        // Secrets never print, multi-line or not.
        assert!(
            attribute("    ", "key", 3, &Value::from("a\nb"), true, false, true)
                .contains("(sensitive value)")
        );
    }
    /// Issue 13: an instance's `files` (path → content) print entry by entry:
    /// summarized when generated, each file a heredoc with `--full` or when
    /// written by hand, and an update as one line diff per changed file.
    #[test]
    fn maps_of_files_should_render_entry_by_entry() {
        let files = |env: &str| {
            Value::Map(
                [
                    (
                        "/opt/bin/deploy".to_owned(),
                        Value::from("#!/bin/bash\necho deploy\n"),
                    ),
                    ("/srv/app/env".to_owned(), Value::from(env)),
                    ("/srv/app/port".to_owned(), Value::from("3000")),
                ]
                .into(),
            )
        };
        let mut plain = create("instance.web", &[("instance_type", "t3.micro")]);
        plain
            .after
            .as_mut()
            .unwrap()
            .insert("files".into(), files("TITLE='one'\n"));
        let mut site = plain.clone();
        site.addr = "site.blog.instance".parse().unwrap();
        let before: Attrs = [("files".to_owned(), files("TITLE='one'\nKEPT=1\n"))].into();
        let mut after = before.clone();
        after.insert("files".into(), files("TITLE='two'\nKEPT=1\n"));
        if let Some(Value::Map(map)) = after.get_mut("files") {
            map.remove("/srv/app/port");
            map.insert("/srv/app/new.conf".into(), Value::from("a\nb\n"));
        }
        let update = ResourceChange {
            action: Action::Update {
                changed: vec!["files".into()],
            },
            id: Some("i-1".into()),
            before: Some(before),
            after: Some(after),
            ..site.clone()
        };
        let plan = Plan {
            format_version: super::super::FORMAT_VERSION,
            stack: "demo".into(),
            prior: None,
            lineage: uuid::Uuid::nil(),
            destroy: false,
            drift: Vec::new(),
            changes: vec![plain, site, update],
            deposed: Vec::new(),
            resolved_intents: Vec::new(),
            notes: Vec::new(),
        };
        let rendered = text(&plan, TextOptions::default());
        assert!(!rendered.contains("\\n"), "no escaped text: {rendered}");
        insta::assert_snapshot!("plan_files", rendered);
    }
}
