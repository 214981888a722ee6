// Generated code names only `::pipeline_core::__private::*`: it compiles without the
// prelude, next to user items named like the prelude's.
#![deny(warnings)]

mod stages {
    #![no_implicit_prelude]
    #![allow(dead_code, non_camel_case_types)]

    pub struct Option;
    pub struct Result;
    pub struct Ok;
    pub struct Some;
    pub struct None;
    pub struct Box;
    pub struct Send;
    pub struct Sync;
    pub struct Arc;
    pub struct Default;
    pub struct Clone;
    pub struct Copy;
    pub struct Future;
    pub struct Duration;
    pub struct Cow;
    pub struct Stage;
    pub struct Context;
    pub struct Fn;
    pub struct Into;
    pub mod pipeline_core {}
    pub mod std {}
    pub mod core {}

    #[derive(::std::fmt::Debug)]
    pub struct Invalid;

    impl ::std::fmt::Display for Invalid {
        fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
            f.write_str("invalid")
        }
    }

    impl ::std::error::Error for Invalid {}

    pub fn retryable(_: &Invalid) -> bool {
        true
    }

    #[::pipeline_core::stage(
        concurrency = 2,
        ordered,
        buffer = 8,
        timeout = "1s",
        retry(attempts = 2, backoff = "10ms", max_backoff = "1s", jitter, budget = 0.5, when = retryable),
        breaker(window = "10s", mode = "fail_fast"),
        rate = "5/s",
        on_error = "drop",
    )]
    pub async fn parse(line: &str) -> ::std::result::Result<::std::option::Option<u64>, Invalid> {
        ::std::result::Result::Ok(::std::option::Option::Some(line.len() as u64))
    }

    pub struct Db;

    #[::pipeline_core::stage(blocking, flatten, restart(max = 1, within = "1s"))]
    pub fn explode(
        n: u64,
        cx: &::pipeline_core::Context,
        #[state] db: &Db,
        #[state] seen: &mut u64,
    ) -> ::std::vec::Vec<u64> {
        let _ = (cx, db);
        *seen += n;
        ::std::vec![*seen]
    }
}

fn main() {
    use pipeline_core::Stage;
    let _ = stages::Parse.options();
    let _ = stages::Explode::new(stages::Db, || 0).options();
}
