//! The tables a flight is joined with, loaded once before the run and shared by every
//! call of the `enrich` stage (`#[state] lookup: &Lookup`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use pipeline_connectors::csv::{CsvOptions, CsvSource};
use pipeline_core::BoxError;
use pipeline_core::source::Source;
use serde::de::DeserializeOwned;

use crate::model::{Checked, Enriched};

#[derive(Debug, serde::Deserialize)]
struct Airline {
    carrier: String,
    name: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Plane {
    tailnum: String,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    manufacturer: Option<String>,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    model: Option<String>,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    seats: Option<i64>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Weather {
    origin: String,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    temp: Option<f64>,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    wind_speed: Option<f64>,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    precip: Option<f64>,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    visib: Option<f64>,
    time_hour: String,
}

/// Airlines by carrier, planes by tail number, weather by origin and hour.
#[derive(Debug, Default)]
pub(crate) struct Lookup {
    airlines: HashMap<String, String>,
    planes: HashMap<String, Plane>,
    weather: HashMap<String, HashMap<String, Weather>>,
}

/// `name` in `dir`, or `name.gz` there.
pub(crate) fn data_file(dir: &Path, name: &str) -> Result<PathBuf, BoxError> {
    let plain = dir.join(name);
    if plain.exists() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.exists() {
        return Ok(gz);
    }
    Err(format!("no `{name}` (or `{name}.gz`) in `{}`", dir.display()).into())
}

/// A reader over the file, decompressed if it ends in `.gz`.
pub(crate) fn open_data(path: &Path) -> Result<Box<dyn Read + Send>, BoxError> {
    let file = File::open(path).map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::GzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// A CSV source over `name` in `dir` (plain or gzip).
pub(crate) fn csv_source<T: DeserializeOwned + Send + 'static>(
    dir: &Path,
    name: &str,
) -> Result<(CsvSource<T>, String), BoxError> {
    let path = data_file(dir, name)?;
    let shown = path.display().to_string();
    Ok((
        CsvOptions::new().open_reader(shown.clone(), open_data(&path)?),
        shown,
    ))
}

/// Every row of a lookup table; any bad row fails the load (a lookup is not data to
/// dead-letter: a broken one would silently turn every join into nulls).
async fn read_all<T: DeserializeOwned + Send + 'static>(
    dir: &Path,
    name: &str,
) -> Result<Vec<T>, BoxError> {
    let (mut source, _) = csv_source::<T>(dir, name)?;
    let mut rows = Vec::new();
    while let Some(pulled) = source.pull(1024).await? {
        for record in pulled.items {
            rows.push(record.into_result()?);
        }
    }
    Ok(rows)
}

impl Lookup {
    /// Loads `airlines.csv`, `planes.csv` and `weather.csv` from `dir`.
    pub(crate) async fn load(dir: &Path) -> Result<Lookup, BoxError> {
        let airlines = read_all::<Airline>(dir, "airlines.csv")
            .await?
            .into_iter()
            .map(|a| (a.carrier, a.name))
            .collect();
        let planes = read_all::<Plane>(dir, "planes.csv")
            .await?
            .into_iter()
            .map(|p| (p.tailnum.clone(), p))
            .collect();
        let mut weather: HashMap<String, HashMap<String, Weather>> = HashMap::new();
        for w in read_all::<Weather>(dir, "weather.csv").await? {
            // The first observation of an hour wins (the data repeats a few hours).
            weather
                .entry(w.origin.clone())
                .or_default()
                .entry(w.time_hour.clone())
                .or_insert(w);
        }
        Ok(Lookup {
            airlines,
            planes,
            weather,
        })
    }

    /// (airlines, planes, weather observations)
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        (
            self.airlines.len(),
            self.planes.len(),
            self.weather.values().map(HashMap::len).sum(),
        )
    }

    /// The joins; a missing match leaves the fields null.
    pub(crate) fn enrich(&self, checked: Checked) -> Enriched {
        let Checked { flight, status } = checked;
        let airline = self.airlines.get(&flight.carrier).cloned();
        let plane = flight
            .tailnum
            .as_ref()
            .and_then(|t| self.planes.get(t.as_str()));
        let weather = self
            .weather
            .get(flight.origin.as_str())
            .and_then(|hours| hours.get(flight.time_hour.as_str()));
        Enriched {
            airline,
            plane_manufacturer: plane.and_then(|p| p.manufacturer.clone()),
            plane_model: plane.and_then(|p| p.model.clone()),
            plane_seats: plane.and_then(|p| p.seats),
            temp: weather.and_then(|w| w.temp),
            wind_speed: weather.and_then(|w| w.wind_speed),
            precip: weather.and_then(|w| w.precip),
            visib: weather.and_then(|w| w.visib),
            flight,
            status,
        }
    }
}
