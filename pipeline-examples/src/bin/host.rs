//! A host application whose own functions are pipeline stages.
//!
//! The `#[stage]` functions below are ordinary functions of this program: the CLI calls
//! them directly for one value, and runs the very same functions as stages of a pipeline
//! for a stream of values on stdin.
//!
//! ```text
//! cargo run -p pipeline-examples --bin host -- normalize " 12  main st. ,springfield, 12345"
//! cargo run -p pipeline-examples --bin host -- score 3 12500 "12 main st, springfield, 12345"
//! printf '12 main st, springfield, 12345\n' | cargo run -p pipeline-examples --bin host -- normalize
//! printf '1;3;12500;12 main st, springfield, 12345\n' | cargo run -p pipeline-examples --bin host -- batch
//! ```
//!
//! In pipeline mode, results go to stdout as JSON lines, lines that failed go to stderr
//! with the stage and the reason, and the run's report closes stderr.

use std::io::BufRead;
use std::process::ExitCode;

use pipeline_core::prelude::*;
use pipeline_core::{DeadLetter, Pipeline, RunReport};
use serde::Serialize;

/// A postal address in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    /// House number and street, `12 Main Street`.
    pub street: String,
    /// `Springfield`.
    pub city: String,
    /// Five digits.
    pub postcode: String,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {} {}", self.street, self.postcode, self.city)
    }
}

/// Why an address could not be normalized.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    /// Not `street, city, postcode`.
    #[error("expected `street, city, postcode`, got {0} part(s)")]
    Parts(usize),
    /// An empty street or city.
    #[error("the {0} is empty")]
    Empty(&'static str),
    /// A postcode that is not five digits.
    #[error("postcode `{0}` is not five digits")]
    Postcode(String),
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace()
}

fn title(word: &str) -> String {
    let lower = word.to_lowercase();
    let mut chars = lower.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// Normalizes `street, city, postcode`: whitespace collapsed, words capitalized, street
/// abbreviations spelled out, the postcode checked.
///
/// A stage too (`NormalizeAddress`, input `String`); it borrows the item, so the function
/// takes a plain `&str` when called directly.
#[stage]
pub fn normalize_address(raw: &str) -> Result<Address, AddressError> {
    let parts: Vec<&str> = raw.split(',').map(str::trim).collect();
    let [street, city, postcode] = parts[..] else {
        return Err(AddressError::Parts(parts.len()));
    };
    let street: Vec<String> = words(street)
        .map(|w| match w.trim_end_matches('.').to_lowercase().as_str() {
            "st" => "Street".to_owned(),
            "ave" => "Avenue".to_owned(),
            "rd" => "Road".to_owned(),
            _ => title(w),
        })
        .collect();
    let city: Vec<String> = words(city).map(title).collect();
    if street.is_empty() {
        return Err(AddressError::Empty("street"));
    }
    if city.is_empty() {
        return Err(AddressError::Empty("city"));
    }
    if postcode.len() != 5 || !postcode.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressError::Postcode(postcode.to_owned()));
    }
    Ok(Address {
        street: street.join(" "),
        city: city.join(" "),
        postcode: postcode.to_owned(),
    })
}

/// An order with its address normalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    /// The order's id.
    pub id: u64,
    /// Number of items.
    pub items: u32,
    /// Total in cents.
    pub total_cents: u64,
    /// Where it goes.
    pub address: Address,
}

/// Why an order line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// Not `id;items;total_cents;address`.
    #[error("expected `id;items;total_cents;address`")]
    Shape,
    /// A number that does not parse.
    #[error("bad {field}: {source}")]
    Number {
        /// Which field.
        field: &'static str,
        /// The parse error.
        source: std::num::ParseIntError,
    },
    /// The address.
    #[error(transparent)]
    Address(#[from] AddressError),
}

/// Reads `id;items;total_cents;address`, normalizing the address by calling
/// [`normalize_address`] directly: a stage's function is an ordinary function.
#[stage]
pub fn parse_order(line: &str) -> Result<Order, OrderError> {
    let mut fields = line.splitn(4, ';');
    let (Some(id), Some(items), Some(total), Some(address)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(OrderError::Shape);
    };
    let number = |field: &'static str, text: &str| {
        text.trim()
            .parse::<u64>()
            .map_err(|source| OrderError::Number { field, source })
    };
    Ok(Order {
        id: number("id", id)?,
        items: u32::try_from(number("items", items)?).map_err(|_| OrderError::Shape)?,
        total_cents: number("total_cents", total)?,
        address: normalize_address(address)?,
    })
}

/// How orders are scored: shared state of the `score_order` stage.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Orders at or above this total score the most for value.
    pub big_order_cents: u64,
    /// Cities served next day.
    pub fast_cities: Vec<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            big_order_cents: 10_000,
            fast_cities: vec!["Springfield".into(), "Shelbyville".into()],
        }
    }
}

/// An order with its score (0 to 100).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scored {
    /// The order.
    pub order: Order,
    /// 0 to 100: value (up to 60), basket size (up to 20), next-day city (20).
    pub score: u32,
}

/// Scores an order under `rules`.
#[stage(concurrency = 4)]
pub async fn score_order(order: Order, #[state] rules: &Rules) -> Scored {
    let value =
        (order.total_cents.min(rules.big_order_cents) * 60 / rules.big_order_cents.max(1)) as u32;
    let basket = order.items.min(5) * 4;
    let fast = if rules.fast_cities.contains(&order.address.city) {
        20
    } else {
        0
    };
    Scored {
        score: value + basket + fast,
        order,
    }
}

/// Dead letters as `stage: error` lines on stderr.
fn dead_letters() -> impl pipeline_core::sink::Sink<Item = DeadLetter> {
    sink::for_each(|d: DeadLetter| async move {
        eprintln!("failed in `{}`: {}", d.stage, d.error);
        Ok::<_, std::convert::Infallible>(())
    })
}

fn stdin_lines() -> impl Iterator<Item = String> + Send + 'static {
    // `Stdin` itself is `Send`; its lock is not.
    std::io::BufReader::new(std::io::stdin())
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
}

/// One JSON line per item on stdout.
fn print_json<T: Serialize + Send + 'static>() -> impl pipeline_core::sink::Sink<Item = T> {
    sink::for_each(|item: T| async move {
        let line = serde_json::to_string(&item)?;
        println!("{line}");
        Ok::<_, serde_json::Error>(())
    })
}

/// Runs `normalize_address` as a stage over stdin.
async fn normalize_stdin() -> Result<RunReport, pipeline_core::PipelineError> {
    Pipeline::builder("normalize")
        .source(source::blocking_iter(stdin_lines()))
        .stage(NormalizeAddress)
        .sink(print_json())
        .dead_letter(dead_letters())
        .run()
        .await
}

/// Runs `parse_order` and `score_order` as stages over stdin.
async fn batch(rules: Rules) -> Result<RunReport, pipeline_core::PipelineError> {
    Pipeline::builder("orders")
        .source(source::blocking_iter(stdin_lines()))
        .stage(ParseOrder)
        .stage(ScoreOrder::new(rules))
        .ordered()
        .sink(print_json::<Scored>())
        .dead_letter(dead_letters())
        .run()
        .await
}

const USAGE: &str =
    "usage: host normalize [ADDRESS] | host score ITEMS TOTAL_CENTS ADDRESS | host batch";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = match args[..] {
        // Direct calls: the stage functions are the program's own functions.
        ["normalize", address] => {
            return match normalize_address(address) {
                Ok(address) => {
                    println!("{address}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("host: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        ["score", items, total, address] => {
            let line = format!("0;{items};{total};{address}");
            return match parse_order(&line) {
                Ok(order) => {
                    let scored = score_order(order, &Rules::default()).await;
                    println!("{}", scored.score);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("host: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        // The same functions as pipeline stages.
        ["normalize"] => normalize_stdin().await,
        ["batch"] => batch(Rules::default()).await,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match report {
        Ok(report) => {
            eprint!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("host: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn springfield() -> Address {
        Address {
            street: "12 Main Street".into(),
            city: "Springfield".into(),
            postcode: "12345".into(),
        }
    }

    #[test]
    fn normalize_address_is_a_plain_function() {
        assert_eq!(
            normalize_address("  12  MAIN st. ,springfield,12345 "),
            Ok(springfield())
        );
        assert_eq!(
            normalize_address("12 main st, springfield"),
            Err(AddressError::Parts(2))
        );
        assert_eq!(
            normalize_address("12 main st, , 12345"),
            Err(AddressError::Empty("city"))
        );
        assert_eq!(
            normalize_address("12 main st, springfield, 1234x"),
            Err(AddressError::Postcode("1234x".into()))
        );
    }

    #[test]
    fn parse_order_calls_normalize_address() {
        let order = parse_order("7;3;12500;12 main st, springfield, 12345").unwrap();
        assert_eq!(
            order,
            Order {
                id: 7,
                items: 3,
                total_cents: 12_500,
                address: springfield(),
            }
        );
        assert!(matches!(
            parse_order("7;3;lots;12 main st, springfield, 12345"),
            Err(OrderError::Number {
                field: "total_cents",
                ..
            })
        ));
        assert!(matches!(parse_order("7;3"), Err(OrderError::Shape)));
    }

    #[tokio::test]
    async fn score_order_is_a_plain_async_function() {
        let order = parse_order("7;3;12500;12 main st, springfield, 12345").unwrap();
        let scored = score_order(order.clone(), &Rules::default()).await;
        assert_eq!(scored.score, 60 + 12 + 20);
        let far = Rules {
            fast_cities: vec![],
            ..Rules::default()
        };
        assert_eq!(score_order(order, &far).await.score, 72);
    }

    #[tokio::test]
    async fn the_same_functions_run_as_stages() {
        let lines = vec![
            "1;1;5000;1 elm rd, shelbyville, 54321".to_owned(),
            "2;bad".to_owned(),
            "3;9;20000;12 main st, springfield, 12345".to_owned(),
        ];
        let (out, scored) = sink::collect();
        let (dead, dead_letters) = sink::collect();
        let report = Pipeline::builder("orders")
            .source(source::iter(lines))
            .stage(ParseOrder)
            .stage(ScoreOrder::new(Rules::default()))
            .ordered()
            .sink(out)
            .dead_letter(dead)
            .run()
            .await
            .unwrap();
        let scores: Vec<(u64, u32)> = scored
            .take()
            .iter()
            .map(|s| (s.order.id, s.score))
            .collect();
        assert_eq!(scores, [(1, 30 + 4 + 20), (3, 100)]);
        let dead_letters = dead_letters.take();
        assert_eq!(dead_letters.len(), 1);
        assert_eq!(dead_letters[0].stage, "parse_order");
        assert_eq!((report.delivered, report.dead_lettered), (2, 1));
        assert!(report.is_balanced());
    }
}
