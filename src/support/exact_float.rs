//! f64 values that come back from a JSON file bit for bit. serde_json (without its
//! `float_roundtrip` feature, which here would rebuild all of CubeCL, a dependant of
//! serde_json) reads a number whose shortest form has 17 significant digits by an
//! approximation that can be one unit in the last place off: a resumed run's damping or
//! metrics then differed from the uninterrupted run's in the last bit. Such a value is
//! written as a string of Rust's shortest round-trip form, which Rust parses exactly; values
//! written as numbers (checkpoints from before) are still read.
//!
//! `#[serde(with = "crate::support::exact_float")]` on an `f64`, `exact_float::option` on an
//! `Option<f64>`.

use serde::{Deserialize, Deserializer, Serializer};

/// What a checkpoint holds for an f64: its exact text, or a number written before.
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Text(String),
    Number(f64),
}

impl Written {
    fn value<E: serde::de::Error>(self) -> Result<f64, E> {
        match self {
            Written::Number(v) => Ok(v),
            Written::Text(text) => text
                .parse()
                .map_err(|_| E::custom(format!("{text:?} is not a number"))),
        }
    }
}

pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{value:?}"))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Written::deserialize(deserializer)?.value()
}

/// The same for an `Option<f64>` (null where None).
pub mod option {
    use super::Written;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::serialize(v, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<f64>, D::Error> {
        Option::<Written>::deserialize(deserializer)?
            .map(Written::value)
            .transpose()
    }
}
