//! Compile-fail tests pin every message of `#[stage]` (one file per misuse, named after
//! it, plus `three-mistakes.rs`); pass tests cover every option. Regenerate the `.stderr`
//! files with `TRYBUILD=overwrite cargo test -p pipeline-macros --test ui`, then review
//! the diff like code: each message must say what is wrong, on the right token, and how
//! to fix it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/*.rs");
}
