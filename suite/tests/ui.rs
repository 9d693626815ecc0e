//! Compile-fail tests of the macros: one misuse per file in `tests/ui/`, with the exact messages
//! a user sees in the `.stderr` next to it. Regenerate with `TRYBUILD=overwrite cargo test --test ui`
//! and review the diff. The messages are pinned to the toolchain in `rust-toolchain`/CI (1.95).

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
