//! Formatting for people: headline figures, grouped thousands, money, dates and changes.
//! Every report kind formats its [`Figure`]s through these, so they read alike.
//!
//! Money is formatted from its [`Decimal`] ([`money`]); f64 only ever holds quantities,
//! percentages and counts ([`quantity`] is the one conversion, and never sees money).

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::super::Figure;
use super::super::table::{group_thousands, round_decimal};

/// The UTC date of an instant (µs), `YYYY-MM-DD`.
pub(super) fn day_str(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// A billing quantity or percentage (never money) as f64, for ratios, charts and real
/// columns.
pub(super) fn quantity(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// `1234567.8` → `1,234,568` (figures are for people).
pub(super) fn grouped(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let mut out = group_thousands(&s);
    if v < 0.0 && out.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.insert(0, '-');
    }
    out
}

/// An amount of money with its currency, exact to the cent: `1,234.50 EUR` (rounded half
/// away from zero to 2 decimals, as invoices round).
pub(super) fn money(amount: Decimal, currency: &str) -> String {
    let r = round_decimal(amount, 2);
    let mut out = group_thousands(&r.abs().to_string());
    if r.is_sign_negative() && !r.is_zero() {
        out.insert(0, '-');
    }
    format!("{out} {currency}")
}

/// A signed percent change, or `n/a`.
pub(super) fn pct_str(p: Option<f64>) -> String {
    p.map_or("n/a".into(), |p| format!("{p:+.1} %"))
}

/// Growth in percent of `current` over `previous` (none when there was nothing before).
pub(super) fn growth(current: f64, previous: f64) -> Option<f64> {
    (previous > 0.0).then(|| (current / previous - 1.0) * 100.0)
}

/// A headline figure.
pub(super) fn figure(label: &str, value: String, detail: Option<String>) -> Figure {
    Figure {
        label: label.into(),
        value,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_group_thousands() {
        assert_eq!(grouped(1234567.891, 2), "1,234,567.89");
        assert_eq!(grouped(999.0, 0), "999");
        assert_eq!(grouped(-1000.0, 0), "-1,000");
        assert_eq!(grouped(-0.001, 2), "0.00");
    }

    #[test]
    fn money_is_exact_and_grouped() {
        let d = |s: &str| s.parse::<Decimal>().unwrap_or_default();
        assert_eq!(money(d("1234567.891"), "EUR"), "1,234,567.89 EUR");
        assert_eq!(money(d("0.1") + d("0.2"), "USD"), "0.30 USD");
        assert_eq!(money(d("2.675"), "USD"), "2.68 USD");
        assert_eq!(money(d("-1000"), "USD"), "-1,000.00 USD");
        assert_eq!(money(d("-0.001"), "USD"), "0.00 USD");
        assert_eq!(money(Decimal::ZERO, ""), "0.00 ");
    }
}
