//! Spec loading: every error case names file:line:col and the address, and all
//! errors are reported together.

use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::testing::FakeProvider;

fn registry() -> Registry {
    crate::testing::registry(&[
        Arc::new(FakeProvider::new("fake")),
        Arc::new(FakeProvider::new("other")),
    ])
}

fn load(files: &[(&str, &str)]) -> Result<Config> {
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
        .collect();
    load_sources(&sources, &registry(), &|name| {
        (name == "SET").then(|| "value".to_owned())
    })
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    match load(files) {
        Ok(_) => panic!("expected errors"),
        Err(Error::Invalid(diagnostics)) => diagnostics.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("unexpected {other}"),
    }
}

#[test]
fn valid_specs_should_load_with_references_and_depends_on() {
    let config = load(&[(
        "a.yaml",
        "stack:\n  name: s\n  drift: report\nfake.a:\n  name: a\nfake.b:\n  name: b-${fake.a.id}\n  value: ${env.SET}\n  depends_on: [other.c]\n",
    ), ("b.yml", "other.c:\n  name: c\n")])
    .unwrap();
    assert_eq!(config.stack().name.as_deref(), Some("s"));
    assert_eq!(config.stack().drift, DriftPolicy::Report);
    let b = &config.resources()[&"fake.b".parse().unwrap()];
    let deps: Vec<String> = b.dependencies().iter().map(ToString::to_string).collect();
    assert_eq!(deps, ["fake.a", "other.c"]);
}

#[test]
fn yaml_syntax_error_should_name_file_line_and_column() {
    let errors = errors(&[(
        "bad.yaml",
        "fake.a:\n  name: [unclosed\nfake.b:\n  name: b\n",
    )]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("bad.yaml:3:"), "{}", errors[0]);
    assert!(errors[0].contains("invalid YAML"), "{}", errors[0]);
}

#[test]
fn unknown_kind_should_suggest_the_closest() {
    let errors = errors(&[("k.yaml", "fakes.a:\n  name: a\n")]);
    assert_eq!(
        errors,
        ["k.yaml:1:1: `fakes.a`: unknown resource kind `fakes`\n\nhint: did you mean `fake`?"]
    );
}

#[test]
fn unknown_field_should_say_did_you_mean() {
    let errors = errors(&[("f.yaml", "fake.a:\n  name: a\n  valeu: x\n")]);
    assert_eq!(
        errors,
        ["f.yaml:3:3: `fake.a`: unknown field `valeu`\n\nhint: did you mean `value`?"]
    );
}

#[test]
fn wrong_type_should_name_expected_and_found() {
    let errors = errors(&[("t.yaml", "fake.a:\n  name: a\n  size: twelve\n")]);
    assert_eq!(
        errors,
        ["t.yaml:3:9: `fake.a`: wrong type for `size`: expected integer, found string"]
    );
}

#[test]
fn duplicate_address_across_files_should_name_both_places() {
    let errors = errors(&[
        ("one.yaml", "fake.a:\n  name: a\n"),
        ("two.yaml", "\n\nfake.a:\n  name: a\n"),
    ]);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(
            "two.yaml:3:1: `fake.a`: duplicate resource address, first declared at one.yaml:1:1"
        ),
        "{}",
        errors[0]
    );
}

#[test]
fn reference_to_missing_resource_or_attribute_should_be_reported() {
    let errors = errors(&[(
        "r.yaml",
        "fake.a:\n  name: a\nfake.b:\n  name: ${fake.c.id}\n  value: ${fake.a.nope}\n  depends_on: [fake.zz]\n",
    )]);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|e| e
                .starts_with("r.yaml:4:9: `fake.b`: reference to undeclared resource `fake.c`")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("r.yaml:5:10: `fake.b`: `fake.a` has no attribute `nope`")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e
                .starts_with("r.yaml:6:16: `fake.b`: reference to undeclared resource `fake.zz`")),
        "{errors:#?}"
    );
}

#[test]
fn dependency_cycle_should_print_its_path() {
    let errors = errors(&[(
        "c.yaml",
        "fake.a:\n  name: ${fake.c.id}\nfake.b:\n  name: ${fake.a.id}\nfake.c:\n  name: x\n  depends_on: [fake.b]\n",
    )]);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(
            "c.yaml:1:1: `fake.a`: dependency cycle: `fake.a` -> `fake.c` -> `fake.b` -> `fake.a`"
        ),
        "{}",
        errors[0]
    );
}

#[test]
fn missing_env_var_should_be_reported_with_a_hint() {
    let errors = errors(&[("e.yaml", "fake.a:\n  name: ${env.NOT_SET_ANYWHERE}\n")]);
    assert_eq!(
        errors,
        [
            "e.yaml:2:9: `fake.a`: environment variable `NOT_SET_ANYWHERE` is not set\n\nhint: export NOT_SET_ANYWHERE=… before running jaam"
        ]
    );
}

#[test]
fn missing_required_field_and_computed_field_should_be_reported() {
    let errors = errors(&[("m.yaml", "fake.a:\n  value: x\n  id: set-by-hand\n")]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|e| e == "m.yaml:1:1: `fake.a`: missing required field `name`")
    );
    assert!(
        errors
            .iter()
            .any(|e| e == "m.yaml:3:3: `fake.a`: `id` is computed by the cloud and cannot be set")
    );
}

#[test]
fn all_errors_should_be_collected_not_only_the_first() {
    let errors = errors(&[
        (
            "a.yaml",
            "fake.a:\n  name: a\n  valeu: x\nnope.b:\n  name: b\n",
        ),
        ("b.yaml", "fake.c:\n  size: [1]\n  name: c\n"),
    ]);
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

#[test]
fn bad_top_level_key_and_malformed_reference_should_be_reported() {
    let errors = errors(&[(
        "x.yaml",
        "justaname:\n  name: a\nfake.a:\n  name: ${broken\n",
    )]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with("x.yaml:1:1: `justaname` is not a resource address"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("x.yaml:4:9: `fake.a`: unterminated reference"),
        "{}",
        errors[1]
    );
}

#[test]
fn error_summary_should_count_errors() {
    let Err(error) = load(&[("f.yaml", "fake.a:\n  valeu: x\n")]) else {
        panic!()
    };
    assert!(error.to_string().ends_with("2 errors in specs"), "{error}");
}

#[test]
fn directory_loading_should_read_yaml_recursively_in_sorted_order() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::create_dir(directory.path().join("nested")).unwrap();
    std::fs::write(directory.path().join("b.yaml"), "fake.b:\n  name: b\n").unwrap();
    std::fs::write(
        directory.path().join("nested/a.yml"),
        "fake.a:\n  name: a\n",
    )
    .unwrap();
    std::fs::write(directory.path().join("notes.txt"), "not yaml").unwrap();
    std::fs::write(directory.path().join(".hidden.yaml"), "broken: [").unwrap();
    let config = super::load(directory.path(), &registry(), &|_| None).unwrap();
    assert_eq!(config.resources().len(), 2);
}
