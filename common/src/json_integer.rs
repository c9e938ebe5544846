//! JSON Schema counts `3.0` as an integer, and so `/openapi.json`'s `"type": "integer"` promises
//! that `3.0` is accepted; serde's integer types refuse it. These deserializers accept a number
//! with no fractional part, within the type's range, and refuse everything else as serde would.

use serde::de::{Deserialize, Deserializer, Error};

fn integral(n: &serde_json::Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(i128::from(u));
    }
    // Beyond ±2^63 a float is out of every range used here; below it the cast is exact.
    n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i128)
}

fn bounded<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D, expected: &str) -> Result<Option<T>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    integral(&n)
        .and_then(|i| T::try_from(i).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("invalid value: {n}, expected {expected}")))
}

/// An optional `i64`; `3.0` reads as 3.
pub fn option_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    bounded(d, "a whole number")
}

/// An optional `u32`; `3.0` reads as 3.
pub fn option_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded(d, "a whole number from 0 to 4294967295")
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct Row {
        #[serde(default, deserialize_with = "super::option_i64")]
        n: Option<i64>,
        #[serde(default, deserialize_with = "super::option_u32")]
        u: Option<u32>,
    }

    fn read(json: &str) -> Result<(Option<i64>, Option<u32>), String> {
        serde_json::from_str::<Row>(json).map(|r| (r.n, r.u)).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers_and_the_rest_is_refused() {
        assert_eq!(read(r#"{"n": 3.0, "u": 20060.0}"#), Ok((Some(3), Some(20060))));
        assert_eq!(read(r#"{"n": -2, "u": 4294967295}"#), Ok((Some(-2), Some(u32::MAX))));
        assert_eq!(read(r#"{"n": null}"#), Ok((None, None)));
        assert_eq!(read("{}"), Ok((None, None)));
        for bad in [r#"{"n": 2.5}"#, r#"{"u": -1}"#, r#"{"u": 4294967296}"#, r#"{"n": 1e300}"#, r#"{"n": "3"}"#] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
