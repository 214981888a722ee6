//! Compile tests of the builder's bounds: items need only `Send + 'static` (pass), and a
//! retry of a by-value stage asks for `Clone` with a message that says why (fail).
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p pipeline-tests
//! --test ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
