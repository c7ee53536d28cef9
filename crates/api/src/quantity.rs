//! Resource quantities (`64Mi`, `1G`, `500m`, `1e3`), parsed into bytes or units
//! (<https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/>).

/// The value of a quantity, rounded up to a whole number; `None` when malformed.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    if number < 0.0 {
        return None;
    }
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some((number * factor).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_quantity;

    #[test]
    fn table() {
        for (q, want) in [
            ("64Mi", Some(64 << 20)),
            ("1Gi", Some(1 << 30)),
            ("500M", Some(500_000_000)),
            ("1e3", Some(1000)),
            ("100", Some(100)),
            ("1.5Ki", Some(1536)),
            ("500m", Some(1)),
            ("x", None),
            ("-1", None),
            ("1Q", None),
        ] {
            assert_eq!(parse_quantity(q), want, "{q}");
        }
    }
}
