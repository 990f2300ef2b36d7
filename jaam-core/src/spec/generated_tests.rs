//! Generated input for the spec loader (issue 11, item 10): arbitrary bytes,
//! YAML-shaped noise and structured documents with anchors, aliases, deep
//! nesting and duplicate keys. The loader must answer every one with a value
//! or an error — no panic, no stack overflow, no unbounded memory (the caps in
//! `yaml.rs` bound the tree).
//!
//! CI runs a bounded count; a longer run is
//! `JAAM_GENERATED_SECONDS=600 cargo test -p jaam-core --no-default-features --release spec::generated_tests -- --nocapture`,
//! which prints how many inputs it tried and the peak RSS (README, "Spec parser limits").

use std::path::PathBuf;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::testing::FakeProvider;

fn registry() -> Registry {
    crate::testing::registry(&[
        Arc::new(FakeProvider::new("fake")),
        Arc::new(FakeProvider::new("other")),
    ])
}

const ALPHABET: &[u8] = b"ab.-_:, \n\n  []{}&*!|>'\"#%@`?$\\\t01~";

fn noise(rng: &mut StdRng) -> String {
    let len = rng.random_range(0..400);
    (0..len)
        .map(|_| {
            if rng.random_bool(0.02) {
                char::from(rng.random::<u8>())
            } else {
                char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])
            }
        })
        .collect()
}

fn scalar(rng: &mut StdRng) -> String {
    match rng.random_range(0..8) {
        0 => "null".into(),
        1 => rng.random::<i64>().to_string(),
        2 => "\"${fake.a.id}\"".into(),
        3 => "${env.SET}".into(),
        4 => "'quoted: it''s'".into(),
        5 => "|\n  block\n  text".into(),
        6 => "[1, [2, {a: b}]]".into(),
        _ => "fake.a".into(),
    }
}

/// A structured document: resources with nested values, anchors and aliases.
fn structured(rng: &mut StdRng) -> String {
    let mut out = String::new();
    let mut anchors = 0;
    let depth_limit = if rng.random_bool(0.1) { 200 } else { 6 };
    fn value(rng: &mut StdRng, depth: usize, limit: usize, anchors: &mut usize, out: &mut String) {
        let indent = "  ".repeat(depth + 1);
        if depth >= limit || rng.random_bool(0.4) {
            if *anchors > 0 && rng.random_bool(0.3) {
                out.push_str(&format!(" *a{}\n", rng.random_range(0..*anchors)));
            } else {
                out.push_str(&format!(
                    " {}\n",
                    scalar(rng).replace('\n', &format!("\n{indent}"))
                ));
            }
            return;
        }
        let anchor = if rng.random_bool(0.3) {
            *anchors += 1;
            format!(" &a{}", *anchors - 1)
        } else {
            String::new()
        };
        out.push_str(&format!("{anchor}\n"));
        // Wide near the top, a single path below (deep documents stay small).
        let children = if depth < 5 { rng.random_range(1..5) } else { 1 };
        for n in 0..children {
            if rng.random_bool(0.5) {
                out.push_str(&format!("{indent}- "));
                out.push_str("x:");
            } else {
                let key = if rng.random_bool(0.1) { 0 } else { n };
                out.push_str(&format!("{indent}k{key}:"));
            }
            value(rng, depth + 1, limit, anchors, out);
        }
    }
    for n in 0..rng.random_range(1..6) {
        let kind = ["fake", "other", "site", "nope", "stack"][rng.random_range(0..5)];
        out.push_str(&format!(
            "{kind}.r{}:",
            if rng.random_bool(0.1) { 0 } else { n }
        ));
        value(rng, 0, depth_limit, &mut anchors, &mut out);
    }
    out
}

/// "Billion laughs" with a random fan-out and depth, or flow nesting.
fn explosive(rng: &mut StdRng) -> String {
    if rng.random_bool(0.5) {
        let depth = rng.random_range(10..5_000);
        return format!(
            "fake.a:\n  name: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
    }
    let fan = rng.random_range(2..12);
    let mut out = "x0: &l0 [lol]\n".to_owned();
    for level in 1..rng.random_range(3..12) {
        let refs = vec![format!("*l{}", level - 1); fan].join(", ");
        out.push_str(&format!("x{level}: &l{level} [{refs}]\n"));
    }
    out.push_str("fake.a:\n  name: *l1\n");
    out
}

fn check(text: String) {
    let sources = vec![(PathBuf::from("gen.yaml"), text)];
    let _ = load_sources(&sources, &registry(), &|name| {
        (name == "SET").then(|| "value".to_owned())
    });
}

fn run(cases: u64, seconds: Option<u64>, seed: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = seconds.map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    let mut tried = 0;
    loop {
        let text = match rng.random_range(0..3) {
            0 => noise(&mut rng),
            1 => structured(&mut rng),
            _ => explosive(&mut rng),
        };
        check(text);
        tried += 1;
        let done = match deadline {
            Some(deadline) => std::time::Instant::now() >= deadline,
            None => tried >= cases,
        };
        if done {
            return tried;
        }
    }
}

fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn generated_specs_should_load_or_fail_cleanly() {
    let seconds = std::env::var("JAAM_GENERATED_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let seed = std::env::var("JAAM_GENERATED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let tried = run(1_500, seconds, seed);
    println!(
        "generated spec inputs: {tried} tried (seed {seed}), peak RSS {} kB",
        peak_rss_kb().unwrap_or_default()
    );
}

#[test]
fn a_billion_laughs_should_be_an_error_not_a_billion_nodes() {
    let text = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
fake.a: {name: *i}
";
    let sources = vec![(PathBuf::from("laughs.yaml"), text.to_owned())];
    let error = load_sources(&sources, &registry(), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("more than 200000 YAML nodes"), "{error}");
    assert!(error.contains("laughs.yaml:"), "{error}");
}

#[test]
fn deep_nesting_and_duplicate_keys_should_be_errors_naming_places() {
    // Block nesting: the loader's own limit.
    let mut deep = String::from("fake.a:\n");
    for level in 1..200 {
        deep.push_str(&format!("{}k:\n", "  ".repeat(level)));
    }
    let sources = vec![(PathBuf::from("deep.yaml"), deep)];
    let error = load_sources(&sources, &registry(), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("deep.yaml:"), "{error}");
    assert!(error.contains("nested more than 64 deep"), "{error}");
    // Flow nesting: the parser's recursion limit answers first; an error either way.
    let flow = format!(
        "fake.a:\n  name: {}x{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let sources = vec![(PathBuf::from("flow.yaml"), flow)];
    let error = load_sources(&sources, &registry(), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("flow.yaml:2:")
            && (error.contains("nested more than 64 deep") || error.contains("recursion limit")),
        "{error}"
    );

    let twice = "fake.a:\n  name: a\n  name: b\n";
    let sources = vec![(PathBuf::from("twice.yaml"), twice.to_owned())];
    let error = load_sources(&sources, &registry(), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("twice.yaml:3:3"), "{error}");
    assert!(
        error.contains("duplicate key `name`, first written at line 2 column 3"),
        "{error}"
    );
}
