//! The benchmarks' JSON: serde_json values, plus the helpers the reports are built with (objects from pairs, numbers rounded to 3 decimals, pretty text with a final newline).

use anyhow::Result;
pub use serde_json::Value;

/// An object from `(key, value)` pairs.
pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

pub fn str(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

/// A number; `null` when it is not finite (JSON has no NaN).
pub fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A number rounded to 3 decimals (milliseconds to the microsecond, MiB/s to 0.001).
pub fn num3(x: f64) -> Value {
    num((x * 1000.0).round() / 1000.0)
}

pub fn nums3(values: &[f64]) -> Value {
    Value::Array(values.iter().map(|&x| num3(x)).collect())
}

/// Pretty JSON with two-space indentation and a final newline.
pub fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    text.push('\n');
    text
}

/// A JSON string literal.
pub fn quote(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// Parses one JSON document (surrounding whitespace allowed, nothing else after it).
pub fn parse(text: &str) -> Result<Value> {
    Ok(serde_json::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_numbers_are_rounded_and_never_nan() {
        let v = obj([
            ("name", str("x\\y")),
            ("runs", nums3(&[1.23456, 2.0])),
            ("nan", num(f64::NAN)),
        ]);
        let back = parse(&pretty(&v)).unwrap();
        assert_eq!(back["name"], "x\\y");
        assert_eq!(back["runs"][0].as_f64(), Some(1.235));
        assert_eq!(back["nan"], Value::Null);
        assert!(parse("{\"a\":1} x").is_err());
    }
}
