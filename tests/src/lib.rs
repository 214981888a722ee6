//! Cross-crate integration and invariant tests live in `tests/`.
