//! The rows: a parsed [`Flight`], its [`Status`] after validation, the [`Enriched`] row
//! written to the database, and the stages that go from one to the next.

use std::collections::HashMap;
use std::sync::Mutex;

use pipeline_connectors::record::{Record, RowError};
use pipeline_connectors::table::{ColumnType, Table, ToRow, Value};
use pipeline_core::stage;

use crate::lookup::Lookup;

/// One row of `flights.csv`, typed. `NA` fields are `None` (`csv::na`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub(crate) struct Flight {
    /// The line of the row in its file (set by [`parse`], not read from the file).
    #[serde(skip)]
    pub(crate) line: u64,
    pub(crate) year: i32,
    pub(crate) month: u32,
    pub(crate) day: u32,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    pub(crate) dep_time: Option<u32>,
    pub(crate) sched_dep_time: u32,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    pub(crate) dep_delay: Option<i32>,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    pub(crate) arr_time: Option<u32>,
    pub(crate) sched_arr_time: u32,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    pub(crate) arr_delay: Option<i32>,
    pub(crate) carrier: String,
    pub(crate) flight: u32,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    pub(crate) tailnum: Option<String>,
    pub(crate) origin: String,
    pub(crate) dest: String,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    pub(crate) air_time: Option<u32>,
    pub(crate) distance: u32,
    pub(crate) hour: u32,
    pub(crate) minute: u32,
    pub(crate) time_hour: String,
}

/// What happened to a flight. Cancelled and diverted flights are data, not errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) enum Status {
    /// Departed and arrived.
    Arrived,
    /// Never departed.
    Cancelled,
    /// Departed, no arrival delay recorded.
    Diverted,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Arrived => "arrived",
            Status::Cancelled => "cancelled",
            Status::Diverted => "diverted",
        }
    }

    pub(crate) fn reason(self) -> Option<&'static str> {
        match self {
            Status::Arrived => None,
            Status::Cancelled => Some("no dep_time: the flight never departed"),
            Status::Diverted => Some("departed but no arr_delay: diverted or arrival not recorded"),
        }
    }
}

/// A flight that passed validation, with its status.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub(crate) flight: Flight,
    pub(crate) status: Status,
}

/// A row that is malformed in a way the CSV reader cannot see (a month 13).
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {what}")]
pub(crate) struct Invalid {
    file: String,
    line: u64,
    what: String,
}

/// The row written to `flights` (and `cancelled`).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Enriched {
    pub(crate) flight: Flight,
    pub(crate) status: Status,
    pub(crate) airline: Option<String>,
    pub(crate) plane_manufacturer: Option<String>,
    pub(crate) plane_model: Option<String>,
    pub(crate) plane_seats: Option<i64>,
    pub(crate) temp: Option<f64>,
    pub(crate) wind_speed: Option<f64>,
    pub(crate) precip: Option<f64>,
    pub(crate) visib: Option<f64>,
}

/// `Record<Flight> -> Flight`, keeping the row's line in the flight (the connectors'
/// `parsed()` drops it, and the later stages need it for their own dead letters).
#[stage]
pub(crate) fn parse(record: Record<Flight>) -> Result<Flight, RowError> {
    let line = record.line;
    record.into_result().map(|mut flight| {
        flight.line = line;
        flight
    })
}

/// Checks what the types cannot and classifies the flight.
#[stage]
pub(crate) fn validate(flight: Flight, #[state] file: &str) -> Result<Checked, Invalid> {
    check(flight, file)
}

/// [`validate`]'s body, shared with the hand-written loop.
pub(crate) fn check(flight: Flight, file: &str) -> Result<Checked, Invalid> {
    let bad = |what: String| Invalid {
        file: file.to_owned(),
        line: flight.line,
        what,
    };
    if !(1..=12).contains(&flight.month) {
        return Err(bad(format!("month {} is not 1..=12", flight.month)));
    }
    if !(1..=31).contains(&flight.day) {
        return Err(bad(format!("day {} is not 1..=31", flight.day)));
    }
    if !valid_hhmm(flight.sched_dep_time) || !valid_hhmm(flight.sched_arr_time) {
        return Err(bad(format!(
            "scheduled times {} / {} are not HHMM",
            flight.sched_dep_time, flight.sched_arr_time
        )));
    }
    if flight.hour > 23 || flight.minute > 59 {
        return Err(bad(format!(
            "hour {} minute {} out of range",
            flight.hour, flight.minute
        )));
    }
    if flight.carrier.len() != 2 || !flight.carrier.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad(format!(
            "carrier `{}` is not a 2-character code",
            flight.carrier
        )));
    }
    for (name, code) in [("origin", &flight.origin), ("dest", &flight.dest)] {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad(format!(
                "{name} `{code}` is not a 3-character airport code"
            )));
        }
    }
    let th = flight.time_hour.as_bytes();
    if th.len() != 20 || th[4] != b'-' || th[10] != b'T' || th[19] != b'Z' {
        return Err(bad(format!(
            "time_hour `{}` is not YYYY-MM-DDTHH:MM:SSZ",
            flight.time_hour
        )));
    }
    let status = match (flight.dep_time, flight.arr_delay) {
        (None, _) => Status::Cancelled,
        (Some(_), None) => Status::Diverted,
        (Some(_), Some(_)) => Status::Arrived,
    };
    Ok(Checked { flight, status })
}

fn valid_hhmm(t: u32) -> bool {
    t <= 2400 && t % 100 < 60
}

/// Joins airline, plane and origin weather; a missing match is a null.
#[stage]
pub(crate) fn enrich(checked: Checked, #[state] lookup: &Lookup) -> Enriched {
    lookup.enrich(checked)
}

/// Adds the flight to the per-carrier, per-day aggregates and passes it on.
#[stage]
pub(crate) fn aggregate(flight: Enriched, #[state] daily: &Mutex<Daily>) -> Enriched {
    // A poisoned lock only means another call panicked mid-update: keep counting.
    let mut daily = daily.lock().unwrap_or_else(|e| e.into_inner());
    daily.add(&flight);
    drop(daily);
    flight
}

/// Per-carrier, per-day sums.
#[derive(Debug, Default)]
pub(crate) struct Daily {
    days: HashMap<(String, String), Acc>,
}

#[derive(Debug, Default, Clone)]
struct Acc {
    airline: Option<String>,
    flights: i64,
    cancelled: i64,
    diverted: i64,
    dep: Moments,
    arr: Moments,
}

#[derive(Debug, Default, Clone)]
struct Moments {
    n: i64,
    sum: i64,
    max: Option<i64>,
}

impl Moments {
    fn add(&mut self, x: Option<i32>) {
        if let Some(x) = x {
            let x = i64::from(x);
            self.n += 1;
            self.sum += x;
            self.max = Some(self.max.map_or(x, |m| m.max(x)));
        }
    }

    fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64)
    }
}

impl Daily {
    pub(crate) fn add(&mut self, f: &Enriched) {
        let day = format!(
            "{:04}-{:02}-{:02}",
            f.flight.year, f.flight.month, f.flight.day
        );
        let acc = self
            .days
            .entry((f.flight.carrier.clone(), day))
            .or_default();
        if acc.airline.is_none() {
            acc.airline.clone_from(&f.airline);
        }
        acc.flights += 1;
        match f.status {
            Status::Cancelled => acc.cancelled += 1,
            Status::Diverted => acc.diverted += 1,
            Status::Arrived => {}
        }
        acc.dep.add(f.flight.dep_delay);
        acc.arr.add(f.flight.arr_delay);
    }

    /// The rows of the `daily` table, sorted by carrier and day.
    pub(crate) fn rows(&self) -> Vec<DailyRow> {
        let mut rows: Vec<DailyRow> = self
            .days
            .iter()
            .map(|((carrier, day), a)| DailyRow {
                carrier: carrier.clone(),
                day: day.clone(),
                name: a.airline.clone(),
                flights: a.flights,
                cancelled: a.cancelled,
                diverted: a.diverted,
                mean_dep_delay: a.dep.mean(),
                max_dep_delay: a.dep.max,
                mean_arr_delay: a.arr.mean(),
                max_arr_delay: a.arr.max,
            })
            .collect();
        rows.sort_by(|a, b| (&a.carrier, &a.day).cmp(&(&b.carrier, &b.day)));
        rows
    }
}

/// One row of `daily`.
#[derive(Debug, Clone)]
pub(crate) struct DailyRow {
    pub(crate) carrier: String,
    pub(crate) day: String,
    pub(crate) name: Option<String>,
    pub(crate) flights: i64,
    pub(crate) cancelled: i64,
    pub(crate) diverted: i64,
    pub(crate) mean_dep_delay: Option<f64>,
    pub(crate) max_dep_delay: Option<i64>,
    pub(crate) mean_arr_delay: Option<f64>,
    pub(crate) max_arr_delay: Option<i64>,
}

/// `flights` and `cancelled` have the same columns.
pub(crate) fn flights_table(name: &str) -> Table {
    Table::new(name)
        .column("year", ColumnType::Integer)
        .column("month", ColumnType::Integer)
        .column("day", ColumnType::Integer)
        .column("carrier", ColumnType::Text)
        .column("flight", ColumnType::Integer)
        .column("origin", ColumnType::Text)
        .column("sched_dep_time", ColumnType::Integer)
        .column("dest", ColumnType::Text)
        .nullable("tailnum", ColumnType::Text)
        .nullable("dep_time", ColumnType::Integer)
        .nullable("dep_delay", ColumnType::Integer)
        .nullable("arr_time", ColumnType::Integer)
        .column("sched_arr_time", ColumnType::Integer)
        .nullable("arr_delay", ColumnType::Integer)
        .nullable("air_time", ColumnType::Integer)
        .column("distance", ColumnType::Integer)
        .column("time_hour", ColumnType::Text)
        .column("status", ColumnType::Text)
        .nullable("reason", ColumnType::Text)
        .nullable("airline", ColumnType::Text)
        .nullable("plane_manufacturer", ColumnType::Text)
        .nullable("plane_model", ColumnType::Text)
        .nullable("plane_seats", ColumnType::Integer)
        .nullable("temp", ColumnType::Real)
        .nullable("wind_speed", ColumnType::Real)
        .nullable("precip", ColumnType::Real)
        .nullable("visib", ColumnType::Real)
        .column("line", ColumnType::Integer)
        .key([
            "year",
            "month",
            "day",
            "carrier",
            "flight",
            "origin",
            "sched_dep_time",
        ])
}

impl ToRow for Enriched {
    fn to_row(&self) -> Vec<Value> {
        let f = &self.flight;
        let int = |x: Option<u32>| x.map(i64::from);
        vec![
            i64::from(f.year).into(),
            i64::from(f.month).into(),
            i64::from(f.day).into(),
            f.carrier.as_str().into(),
            i64::from(f.flight).into(),
            f.origin.as_str().into(),
            i64::from(f.sched_dep_time).into(),
            f.dest.as_str().into(),
            f.tailnum.as_deref().into(),
            int(f.dep_time).into(),
            f.dep_delay.map(i64::from).into(),
            int(f.arr_time).into(),
            i64::from(f.sched_arr_time).into(),
            f.arr_delay.map(i64::from).into(),
            int(f.air_time).into(),
            i64::from(f.distance).into(),
            f.time_hour.as_str().into(),
            self.status.as_str().into(),
            self.status.reason().into(),
            self.airline.as_deref().into(),
            self.plane_manufacturer.as_deref().into(),
            self.plane_model.as_deref().into(),
            self.plane_seats.into(),
            self.temp.into(),
            self.wind_speed.into(),
            self.precip.into(),
            self.visib.into(),
            (f.line as i64).into(),
        ]
    }
}

pub(crate) fn daily_table(name: &str) -> Table {
    Table::new(name)
        .column("carrier", ColumnType::Text)
        .column("day", ColumnType::Text)
        .nullable("name", ColumnType::Text)
        .column("flights", ColumnType::Integer)
        .column("cancelled", ColumnType::Integer)
        .column("diverted", ColumnType::Integer)
        .nullable("mean_dep_delay", ColumnType::Real)
        .nullable("max_dep_delay", ColumnType::Integer)
        .nullable("mean_arr_delay", ColumnType::Real)
        .nullable("max_arr_delay", ColumnType::Integer)
        .key(["carrier", "day"])
}

impl ToRow for DailyRow {
    fn to_row(&self) -> Vec<Value> {
        vec![
            self.carrier.as_str().into(),
            self.day.as_str().into(),
            self.name.as_deref().into(),
            self.flights.into(),
            self.cancelled.into(),
            self.diverted.into(),
            self.mean_dep_delay.into(),
            self.max_dep_delay.into(),
            self.mean_arr_delay.into(),
            self.max_arr_delay.into(),
        ]
    }
}
