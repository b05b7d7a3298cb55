//! The compile-time checks of `#[retry]`, `#[derive(Classify)]` and `#[idempotent]`,
//! and the shapes of fn they accept. Refresh the expected errors with
//! `TRYBUILD=overwrite cargo test --test compiletest`, then read every
//! `.stderr` diff: it is what the user sees.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    #[cfg(feature = "tonic")]
    t.pass("tests/ui/pass-tonic/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
