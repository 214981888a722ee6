// Names, visibility and lifetimes.
#![deny(warnings)]

use pipeline_core::prelude::*;

mod inner {
    use pipeline_core::prelude::*;

    // The stage type takes the function's visibility.
    #[stage]
    pub(crate) fn r#match(line: String) -> bool {
        line.is_empty()
    }

    #[stage(name = "v2")]
    pub fn parse_v2(line: String) -> usize {
        line.len()
    }

    #[stage]
    fn private_stage(n: u8) -> u8 {
        n
    }

    pub fn use_private() -> impl Stage<In = u8> {
        PrivateStage
    }
}

// Named lifetimes on reference inputs are fine.
#[stage]
async fn borrow<'a>(line: &'a str, cx: &'a Context) -> usize {
    line.len() + cx.stage().len()
}

// `'static` data inside an input is owned.
#[stage]
async fn statics(words: Vec<&'static str>) -> usize {
    words.len()
}

// Attributes and docs on the function are kept.
/// Doubles.
#[stage]
#[inline]
#[must_use]
fn double(n: u64) -> u64 {
    n * 2
}

fn main() {
    let _ = inner::Match;
    let _ = inner::ParseV2.options();
    let _ = inner::use_private();
    let _ = (Borrow, Statics);
    assert_eq!(double(2), 4);
    let _ = Double;
}
