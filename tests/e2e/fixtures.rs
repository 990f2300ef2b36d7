//! State file round-trip fixtures: `tests/fixtures/state/*.in.json` must load
//! and re-render exactly as `*.out.json`.

use jaam_core::state::StateFile;

#[test]
fn state_fixtures_should_round_trip() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/state");
    let mut checked = 0;
    for entry in std::fs::read_dir(&directory).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".in.json"))
        else {
            continue;
        };
        let input = std::fs::read_to_string(&path).unwrap();
        let expected = std::fs::read_to_string(directory.join(format!("{name}.out.json"))).unwrap();
        let state = StateFile::parse(&input, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        state.validate().unwrap();
        assert_eq!(StateFile::render(&state), expected, "{name}");
        checked += 1;
    }
    assert!(checked >= 2, "fixtures found: {checked}");
}

#[test]
fn state_from_a_newer_jaam_should_be_refused_not_misread() {
    let error = StateFile::parse(r#"{"version": 2, "lineage": "x"}"#, "future.json").unwrap_err();
    assert_eq!(
        error.to_string(),
        "state `future.json` has format version 2, which this jaam does not know"
    );
}
