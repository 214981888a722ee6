//! Cross-crate integration and invariant tests live in `tests/`. This crate's doctests are
//! the README's code: the tour, the embedding and the resilience examples compile as
//! written.
#![doc = include_str!("../../README.md")]
