//! Every trybuild pass case is an example of this crate, so that clippy
//! lints it, and denies the lints at its top, so that both rustc (under
//! trybuild) and clippy (here) fail on a warning in generated code.

use std::{fs, path::Path};

const DENIED: [&str; 2] = [
    "#![deny(warnings)]",
    "#![deny(clippy::all, clippy::pedantic, clippy::nursery)]",
];

fn pass_cases() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cases = Vec::new();
    for folder in ["tests/ui/pass", "tests/ui/pass-tonic"] {
        for entry in fs::read_dir(root.join(folder)).expect("the pass cases") {
            let name = entry.expect("a directory entry").file_name();
            let name = name.to_str().expect("a UTF-8 file name");
            if let Some(stem) = name.strip_suffix(".rs") {
                cases.push(format!("{folder}/{stem}"));
            }
        }
    }
    cases.sort();
    cases
}

#[test]
fn every_pass_case_is_an_example_here() {
    let manifest = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .expect("lint-check/Cargo.toml");
    let cases = pass_cases();
    assert!(cases.len() >= 16, "found only {cases:?}");
    let missing: Vec<&String> = cases
        .iter()
        .filter(|case| !manifest.contains(&format!("path = \"../{case}.rs\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "add these pass cases as [[example]]s of lint-check/Cargo.toml: {missing:?}"
    );
}

#[test]
fn every_pass_case_denies_warnings_and_clippy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for case in pass_cases() {
        let source = fs::read_to_string(root.join(format!("{case}.rs"))).expect("a pass case");
        for denied in DENIED {
            assert!(
                source.lines().any(|line| line == denied),
                "{case}.rs must start with `{denied}`"
            );
        }
    }
}
