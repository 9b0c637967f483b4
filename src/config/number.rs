//! Numbers in the configuration: written as TOML integers or floats, or as text in environment
//! variables. Each key has a documented range, checked with a message that names the key and
//! the range; a value is never cut to fit (`1e30` is not "9223372036854775807").

use std::fmt;
use std::ops::RangeInclusive;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::{invalid, ConfigError};

/// A number as written, before its range is checked.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RawNumber {
    Int(i64),
    Float(f64),
    /// From an environment variable (all text), or a TOML string.
    Text(String),
}

impl fmt::Display for RawNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawNumber::Int(n) => write!(f, "{n}"),
            RawNumber::Float(x) if *x != 0.0 && (x.abs() >= 1e15 || x.abs() < 1e-4) => {
                write!(f, "{x:e}")
            }
            RawNumber::Float(x) => write!(f, "{x}"),
            RawNumber::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl RawNumber {
    /// The value as a float, if it is a number at all.
    fn as_f64(&self) -> Option<f64> {
        match self {
            RawNumber::Int(n) => Some(*n as f64),
            RawNumber::Float(x) => Some(*x),
            RawNumber::Text(s) => s.trim().parse().ok(),
        }
    }

    /// The value as an integer, if it is one exactly (`5.0` is, `5.5` and `1e30` are not).
    fn as_i64(&self) -> Option<i64> {
        match self {
            RawNumber::Int(n) => Some(*n),
            RawNumber::Float(x) => exact_integer(*x),
            RawNumber::Text(s) => {
                let s = s.trim();
                s.parse()
                    .ok()
                    .or_else(|| s.parse().ok().and_then(exact_integer))
            }
        }
    }
}

fn exact_integer(x: f64) -> Option<i64> {
    // 2^63 is the first float outside i64; every float below it in magnitude converts exactly
    // when it has no fraction.
    (x.fract() == 0.0 && x.abs() < 9_223_372_036_854_775_808.0).then_some(x as i64)
}

/// An integer key within `range`.
pub(super) fn integer(
    key: &'static str,
    raw: &RawNumber,
    range: RangeInclusive<i64>,
) -> Result<i64, ConfigError> {
    raw.as_i64().filter(|n| range.contains(n)).ok_or_else(|| {
        invalid(
            key,
            format!(
                "must be an integer in {}..={}, got {raw}",
                range.start(),
                range.end()
            ),
        )
    })
}

/// A key that may have decimals, within `range`.
pub(super) fn decimal(
    key: &'static str,
    raw: &RawNumber,
    range: RangeInclusive<f64>,
) -> Result<f64, ConfigError> {
    raw.as_f64().filter(|x| range.contains(x)).ok_or_else(|| {
        invalid(
            key,
            format!(
                "must be a number in {}..={}, got {raw}",
                range.start(),
                range.end()
            ),
        )
    })
}

impl<'de> Deserialize<'de> for RawNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;

        impl Visitor<'_> for NumberVisitor {
            type Value = RawNumber;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawNumber, E> {
                Ok(RawNumber::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawNumber, E> {
                Ok(i64::try_from(v).map_or(RawNumber::Float(v as f64), RawNumber::Int))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawNumber, E> {
                Ok(RawNumber::Float(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawNumber, E> {
                Ok(RawNumber::Text(v.to_string()))
            }
        }

        deserializer.deserialize_any(NumberVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_must_be_exact_and_in_range() {
        let ok = |raw: RawNumber| integer("k", &raw, 1..=100);
        assert_eq!(ok(RawNumber::Int(5)).unwrap(), 5);
        assert_eq!(ok(RawNumber::Float(5.0)).unwrap(), 5);
        assert_eq!(ok(RawNumber::Text(" 7 ".into())).unwrap(), 7);
        let err = ok(RawNumber::Float(1e30)).unwrap_err().to_string();
        assert_eq!(
            err,
            "configuration: k: must be an integer in 1..=100, got 1e30"
        );
        assert!(ok(RawNumber::Float(5.5)).is_err());
        assert!(ok(RawNumber::Int(101)).is_err());
        assert!(ok(RawNumber::Text("ten".into())).is_err());
    }

    #[test]
    fn decimals_keep_to_their_range() {
        let ok = |raw: RawNumber| decimal("k", &raw, 0.1..=10_000.0);
        assert_eq!(ok(RawNumber::Float(0.5)).unwrap(), 0.5);
        assert_eq!(ok(RawNumber::Int(20)).unwrap(), 20.0);
        let err = ok(RawNumber::Float(1e-30)).unwrap_err().to_string();
        assert_eq!(
            err,
            "configuration: k: must be a number in 0.1..=10000, got 1e-30"
        );
        assert!(ok(RawNumber::Float(f64::NAN)).is_err());
        assert!(ok(RawNumber::Float(f64::INFINITY)).is_err());
    }
}
