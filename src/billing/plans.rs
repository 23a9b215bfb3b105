//! The plan catalogue (`data/plans.toml`) and tenant assignments (`data/tenants.csv`).
//!
//! The TOML file documents itself (see `data/plans.toml`): a currency, the billed meters
//! (which lake meter each reads and how a period's usage is measured: `sum` for counters,
//! `max` or `time_weighted` for gauges, `unique_users` for seats counted from activity),
//! and per plan a base fee, a period, alert thresholds and per meter an included quantity
//! (or `"unlimited"`) with either `hard_cap = true` or an `overage` price.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::period::Cycle;
use super::pricing::Pricing;
use crate::error::{Error, Result};
use crate::rollup::Zone;
use crate::time::parse_instant;

/// Default plan catalogue.
pub const DEFAULT_PLANS_FILE: &str = "data/plans.toml";
/// Default tenant assignments.
pub const DEFAULT_TENANTS_FILE: &str = "data/tenants.csv";
/// The built-in catalogue (the shipped `data/plans.toml`): what the default path means when
/// the current directory has no `data/plans.toml`.
pub const DEFAULT_PLANS_TOML: &str = include_str!("../../data/plans.toml");
/// The shipped example tenants (`meterlake init` writes it).
pub const EXAMPLE_TENANTS_CSV: &str = include_str!("../../data/tenants.csv");

/// How a period's usage of a meter is measured from its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageRule {
    /// Sum of event values (counters: calls, documents, tokens).
    Sum,
    /// Highest reading (gauges: storage, seats).
    Max,
    /// Time-weighted average of the readings over the period so far (gauges).
    TimeWeighted,
    /// Distinct `user_id`s with an event in the period (seats from activity).
    UniqueUsers,
}

impl UsageRule {
    /// Whether usage adds up over time (a forecast of daily amounts sums to the period).
    pub fn additive(self) -> bool {
        matches!(self, UsageRule::Sum | UsageRule::UniqueUsers)
    }

    /// The rule's name in the TOML file.
    pub fn name(self) -> &'static str {
        match self {
            UsageRule::Sum => "sum",
            UsageRule::Max => "max",
            UsageRule::TimeWeighted => "time_weighted",
            UsageRule::UniqueUsers => "unique_users",
        }
    }
}

/// A billed meter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingMeter {
    /// The lake meter it reads (default: its own name).
    #[serde(default)]
    pub event: String,
    /// How a period's usage is measured.
    pub usage: UsageRule,
    /// The billing unit (`GB`, `documents`).
    #[serde(default)]
    pub unit: String,
    /// Lake units per billing unit (1e9 bytes per GB); default 1.
    #[serde(default = "one")]
    pub scale: Decimal,
    /// Decimal places quantities are kept to (usage and prorated allowances), default 0.
    #[serde(default)]
    pub precision: u32,
    /// Read this property of the events instead of `value`: a JSONPath into a CloudEvent's
    /// data, as a meter's `value_property` (`"$.usage.tokens"`), so OpenMeter-style events
    /// are billed on the quantity they carry. Events without it add nothing.
    #[serde(default)]
    pub value_property: Option<String>,
    /// The property key `value_property` names (set when the catalogue is read).
    #[serde(skip)]
    pub property: Option<String>,
}

/// Separates the event meter from the property in a [`BillingMeter::source`] key (a
/// control character, which no event meter name may hold).
pub const SOURCE_SEP: char = '\u{1f}';

impl BillingMeter {
    /// What the meter measures, as measurement keys the events: the lake (event) meter, or
    /// `event` + [`SOURCE_SEP`] + the property key when it reads a property.
    pub fn source(&self) -> String {
        match &self.property {
            None => self.event.clone(),
            Some(p) => format!("{}{SOURCE_SEP}{p}", self.event),
        }
    }

    /// The quantity `e` adds to this meter: its value, or its property's number; `None`
    /// when `e` is another meter's or lacks the property.
    pub fn value_of(&self, e: &crate::event::UsageEvent) -> Option<f64> {
        if e.meter != self.event {
            return None;
        }
        let Some(key) = &self.property else {
            return Some(e.value);
        };
        let props: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&e.properties).ok()?;
        // As the lake's readers do ([`crate::rollup::property_number`]): a value that is no
        // finite number is no reading.
        match props.get(key)? {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|v: &f64| v.is_finite())
    }
}

fn one() -> Decimal {
    Decimal::ONE
}

/// A quantity in the TOML file: a number or `"unlimited"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawQuantity {
    Number(Decimal),
    Word(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllowance {
    included: RawQuantity,
    #[serde(default)]
    hard_cap: bool,
    overage: Option<Pricing>,
    warning: Option<Decimal>,
    critical: Option<Decimal>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: Option<String>,
    #[serde(default)]
    base_fee: Decimal,
    #[serde(default = "month")]
    period: String,
    #[serde(default = "eighty")]
    warning: Decimal,
    #[serde(default = "ninety")]
    critical: Decimal,
    cost_alert: Option<Decimal>,
    #[serde(default)]
    meters: BTreeMap<String, RawAllowance>,
    #[serde(default)]
    features: BTreeMap<String, super::entitlements::FeatureValue>,
    limits: Option<RawLimits>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    user_rate: f64,
    user_burst: Option<f64>,
}

fn month() -> String {
    "month".into()
}
fn eighty() -> Decimal {
    Decimal::from(80)
}
fn ninety() -> Decimal {
    Decimal::from(90)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    currency: String,
    #[serde(default = "two")]
    minor_units: u32,
    meters: BTreeMap<String, BillingMeter>,
    plans: BTreeMap<String, RawPlan>,
}

fn two() -> u32 {
    2
}

/// Past the allowance: blocked, or billed.
#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    /// Usage stops at the included quantity.
    HardCap,
    /// Usage above it is billed.
    Overage(Pricing),
}

/// A plan's terms for one meter.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowance {
    /// Included per period; `None`: unlimited.
    pub included: Option<Decimal>,
    /// What happens past it.
    pub limit: Limit,
    /// Warning threshold, percent of included.
    pub warning: Decimal,
    /// Critical threshold, percent of included.
    pub critical: Decimal,
}

/// A plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its id (`basic`).
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Fee per period.
    pub base_fee: Decimal,
    /// Months per period.
    pub months: u32,
    /// Overage cost (so far in a period) that raises a `cost_over` alert.
    pub cost_alert: Option<Decimal>,
    /// Terms per billed meter; a meter not listed is unlimited and free.
    pub meters: BTreeMap<String, Allowance>,
    /// Features it grants (`[plans.NAME.features]`): booleans and static values.
    pub features: BTreeMap<String, super::entitlements::FeatureValue>,
    /// Events a second one user may track, and the burst (`[plans.NAME.limits]`
    /// `user_rate`, `user_burst`); none: no per-user limit.
    pub user_limit: Option<(f64, f64)>,
}

impl Plan {
    /// The terms for `meter` (unlimited when the plan does not list it).
    pub fn allowance(&self, meter: &str) -> Allowance {
        self.meters.get(meter).cloned().unwrap_or(Allowance {
            included: None,
            limit: Limit::Overage(Pricing::PerUnit(Decimal::ZERO)),
            warning: eighty(),
            critical: ninety(),
        })
    }
}

/// Every plan and billed meter.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// ISO 4217 code of every amount.
    pub currency: String,
    /// Decimal places money is rounded to (2 for EUR).
    pub minor_units: u32,
    /// Billed meters by name.
    pub meters: BTreeMap<String, BillingMeter>,
    /// Plans by id.
    pub plans: BTreeMap<String, Plan>,
    /// Where it was read from.
    pub path: PathBuf,
}

impl Catalog {
    /// Reads and checks a plan catalogue. The default path ([`DEFAULT_PLANS_FILE`]), when
    /// the current directory has no such file, means the built-in catalogue, so the billing
    /// commands work from any directory; any other path must exist.
    pub fn load(path: &Path) -> Result<Catalog> {
        if path == Path::new(DEFAULT_PLANS_FILE) && !path.exists() {
            return Catalog::from_toml(DEFAULT_PLANS_TOML, Path::new("<built-in plans.toml>"));
        }
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Catalog::from_toml(&text, path)
    }

    /// Parses and checks a plan catalogue; errors name the plan, meter and field.
    pub fn from_toml(text: &str, path: &Path) -> Result<Catalog> {
        let bad = |reason: String| Error::BadInput {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawCatalog = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if raw.currency.len() != 3 || !raw.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(bad(format!(
                "currency `{}` is not an ISO 4217 code such as EUR",
                raw.currency
            )));
        }
        let mut meters = raw.meters;
        for (name, m) in meters.iter_mut() {
            if m.event.is_empty() {
                m.event = name.clone();
            }
            if m.scale <= Decimal::ZERO {
                return Err(bad(format!("meters.{name}.scale must be above 0")));
            }
            if let Some(path) = &m.value_property {
                if m.usage == UsageRule::UniqueUsers {
                    return Err(bad(format!(
                        "meters.{name}.value_property: unique_users counts users, it reads no value"
                    )));
                }
                m.property = crate::rollup::value_property_key(path)
                    .map_err(|e| bad(format!("meters.{name}.value_property {e}")))?;
            }
            if m.precision > 9 {
                return Err(bad(format!(
                    "meters.{name}.precision {} is over 9",
                    m.precision
                )));
            }
        }
        let mut plans = BTreeMap::new();
        for (id, p) in raw.plans {
            if id != id.to_lowercase() {
                return Err(bad(format!("plan id `{id}` must be lower case")));
            }
            let months = match p.period.as_str() {
                "month" => 1,
                "quarter" => 3,
                "year" => 12,
                other => {
                    return Err(bad(format!(
                        "plans.{id}.period `{other}` is not month, quarter or year"
                    )));
                }
            };
            if p.base_fee.is_sign_negative() {
                return Err(bad(format!("plans.{id}.base_fee is negative")));
            }
            let mut allow = BTreeMap::new();
            for (meter, a) in p.meters {
                let at = format!("plans.{id}.meters.{meter}");
                if !meters.contains_key(&meter) {
                    return Err(bad(format!(
                        "{at}: `{meter}` is not a billed meter (add it under [meters.{meter}])"
                    )));
                }
                let included = match a.included {
                    RawQuantity::Number(n) if n >= Decimal::ZERO => Some(n),
                    RawQuantity::Number(n) => {
                        return Err(bad(format!("{at}.included {n} is negative")));
                    }
                    RawQuantity::Word(w) if w == "unlimited" => None,
                    RawQuantity::Word(w) => {
                        return Err(bad(format!(
                            "{at}.included `{w}` is neither a number nor \"unlimited\""
                        )));
                    }
                };
                let limit = match (a.hard_cap, a.overage) {
                    (true, None) => Limit::HardCap,
                    (false, Some(pr)) => {
                        pr.validate()
                            .map_err(|e| bad(format!("{at}.overage: {e}")))?;
                        Limit::Overage(pr)
                    }
                    (true, Some(_)) => {
                        return Err(bad(format!(
                            "{at}: hard_cap and overage exclude each other"
                        )));
                    }
                    (false, None) if included.is_none() => {
                        Limit::Overage(Pricing::PerUnit(Decimal::ZERO))
                    }
                    (false, None) => {
                        return Err(bad(format!(
                            "{at}: say what happens past the allowance: hard_cap = true or an overage price"
                        )));
                    }
                };
                let warning = a.warning.unwrap_or(p.warning);
                let critical = a.critical.unwrap_or(p.critical);
                if !(warning > Decimal::ZERO
                    && warning <= critical
                    && critical <= Decimal::from(100))
                {
                    return Err(bad(format!(
                        "{at}: thresholds must satisfy 0 < warning ({warning}) ≤ critical ({critical}) ≤ 100"
                    )));
                }
                allow.insert(
                    meter,
                    Allowance {
                        included,
                        limit,
                        warning,
                        critical,
                    },
                );
            }
            let user_limit = match &p.limits {
                None => None,
                Some(l) => {
                    let burst = l.user_burst.unwrap_or(l.user_rate.max(1.0));
                    if !(l.user_rate.is_finite()
                        && l.user_rate > 0.0
                        && burst.is_finite()
                        && burst >= 1.0)
                    {
                        return Err(bad(format!(
                            "plans.{id}.limits: user_rate must be above 0 and user_burst at least 1"
                        )));
                    }
                    Some((l.user_rate, burst))
                }
            };
            plans.insert(
                id.clone(),
                Plan {
                    name: p.name.unwrap_or_else(|| id.clone()),
                    id,
                    base_fee: p.base_fee,
                    months,
                    cost_alert: p.cost_alert,
                    meters: allow,
                    features: p.features,
                    user_limit,
                },
            );
        }
        if plans.is_empty() {
            return Err(bad("no [plans.*] defined".into()));
        }
        Ok(Catalog {
            currency: raw.currency,
            minor_units: raw.minor_units,
            meters,
            plans,
            path: path.to_path_buf(),
        })
    }

    /// A plan by id, or an error naming where the id came from.
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.get(id)
    }
}

/// One tenant's subscription.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The tenant.
    pub id: String,
    /// Its plan id.
    pub plan: String,
    /// Subscription start anchoring its periods (`None`: calendar periods).
    pub anchor: Option<NaiveDate>,
    /// Its time zone.
    pub zone: Zone,
    /// When it moved to `plan` (UTC µs), if it did.
    pub plan_changed_at: Option<i64>,
    /// The plan before `plan_changed_at`.
    pub previous_plan: Option<String>,
    /// Its own alert recipients (`notify_email`: addresses separated by `;` or `,`).
    pub notify_email: Vec<String>,
}

impl Tenant {
    /// Its billing cycle on plan `plan`.
    pub fn cycle(&self, plan: &Plan) -> Cycle {
        Cycle {
            months: plan.months,
            anchor: self.anchor,
            zone: self.zone,
        }
    }

    /// The plan in force at instant `t`.
    pub fn plan_at(&self, t: i64) -> &str {
        match (self.plan_changed_at, &self.previous_plan) {
            (Some(c), Some(p)) if t < c => p,
            _ => &self.plan,
        }
    }
}

/// Opens a CSV file with a header row (fields trimmed): the reader and the header. Errors
/// name the file (and line 1 for a bad header).
pub(crate) fn csv_table(path: &Path) -> Result<(csv::Reader<std::fs::File>, csv::StringRecord)> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(file);
    let header = rdr
        .headers()
        .map_err(|e| Error::BadInput {
            path: path.to_path_buf(),
            reason: format!("line 1: {e}"),
        })?
        .clone();
    Ok((rdr, header))
}

/// Parses a tenants file's `time_zone` field (empty: UTC); the error is the line's reason.
fn parse_zone(z: Option<&str>) -> std::result::Result<Zone, String> {
    match z {
        Some(z) => {
            Zone::from_str(z).map_err(|_| format!("time_zone `{z}` is not an IANA time zone"))
        }
        None => Ok(Zone::UTC),
    }
}

/// Just the time zones of a tenants file (`tenant_id`[, `time_zone`]), without the plan
/// catalogue: for readers that only need each tenant's local days (sessions).
pub fn load_zones(path: &Path) -> Result<std::collections::HashMap<String, Zone>> {
    let bad = |line: u64, reason: String| Error::BadInput {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let (mut rdr, header) = csv_table(path)?;
    let col = |name: &str| header.iter().position(|h| h == name);
    let Some(ti) = col("tenant_id") else {
        return Err(bad(1, "the header needs a tenant_id column".into()));
    };
    let zi = col("time_zone");
    let mut out = std::collections::HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| bad(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let zone = parse_zone(zi.and_then(|i| rec.get(i)).filter(|s| !s.is_empty()))
            .map_err(|e| bad(line, e))?;
        out.insert(rec.get(ti).unwrap_or("").to_string(), zone);
    }
    Ok(out)
}

/// Reads `tenant_id, plan[, period_anchor, time_zone, plan_changed_at, previous_plan,
/// notify_email]`,
/// checking every plan id against the catalogue. Errors name the file, line and field.
pub fn load_tenants(path: &Path, catalog: &Catalog) -> Result<Vec<Tenant>> {
    let bad = |line: u64, reason: String| Error::BadInput {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    if path == Path::new(DEFAULT_TENANTS_FILE) && !path.exists() {
        return Err(Error::InvalidParameter {
            name: "tenants file",
            reason: format!(
                "{DEFAULT_TENANTS_FILE} is not in this directory ({}); give one with --tenants \
                 FILE (CSV: tenant_id,plan,time_zone) where the command takes it, or as \
                 paths.tenants in meterlake.toml (--config FILE; `serve` reads it only there), \
                 or write an example with `meterlake init DIR`",
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            ),
        });
    }
    let (mut rdr, header) = csv_table(path)?;
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(ti), Some(pi)) = (col("tenant_id"), col("plan")) else {
        return Err(bad(1, "the header needs tenant_id and plan columns".into()));
    };
    let (ai, zi, ci, vi, ei) = (
        col("period_anchor"),
        col("time_zone"),
        col("plan_changed_at"),
        col("previous_plan"),
        col("notify_email"),
    );
    let known = |line: u64, field: &str, id: &str| -> Result<String> {
        if catalog.plans.contains_key(id) {
            Ok(id.to_string())
        } else {
            Err(bad(
                line,
                format!(
                    "{field} `{id}` is not a plan in {} (plans: {})",
                    catalog.path.display(),
                    catalog.plans.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ))
        }
    };
    let mut out: Vec<Tenant> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| bad(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let get = |i: Option<usize>| i.and_then(|i| rec.get(i)).filter(|s| !s.is_empty());
        let Some(id) = get(Some(ti)) else {
            return Err(bad(line, "tenant_id is empty".into()));
        };
        if !seen.insert(id.to_string()) {
            return Err(bad(line, format!("tenant `{id}` is listed twice")));
        }
        let plan = known(line, "plan", get(Some(pi)).unwrap_or(""))?;
        let anchor = get(ai)
            .map(|s| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                    bad(
                        line,
                        format!("period_anchor `{s}` is not a date YYYY-MM-DD"),
                    )
                })
            })
            .transpose()?;
        let zone = parse_zone(get(zi)).map_err(|e| bad(line, e))?;
        let plan_changed_at = get(ci)
            .map(|s| parse_instant("plan_changed_at", s).map_err(|e| bad(line, e.to_string())))
            .transpose()?;
        let previous_plan = get(vi)
            .map(|p| known(line, "previous_plan", p))
            .transpose()?;
        if plan_changed_at.is_some() != previous_plan.is_some() {
            return Err(bad(
                line,
                "plan_changed_at and previous_plan go together (give both or neither)".into(),
            ));
        }
        let mut notify_email = Vec::new();
        for a in get(ei).unwrap_or("").split([';', ',']).map(str::trim) {
            if a.is_empty() {
                continue;
            }
            if !a.contains('@') || a.starts_with('@') || a.ends_with('@') {
                return Err(bad(
                    line,
                    format!("notify_email `{a}` is not an e-mail address"),
                ));
            }
            notify_email.push(a.to_string());
        }
        out.push(Tenant {
            id: id.to_string(),
            plan,
            anchor,
            zone,
            plan_changed_at,
            previous_plan,
            notify_email,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_catalogue_matches_the_issue_table() {
        let c = Catalog::load(Path::new(DEFAULT_PLANS_FILE)).unwrap();
        assert_eq!(c.currency, "EUR");
        for id in ["free", "basic", "professional", "enterprise"] {
            assert!(c.plan(id).is_some(), "{id}");
        }
        let basic = c.plan("basic").unwrap();
        let docs = basic.allowance("documents");
        assert_eq!(docs.included, Some(Decimal::from(100)));
        assert_eq!(
            docs.limit,
            Limit::Overage(Pricing::PerUnit(Decimal::new(50, 2)))
        );
        assert_eq!(basic.allowance("users").limit, Limit::HardCap);
        let pro = c.plan("professional").unwrap();
        assert_eq!(
            pro.allowance("api_calls").limit,
            Limit::Overage(Pricing::Package {
                size: Decimal::from(10),
                price: Decimal::new(8, 3)
            })
        );
    }

    #[test]
    fn mistakes_name_the_field() {
        let base = "currency = \"EUR\"\n[meters.docs]\nusage = \"sum\"\n";
        let p = Path::new("p.toml");
        let err = |s: &str| {
            Catalog::from_toml(&format!("{base}{s}"), p)
                .unwrap_err()
                .to_string()
        };
        assert!(err("[plans.Basic]\n").contains("lower case"));
        assert!(
            err("[plans.b.meters.docs]\nincluded = 5\n").contains("hard_cap = true or an overage")
        );
        assert!(
            err("[plans.b.meters.docs]\nincluded = \"lots\"\nhard_cap = true\n")
                .contains("included")
        );
        assert!(
            err("[plans.b.meters.pages]\nincluded = 5\nhard_cap = true\n")
                .contains("not a billed meter")
        );
        assert!(err("[plans.b]\nperiod = \"week\"\n").contains("plans.b.period"));
        assert!(
            err("[plans.b.meters.docs]\nincluded = 5\noverage = { graduated = [{ up_to = 5, price = \"1\" }] }\n")
                .contains("last tier")
        );
    }
}
