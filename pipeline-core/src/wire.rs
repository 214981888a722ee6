//! How durations and wall-clock times look in JSON (`stats()`, reports, dead letters):
//! durations as seconds (a float), times as RFC 3339 text, so a JSON client reads them
//! without knowing Rust's `{"secs", "nanos"}` forms.

/// `Duration` as a float of seconds (`1.5`).
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// `SystemTime` as RFC 3339 text in UTC (`2026-12-01T20:30:00.123456789Z`; always nine digits).
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_nanos(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Both {
        #[serde(with = "super::secs")]
        d: Duration,
        #[serde(with = "super::rfc3339")]
        t: SystemTime,
    }

    #[test]
    fn round_trip_in_plain_json_forms() {
        let both = Both {
            d: Duration::from_millis(1500),
            t: SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_620_000),
        };
        let json = serde_json::to_string(&both).unwrap_or_default();
        assert_eq!(json, r#"{"d":1.5,"t":"2025-12-01T20:13:20.000000000Z"}"#);
        let back: Both = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, both);
    }
}
