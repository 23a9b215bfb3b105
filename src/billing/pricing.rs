//! Overage pricing models: what `q` units over the included quantity cost.
//!
//! All arithmetic is exact decimal ([`Decimal`]); the amount returned is unrounded, and the
//! caller rounds each invoice line once (see [`crate::billing::round_money`]). An amount
//! beyond the largest decimal (~7.9e28, reachable only from absurd usage such as one event
//! of 1e29) saturates at [`Decimal::MAX`] instead of panicking or wrapping.
//!
//! | model | cost of `q` overage units |
//! |---|---|
//! | `per_unit = p` | `q · p` (fractional units, e.g. 2.5 GB, pay pro rata) |
//! | `package = { size = s, price = p }` | `⌈q / s⌉ · p`: a started package is billed whole |
//! | `graduated = [tiers]` | each unit at the price of the tier it falls in (plus each touched tier's flat fee) |
//! | `volume = [tiers]` | every unit at the price of the tier `q` falls in (plus that tier's flat fee) |
//!
//! Tiers count overage units: `{ up_to = 1000, price = "0.01" }` covers overage units
//! (0, 1000]; the last tier has no `up_to`.

use rust_decimal::Decimal;
use serde::Deserialize;

/// One price tier.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Upper bound (inclusive) of the tier in overage units; none for the last tier.
    pub up_to: Option<Decimal>,
    /// Price per unit in the tier.
    pub price: Decimal,
    /// A flat amount charged when the tier is reached.
    #[serde(default)]
    pub flat: Decimal,
}

/// How overage units are priced.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Pricing {
    /// A price per unit.
    PerUnit(Decimal),
    /// A price per started package of `size` units.
    Package {
        /// Units per package.
        size: Decimal,
        /// Price of one package.
        price: Decimal,
    },
    /// Graduated tiers: each unit priced by its own tier.
    Graduated(Vec<Tier>),
    /// Volume tiers: all units priced by the tier the total falls in.
    Volume(Vec<Tier>),
}

impl Pricing {
    /// Checks prices and tiers; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let price = |p: Decimal| {
            if p.is_sign_negative() {
                Err(format!("price {p} is negative"))
            } else {
                Ok(())
            }
        };
        match self {
            Pricing::PerUnit(p) => price(*p),
            Pricing::Package { size, price: p } => {
                if *size <= Decimal::ZERO {
                    return Err(format!("package size {size} must be above 0"));
                }
                price(*p)
            }
            Pricing::Graduated(tiers) | Pricing::Volume(tiers) => {
                if tiers.is_empty() {
                    return Err("needs at least one tier".into());
                }
                let mut last = Decimal::ZERO;
                for (i, t) in tiers.iter().enumerate() {
                    price(t.price)?;
                    price(t.flat)?;
                    match t.up_to {
                        Some(u) if i + 1 == tiers.len() => {
                            return Err(format!(
                                "the last tier must not have up_to (it has {u}): usage above it would have no price"
                            ));
                        }
                        Some(u) if u <= last => {
                            return Err(format!(
                                "tier {} up_to {u} must be above the previous bound {last}",
                                i + 1
                            ));
                        }
                        Some(u) => last = u,
                        None if i + 1 < tiers.len() => {
                            return Err(format!("tier {} lacks up_to (only the last may)", i + 1));
                        }
                        None => {}
                    }
                }
                Ok(())
            }
        }
    }

    /// The exact (unrounded) cost of `q` overage units; 0 for `q ≤ 0`; [`Decimal::MAX`]
    /// when it is beyond the largest decimal.
    pub fn cost(&self, q: Decimal) -> Decimal {
        if q <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        self.checked_cost(q).unwrap_or(Decimal::MAX)
    }

    /// [`Pricing::cost`] of `q > 0`, none on overflow.
    fn checked_cost(&self, q: Decimal) -> Option<Decimal> {
        match self {
            Pricing::PerUnit(p) => q.checked_mul(*p),
            Pricing::Package { size, price } => q.checked_div(*size)?.ceil().checked_mul(*price),
            Pricing::Graduated(tiers) => {
                let mut lower = Decimal::ZERO;
                let mut cost = Decimal::ZERO;
                for t in tiers {
                    if q <= lower {
                        break;
                    }
                    let upper = t.up_to.map_or(q, |u| u.min(q));
                    let tier = (upper - lower).checked_mul(t.price)?.checked_add(t.flat)?;
                    cost = cost.checked_add(tier)?;
                    lower = t.up_to.unwrap_or(q);
                }
                Some(cost)
            }
            Pricing::Volume(tiers) => {
                let t = tiers
                    .iter()
                    .find(|t| t.up_to.is_none_or(|u| q <= u))
                    .or(tiers.last());
                t.map_or(Some(Decimal::ZERO), |t| {
                    q.checked_mul(t.price)?.checked_add(t.flat)
                })
            }
        }
    }

    /// A short description for tables (`0.01 per 10`, `graduated (3 tiers)`).
    pub fn describe(&self) -> String {
        match self {
            Pricing::PerUnit(p) => format!("{p} per unit"),
            Pricing::Package { size, price } => format!("{price} per {size}"),
            Pricing::Graduated(t) => format!("graduated ({} tiers)", t.len()),
            Pricing::Volume(t) => format!("volume ({} tiers)", t.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn tiers() -> Vec<Tier> {
        vec![
            Tier {
                up_to: Some(d("100")),
                price: d("0.10"),
                flat: d("0"),
            },
            Tier {
                up_to: Some(d("1000")),
                price: d("0.05"),
                flat: d("1"),
            },
            Tier {
                up_to: None,
                price: d("0.01"),
                flat: d("0"),
            },
        ]
    }

    #[test]
    fn each_model_by_hand() {
        // Basic documents: 0.50 each.
        assert_eq!(Pricing::PerUnit(d("0.50")).cost(d("7")), d("3.50"));
        // Basic API calls: 0.01 per started 10.
        let pkg = Pricing::Package {
            size: d("10"),
            price: d("0.01"),
        };
        assert_eq!(pkg.cost(d("1")), d("0.01"));
        assert_eq!(pkg.cost(d("10")), d("0.01"));
        assert_eq!(pkg.cost(d("11")), d("0.02"));
        assert_eq!(pkg.cost(d("0")), d("0"));
        // Graduated: 100 × 0.10 + 150 × 0.05 + flat 1 = 18.50.
        let g = Pricing::Graduated(tiers());
        assert_eq!(g.cost(d("250")), d("18.50"));
        assert_eq!(g.cost(d("100")), d("10.00"));
        // 100 × 0.10 + 900 × 0.05 + 1 + 500 × 0.01 = 61.
        assert_eq!(g.cost(d("1500")), d("61.00"));
        // Volume: all 250 at 0.05 + flat 1 = 13.50; all 1500 at 0.01 = 15.
        let v = Pricing::Volume(tiers());
        assert_eq!(v.cost(d("250")), d("13.50"));
        assert_eq!(v.cost(d("100")), d("10.00"));
        assert_eq!(v.cost(d("1500")), d("15.00"));
        assert!(g.validate().is_ok() && v.validate().is_ok());
    }

    #[test]
    fn costs_beyond_the_largest_decimal_saturate() {
        let max = Decimal::MAX;
        assert_eq!(Pricing::PerUnit(d("2.00")).cost(max), max);
        let pkg = Pricing::Package {
            size: d("0.5"),
            price: d("1"),
        };
        assert_eq!(pkg.cost(max), max);
        // Cheap tiers stay below the largest decimal: an exact amount, not the cap.
        assert!(Pricing::Graduated(tiers()).cost(max) < max);
        let steep = vec![Tier {
            up_to: None,
            price: d("3"),
            flat: d("0"),
        }];
        assert_eq!(Pricing::Graduated(steep.clone()).cost(max), max);
        assert_eq!(Pricing::Volume(steep).cost(max), max);
    }

    #[test]
    fn bad_tiers_are_named() {
        let mut t = tiers();
        t[1].up_to = Some(d("50"));
        assert!(
            Pricing::Graduated(t)
                .validate()
                .unwrap_err()
                .contains("tier 2")
        );
        let mut t = tiers();
        t[2].up_to = Some(d("5000"));
        assert!(
            Pricing::Volume(t)
                .validate()
                .unwrap_err()
                .contains("last tier")
        );
        assert!(
            Pricing::Package {
                size: d("0"),
                price: d("1")
            }
            .validate()
            .is_err()
        );
        assert!(Pricing::PerUnit(d("-1")).validate().is_err());
    }
}
