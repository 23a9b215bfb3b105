//! Feature access (entitlements): may a tenant use a feature, and with which value, at an
//! instant. Three sources, in this order (as OpenMeter's boolean, static and metered
//! entitlements):
//!
//! 1. **an override** in the optional `entitlements.csv` (`tenant_id, feature, value,
//!    from`): the row of the tenant and feature with the latest `from` at or before the
//!    instant (an empty `from`: always) decides. `value` is `true`/`false`, a number or
//!    text; `false` revokes what the plan grants;
//! 2. **the plan**'s `[plans.NAME.features]` (`sso = true`, `max_projects = 10`), the plan
//!    in force at the instant (a plan change takes effect at its instant);
//! 3. **a billed meter** of that name: access while allowance is left, or always when
//!    usage past it is billed as overage (a soft limit); the balance is reported.
//!
//! Anything else is not granted. `has_access` is false only for a `false` value, a hard
//! cap reached, or a feature nobody grants; a number or text grants access and carries the
//! value (a limit the application enforces, such as `max_projects`).

use std::path::Path;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::plans::{Limit, csv_table};
use super::quota::CheckAnswer;
use super::{Billing, Tenant};
use crate::error::{Error, Result};
use crate::time::{parse_instant, rfc3339};

/// Default overrides file (read when it exists).
pub const DEFAULT_ENTITLEMENTS_FILE: &str = "data/entitlements.csv";

/// A feature's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureValue {
    /// Granted or not.
    Bool(bool),
    /// A whole number (a limit such as `max_projects`).
    Int(i64),
    /// A number.
    Float(f64),
    /// Text (a tier name, a region).
    Text(String),
}

impl FeatureValue {
    /// Parses a CSV cell: `true`/`false`, a whole number, a number, else text.
    pub fn parse(s: &str) -> FeatureValue {
        let t = s.trim();
        // Spreadsheets write booleans their own way (FALSE, False, no, off): all of them
        // revoke, rather than granting as the text "FALSE".
        match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => FeatureValue::Bool(true),
            "false" | "no" | "off" => FeatureValue::Bool(false),
            _ => t
                .parse::<i64>()
                .map(FeatureValue::Int)
                .or_else(|_| t.parse::<f64>().map(FeatureValue::Float))
                .unwrap_or_else(|_| FeatureValue::Text(t.to_string())),
        }
    }

    /// Whether it grants access (anything but `false`: a number is a grant with a limit).
    pub fn grants(&self) -> bool {
        *self != FeatureValue::Bool(false)
    }
}

/// One override row.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The tenant.
    pub tenant_id: String,
    /// The feature.
    pub feature: String,
    /// Its value from `from` on.
    pub value: FeatureValue,
    /// From this instant (UTC µs; none: always).
    pub from: Option<i64>,
}

/// Reads `tenant_id, feature, value[, from]`; errors name the file, line and field.
pub fn load_overrides(path: &Path) -> Result<Vec<Override>> {
    let bad = |line: u64, reason: String| Error::BadInput {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let (mut rdr, header) = csv_table(path)?;
    let col = |n: &str| header.iter().position(|h| h == n);
    let (Some(ti), Some(fi), Some(vi)) = (col("tenant_id"), col("feature"), col("value")) else {
        return Err(bad(
            1,
            "the header needs tenant_id, feature and value columns".into(),
        ));
    };
    let from_i = col("from");
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| bad(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let get = |i: usize| rec.get(i).unwrap_or("");
        let (tenant, feature) = (get(ti), get(fi));
        if tenant.is_empty() || feature.is_empty() {
            return Err(bad(line, "tenant_id and feature must not be empty".into()));
        }
        // An empty value would grant (as the text ""): say which line lacks it.
        if get(vi).trim().is_empty() {
            return Err(bad(
                line,
                format!(
                    "the value of {tenant}'s {feature} is empty (true, false, a number or text)"
                ),
            ));
        }
        let from = from_i
            .map(get)
            .filter(|s| !s.is_empty())
            .map(|s| parse_instant("from", s).map_err(|e| bad(line, e.to_string())))
            .transpose()?;
        out.push(Override {
            tenant_id: tenant.to_string(),
            feature: feature.to_string(),
            value: FeatureValue::parse(get(vi)),
            from,
        });
    }
    Ok(out)
}

/// Overrides from `path` when given, else from [`DEFAULT_ENTITLEMENTS_FILE`] when it
/// exists, else none.
pub fn load_overrides_or_default(path: Option<&Path>) -> Result<Vec<Override>> {
    match path {
        Some(p) => load_overrides(p),
        None if Path::new(DEFAULT_ENTITLEMENTS_FILE).is_file() => {
            load_overrides(Path::new(DEFAULT_ENTITLEMENTS_FILE))
        }
        None => Ok(Vec::new()),
    }
}

/// The answer for one tenant and feature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entitlement {
    /// The tenant.
    pub tenant_id: String,
    /// The feature.
    pub feature: String,
    /// May it be used.
    pub has_access: bool,
    /// The value granted (none for a metered feature or one not granted).
    pub value: Option<FeatureValue>,
    /// `override`, `plan`, `metered` or `not_granted`.
    pub source: &'static str,
    /// Why, in words.
    pub reason: String,
    /// The plan in force at the instant.
    pub plan: String,
    /// The instant (RFC 3339).
    pub at: String,
    /// Metered: usage so far in the period.
    pub usage: Option<Decimal>,
    /// Metered: the allowance (none: unlimited).
    pub included: Option<Decimal>,
    /// Metered: allowance left (never below 0).
    pub balance: Option<Decimal>,
}

/// Decides `feature` for `tenant` at `at`. `metered` evaluates the billed meter of that
/// name (the lake's usage in the CLI, the live counters in `serve`); it is called only when
/// no override or plan feature decides.
pub fn entitlement(
    billing: &Billing,
    overrides: &[Override],
    tenant: &str,
    feature: &str,
    at: i64,
    metered: impl FnOnce() -> Result<CheckAnswer>,
) -> Result<Entitlement> {
    let t: &Tenant = billing
        .tenants
        .iter()
        .find(|t| t.id == tenant)
        .ok_or_else(|| Error::InvalidParameter {
            name: "--tenant",
            reason: format!("`{tenant}` is not in the tenants file"),
        })?;
    let plan_id = t.plan_at(at).to_string();
    let answer = |has_access, value, source, reason: String| Entitlement {
        tenant_id: tenant.to_string(),
        feature: feature.to_string(),
        has_access,
        value,
        source,
        reason,
        plan: plan_id.clone(),
        at: rfc3339(at),
        usage: None,
        included: None,
        balance: None,
    };
    let over = overrides
        .iter()
        .filter(|o| o.tenant_id == tenant && o.feature == feature)
        .filter(|o| o.from.is_none_or(|f| f <= at))
        .max_by_key(|o| o.from.unwrap_or(i64::MIN));
    if let Some(o) = over {
        let since = o
            .from
            .map_or("always".to_string(), |f| format!("since {}", rfc3339(f)));
        return Ok(answer(
            o.value.grants(),
            Some(o.value.clone()),
            "override",
            format!("tenant override ({since})"),
        ));
    }
    let plan = billing.catalog.plan(&plan_id);
    if let Some(v) = plan.and_then(|p| p.features.get(feature)) {
        let verb = if v.grants() { "grants" } else { "denies" };
        return Ok(answer(
            v.grants(),
            Some(v.clone()),
            "plan",
            format!("plan `{plan_id}` {verb} it"),
        ));
    }
    if billing.catalog.meters.contains_key(feature) {
        let c = metered()?;
        let hard = plan.is_some_and(|p| p.allowance(feature).limit == Limit::HardCap);
        let balance = c.included.map(|i| (i - c.used).max(Decimal::ZERO));
        let left = balance.is_none_or(|b| b > Decimal::ZERO);
        let (ok, why) = match (left, hard) {
            (true, _) => (
                true,
                match balance {
                    Some(b) => {
                        format!("{b} of {} left this period", c.included.unwrap_or_default())
                    }
                    None => "unlimited on the plan".to_string(),
                },
            ),
            (false, false) => (
                true,
                "allowance used; further use is billed as overage".to_string(),
            ),
            (false, true) => (false, "allowance used; the plan caps it".to_string()),
        };
        let mut e = answer(ok, None, "metered", why);
        e.usage = Some(c.used);
        e.included = c.included;
        e.balance = balance;
        return Ok(e);
    }
    Ok(answer(
        false,
        None,
        "not_granted",
        format!(
            "neither plan `{plan_id}` nor an override grants `{feature}`, and no billed meter has that name"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_by_shape() {
        assert_eq!(FeatureValue::parse("true"), FeatureValue::Bool(true));
        assert_eq!(FeatureValue::parse(" 10 "), FeatureValue::Int(10));
        assert_eq!(FeatureValue::parse("2.5"), FeatureValue::Float(2.5));
        assert_eq!(FeatureValue::parse("eu"), FeatureValue::Text("eu".into()));
        assert!(!FeatureValue::parse("false").grants());
        for off in ["FALSE", "False", " no ", "OFF"] {
            assert!(!FeatureValue::parse(off).grants(), "{off}");
        }
        for on in ["TRUE", "Yes", "1", "eu", "2.5"] {
            assert!(FeatureValue::parse(on).grants(), "{on}");
        }
        assert!(
            FeatureValue::Int(0).grants(),
            "a value is a grant with a limit"
        );
    }
}
