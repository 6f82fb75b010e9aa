//! Kubernetes resource quantities (`2`, `500m`, `1.5`, `2Ki`, `1e3`), as far as KubeVirt reads
//! them for the guest CPU topology: `Quantity.Value()`, the value rounded up to an integer.

use serde::{Deserialize, Serialize};

/// A quantity as written: YAML may give `2` as a number or `"2"` as a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QuantityText {
    Int(i64),
    Float(f64),
    Text(String),
}

/// The message the API server gives for a quantity it cannot decode.
pub const QUANTITY_SYNTAX: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

impl QuantityText {
    /// `Quantity.Value()`: the quantity rounded up to an integer, or `None` when it does not
    /// parse. Saturates at `i64::MAX`, as Kubernetes does.
    pub fn ceil_value(&self) -> Option<i64> {
        match self {
            QuantityText::Int(int) => Some(*int),
            QuantityText::Float(float) => ceil_text(&float.to_string()),
            QuantityText::Text(text) => ceil_text(text),
        }
    }
}

/// Exact decimal arithmetic: the mantissa as an integer with `frac` digits after the point,
/// scaled by 10^exp10 · 2^exp2, rounded up.
fn ceil_text(text: &str) -> Option<i64> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'-' => (-1i128, &text[1..]),
        b'+' => (1, &text[1..]),
        _ => (1, text),
    };
    let num_len = rest
        .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return None;
    }
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exp => {
            let digits = exp.strip_prefix(['e', 'E'])?;
            let value: i32 = digits.parse().ok()?;
            (value, 0)
        }
    };
    // Digits beyond 38 would overflow i128; no CPU count needs them.
    let digits = format!("{int_part}{frac_part}");
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    let scale = exp10 - i32::try_from(frac_part.len()).ok()?;
    let scaled = mantissa.checked_mul(1i128 << exp2)?;
    let value = if scale >= 0 {
        10i128
            .checked_pow(scale.unsigned_abs())
            .and_then(|pow| scaled.checked_mul(pow))
            .unwrap_or(i128::MAX)
    } else {
        match 10i128.checked_pow(scale.unsigned_abs()) {
            // Rounded up: towards +∞ for positive values.
            Some(pow) if sign > 0 => (scaled + pow - 1) / pow,
            Some(pow) => scaled / pow,
            None => i128::from(sign > 0 && scaled > 0),
        }
    };
    Some(i64::try_from(sign * value).unwrap_or(if sign > 0 { i64::MAX } else { i64::MIN }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<i64> {
        QuantityText::Text(text.into()).ceil_value()
    }

    #[test]
    fn rounds_up_like_kubernetes_value() {
        assert_eq!(value("2"), Some(2));
        assert_eq!(value("500m"), Some(1));
        assert_eq!(value("3000m"), Some(3));
        assert_eq!(value("3001m"), Some(4));
        assert_eq!(value("1.5"), Some(2));
        assert_eq!(value("0.5"), Some(1));
        assert_eq!(value("0"), Some(0));
        assert_eq!(value("2k"), Some(2000));
        assert_eq!(value("1Ki"), Some(1024));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("15e-1"), Some(2));
        assert_eq!(value("+4"), Some(4));
        assert_eq!(QuantityText::Int(6).ceil_value(), Some(6));
        assert_eq!(QuantityText::Float(2.5).ceil_value(), Some(3));
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        for bad in ["", "two", "1.2.3", "5x", ".", "1e", "m"] {
            assert_eq!(value(bad), None, "{bad:?}");
        }
    }
}
