//! The batch job's configuration: a TOML file (`data/meterlake.toml` by default), then
//! environment variables, then command-line flags, each overriding the one before.
//!
//! | setting | file | environment |
//! |---|---|---|
//! | ingest at all | `tracking.enabled` | `USAGE_TRACKING_ENABLED` |
//! | retention of both (days, 0 keeps all) | `tracking.retention_days` | `USAGE_RETENTION_DAYS` |
//! | retention of events | `tracking.events_retention_days` | `USAGE_TRACKING_EVENTS_RETENTION_DAYS` |
//! | retention of rollups | `tracking.metrics_retention_days` | `USAGE_TRACKING_METRICS_RETENTION_DAYS` |
//! | forecast model | `forecast.model` | `ANALYTICS_FORECAST_MODEL` |
//! | anomaly threshold (\|z\|) | `anomalies.threshold` | `ANALYTICS_ANOMALY_DETECTION_THRESHOLD` |
//! | hard caps block | `limits.enforcement_enabled` | `LIMITS_ENFORCEMENT_ENABLED` |
//! | alerts raised and sent | `limits.notification_enabled` | `LIMITS_NOTIFICATION_ENABLED` |
//! | serve's refresh of the analytics | `analytics.interval` | `USAGE_ANALYTICS_INTERVAL` |
//! | its memory cap (`512MiB`, `off`) | `analytics.max_memory` | `USAGE_ANALYTICS_MAX_MEMORY` |
//! | encryption key of every Parquet file | `security.encryption_key_file` | `MLK_ENCRYPTION_KEY_FILE` |
//! | pseudonymised user ids | `privacy.pseudonymise_users` | `MLK_PSEUDONYMISE_USERS` |
//! | their HMAC key (a file) | `privacy.pseudonym_key_file` | `MLK_PSEUDONYM_KEY_FILE` |
//!
//! Every error names the file and field, or the variable, and the value it could not use.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::forecast::ModelKind;
use crate::report::{Format, ReportKind};

/// Where the default configuration lives.
pub const DEFAULT_CONFIG_FILE: &str = "data/meterlake.toml";
/// The shipped configuration (`meterlake init` writes it).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../data/meterlake.toml");

/// Inputs and outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Paths {
    /// Files or directories ingested each run (already ingested files are skipped).
    pub inputs: Vec<PathBuf>,
    /// The lake.
    pub lake: PathBuf,
    /// Where invoices and reports are written.
    pub out: PathBuf,
    /// The plan catalogue.
    pub plans: PathBuf,
    /// Tenant assignments.
    pub tenants: PathBuf,
    /// Meter definitions.
    pub meters: PathBuf,
    /// Per-tenant feature overrides (CSV: tenant_id, feature, value, from); none: the
    /// default file when it exists.
    pub entitlements: Option<PathBuf>,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            inputs: vec![PathBuf::from("data/events")],
            lake: PathBuf::from("out/lake"),
            out: PathBuf::from("out"),
            plans: PathBuf::from(crate::billing::DEFAULT_PLANS_FILE),
            tenants: PathBuf::from(crate::billing::DEFAULT_TENANTS_FILE),
            meters: PathBuf::from(crate::rollup::DEFAULT_METERS_FILE),
            entitlements: None,
        }
    }
}

/// Ingestion and retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tracking {
    /// Ingest the inputs (off: the other stages run on the lake as it is).
    pub enabled: bool,
    /// Default of both retentions, in days (0: keep everything).
    pub retention_days: u32,
    /// Days of events kept (overrides `retention_days`).
    pub events_retention_days: Option<u32>,
    /// Days of rollups kept (overrides `retention_days`).
    pub metrics_retention_days: Option<u32>,
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking {
            enabled: true,
            retention_days: 0,
            events_retention_days: None,
            metrics_retention_days: None,
        }
    }
}

impl Tracking {
    /// Days of events kept (none: all).
    pub fn events_days(&self) -> Option<u32> {
        Some(self.events_retention_days.unwrap_or(self.retention_days)).filter(|d| *d > 0)
    }

    /// Days of rollups kept (none: all).
    pub fn metrics_days(&self) -> Option<u32> {
        Some(self.metrics_retention_days.unwrap_or(self.retention_days)).filter(|d| *d > 0)
    }
}

/// Forecasting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForecastConf {
    /// Model name, or `auto`.
    pub model: String,
    /// Days ahead.
    pub horizon: usize,
    /// Interval level, percent.
    pub level: f64,
}

impl Default for ForecastConf {
    fn default() -> Self {
        ForecastConf {
            model: "auto".into(),
            horizon: 30,
            level: 95.0,
        }
    }
}

impl ForecastConf {
    /// The model.
    pub fn kind(&self) -> Result<ModelKind> {
        self.model
            .parse::<ModelKind>()
            .map_err(|_| Error::InvalidParameter {
                name: "forecast.model",
                reason: format!(
                    "`{}` is not a model ({})",
                    self.model,
                    ModelKind::ALL.map(ModelKind::name).join(", ")
                ),
            })
    }
}

/// Anomaly detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyConf {
    /// |z| threshold.
    pub threshold: f64,
    /// `hour` or `day`.
    pub granularity: String,
}

impl Default for AnomalyConf {
    fn default() -> Self {
        AnomalyConf {
            threshold: 3.0,
            granularity: "hour".into(),
        }
    }
}

/// Limits and alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Hard caps block (off: a tenant over a hard cap is reported `exceeded`, not `blocked`).
    pub enforcement_enabled: bool,
    /// Raise alerts, and deliver them when a webhook is set.
    pub notification_enabled: bool,
    /// Webhook for alerts (empty: none); the secret comes from `MLK_WEBHOOK_SECRET`.
    pub webhook_url: String,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            enforcement_enabled: true,
            notification_enabled: true,
            webhook_url: String::new(),
        }
    }
}

/// Analytics kept current by `serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConf {
    /// How often `serve` refreshes forecasts, anomalies, quotas and alerts: a duration
    /// such as `30s`, `5m` or `1h`; `0` or `off` turns it off.
    pub interval: String,
    /// The memory a refresh's forecasts, detection and quotas may hold at once (estimated
    /// from the rollups' rows and events), such as `512MiB` or `2GiB`; past it, the work
    /// goes in batches of tenants. `0` or `off`: no cap.
    pub max_memory: String,
}

impl Default for AnalyticsConf {
    fn default() -> Self {
        AnalyticsConf {
            interval: "5m".into(),
            max_memory: "512MiB".into(),
        }
    }
}

impl AnalyticsConf {
    /// The interval (none: off).
    pub fn every(&self) -> Result<Option<std::time::Duration>> {
        parse_interval("analytics.interval", &self.interval)
    }

    /// The memory cap in bytes (none: no cap).
    pub fn max_memory(&self) -> Result<Option<u64>> {
        parse_size("analytics.max_memory", &self.max_memory)
    }
}

/// Encryption at rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConf {
    /// The AES key every Parquet file is encrypted with ([`crate::lake::crypto`]): a file
    /// holding one base64 line of 16 or 32 bytes (`openssl rand -base64 32`); none: files
    /// are written plain.
    pub encryption_key_file: Option<PathBuf>,
}

impl SecurityConf {
    /// Loads the key, if one is set, as the process's key ([`crate::lake::crypto::use_keys`]).
    pub fn install(&self) -> Result<Option<String>> {
        match &self.encryption_key_file {
            None => Ok(None),
            Some(f) => {
                let k = crate::lake::crypto::Key::from_file(f).map_err(|e| match e {
                    Error::BadInput { path, reason } => Error::BadInput {
                        path,
                        reason: format!(
                            "{reason} (the key file of security.encryption_key_file or {})",
                            crate::lake::crypto::KEY_FILE_ENV
                        ),
                    },
                    e => e,
                })?;
                let id = k.id().to_string();
                crate::lake::crypto::use_keys(Some(k), Vec::new());
                Ok(Some(id))
            }
        }
    }
}

/// Privacy of the people behind the events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConf {
    /// Replace every user id by a keyed HMAC of it at ingest, batch and API
    /// ([`crate::lake::privacy`]).
    pub pseudonymise_users: bool,
    /// The HMAC key: a file outside the lake holding one base64 line of 16 to 64 bytes
    /// (`openssl rand -base64 32`). Relative paths are taken from the working directory.
    pub pseudonym_key_file: Option<PathBuf>,
}

impl PrivacyConf {
    /// The loaded key when user ids are pseudonymised (once per process: the limits of
    /// every ingest hold a reference to it).
    pub fn pseudonymiser(&self) -> Result<Option<&'static crate::lake::privacy::Pseudonymiser>> {
        if !self.pseudonymise_users {
            return Ok(None);
        }
        let f = self
            .pseudonym_key_file
            .as_ref()
            .ok_or_else(|| Error::InvalidParameter {
                name: "privacy.pseudonym_key_file",
                reason: format!(
                    "privacy.pseudonymise_users is on but no key file is set (here or in {})",
                    crate::lake::privacy::KEY_FILE_ENV
                ),
            })?;
        Ok(Some(
            crate::lake::privacy::Pseudonymiser::from_key_file(f)?.leak(),
        ))
    }

    /// The key for commands that read a lake which may be pseudonymised (`forget --user`,
    /// `export data --user`): loaded whenever a key file is set, even with
    /// `pseudonymise_users` off, since the lake itself says whether it is pseudonymised.
    pub fn key(&self) -> Result<Option<&'static crate::lake::privacy::Pseudonymiser>> {
        match &self.pseudonym_key_file {
            None => Ok(None),
            Some(f) => Ok(Some(
                crate::lake::privacy::Pseudonymiser::from_key_file(f)?.leak(),
            )),
        }
    }
}

/// `512MiB`, `2GiB`, `64KiB`, `1000000` (bytes; `K`, `M`, `G` and `KB`, `MB`, `GB` are
/// binary too); `0` or `off`: none.
fn parse_size(name: &'static str, v: &str) -> Result<Option<u64>> {
    let t = v.trim().to_ascii_lowercase();
    if t == "off" || t == "0" {
        return Ok(None);
    }
    let bad = || Error::InvalidParameter {
        name,
        reason: format!("`{v}` is not a size such as 512MiB, 2GiB or 0 (no cap)"),
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = n * scale as f64;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(bad());
    }
    Ok(Some(bytes as u64))
}

/// `30s`, `5m`, `1h`, `250ms` (a number alone is seconds); `0` or `off`: none.
fn parse_interval(name: &'static str, v: &str) -> Result<Option<std::time::Duration>> {
    let t = v.trim().to_ascii_lowercase();
    if t == "off" || t == "0" {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let secs = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    n.parse::<f64>()
        .ok()
        .map(|n| n * secs)
        .filter(|x| x.is_finite() && *x > 0.0)
        .map(|x| Some(std::time::Duration::from_secs_f64(x)))
        .ok_or_else(|| Error::InvalidParameter {
            name,
            reason: format!("`{v}` is not a duration such as 30s, 5m or 1h (or off)"),
        })
}

/// Reports written by each run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportsConf {
    /// Kinds.
    pub kinds: Vec<ReportKind>,
    /// Formats.
    pub formats: Vec<Format>,
}

impl Default for ReportsConf {
    fn default() -> Self {
        ReportsConf {
            kinds: ReportKind::ALL.to_vec(),
            formats: Format::ALL.to_vec(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Inputs and outputs.
    pub paths: Paths,
    /// Ingestion and retention.
    pub tracking: Tracking,
    /// Forecasting.
    pub forecast: ForecastConf,
    /// Anomaly detection.
    pub anomalies: AnomalyConf,
    /// Limits and alerts.
    pub limits: Limits,
    /// Reports.
    pub reports: ReportsConf,
    /// Alert notifications: channels and rules (`[notify.channels.NAME]`,
    /// `[[notify.rules]]`).
    pub notify: crate::stage::notify::NotifyConf,
    /// What `serve` keeps current on its own.
    pub analytics: AnalyticsConf,
    /// Pseudonymised user ids (`[privacy]`).
    pub privacy: PrivacyConf,
    /// Encryption at rest (`[security]`).
    pub security: SecurityConf,
}

fn bool_of(var: &'static str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::InvalidParameter {
            name: var,
            reason: format!("`{v}` is not true or false"),
        }),
    }
}

fn days_of(var: &'static str, v: &str) -> Result<u32> {
    v.trim().parse().map_err(|_| Error::InvalidParameter {
        name: var,
        reason: format!("`{v}` is not a whole number of days"),
    })
}

impl Config {
    /// Reads a configuration file.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c: Config = toml::from_str(&text).map_err(|e| Error::BadInput {
            path: path.to_path_buf(),
            reason: e.to_string().trim().replace('\n', " "),
        })?;
        c.validate().map_err(|e| Error::BadInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(c)
    }

    /// Writes editable copies of the configuration, the plan catalogue, the meter
    /// definitions and an example tenants file under `dir/data/` (and an empty
    /// `dir/data/events/` for inputs), the layout the defaults read: `meterlake run` in
    /// `dir` then uses them. An existing file is left alone (an error naming it) unless
    /// `force`. Returns the files written.
    pub fn init(dir: &Path, force: bool) -> Result<Vec<PathBuf>> {
        let files = [
            (DEFAULT_CONFIG_FILE, DEFAULT_CONFIG_TOML),
            (
                crate::billing::DEFAULT_PLANS_FILE,
                crate::billing::DEFAULT_PLANS_TOML,
            ),
            (
                crate::rollup::DEFAULT_METERS_FILE,
                crate::rollup::DEFAULT_METERS_TOML,
            ),
            (
                crate::billing::DEFAULT_TENANTS_FILE,
                crate::billing::EXAMPLE_TENANTS_CSV,
            ),
        ];
        if !force {
            for (name, _) in files {
                let p = dir.join(name);
                if p.exists() {
                    return Err(Error::InvalidParameter {
                        name: "DIR",
                        reason: format!(
                            "{} exists; edit it, or give --force to overwrite it",
                            p.display()
                        ),
                    });
                }
            }
        }
        let events = dir.join("data/events");
        std::fs::create_dir_all(&events).at(&events)?;
        let mut written = Vec::new();
        for (name, text) in files {
            let p = dir.join(name);
            crate::report::atomic_write(&p, text.as_bytes())?;
            written.push(p);
        }
        Ok(written)
    }

    /// The file given, else `data/meterlake.toml` if it exists, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        match path {
            Some(p) => Config::from_file(p),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                Config::from_file(Path::new(DEFAULT_CONFIG_FILE))
            }
            None => Ok(Config::default()),
        }
    }

    /// Applies the environment variables `get` returns (the process environment in the
    /// CLI; a map in tests).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(v) = get("USAGE_TRACKING_ENABLED") {
            self.tracking.enabled = bool_of("USAGE_TRACKING_ENABLED", &v)?;
        }
        if let Some(v) = get("USAGE_RETENTION_DAYS") {
            self.tracking.retention_days = days_of("USAGE_RETENTION_DAYS", &v)?;
        }
        if let Some(v) = get("USAGE_TRACKING_EVENTS_RETENTION_DAYS") {
            self.tracking.events_retention_days =
                Some(days_of("USAGE_TRACKING_EVENTS_RETENTION_DAYS", &v)?);
        }
        if let Some(v) = get("USAGE_TRACKING_METRICS_RETENTION_DAYS") {
            self.tracking.metrics_retention_days =
                Some(days_of("USAGE_TRACKING_METRICS_RETENTION_DAYS", &v)?);
        }
        if let Some(v) = get("ANALYTICS_FORECAST_MODEL") {
            self.forecast.model = v.trim().to_string();
            self.forecast.kind().map_err(|e| Error::InvalidParameter {
                name: "ANALYTICS_FORECAST_MODEL",
                reason: e.to_string(),
            })?;
        }
        if let Some(v) = get("ANALYTICS_ANOMALY_DETECTION_THRESHOLD") {
            self.anomalies.threshold = v
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x > 0.0)
                .ok_or_else(|| Error::InvalidParameter {
                    name: "ANALYTICS_ANOMALY_DETECTION_THRESHOLD",
                    reason: format!("`{v}` is not a positive number"),
                })?;
        }
        if let Some(v) = get("LIMITS_ENFORCEMENT_ENABLED") {
            self.limits.enforcement_enabled = bool_of("LIMITS_ENFORCEMENT_ENABLED", &v)?;
        }
        if let Some(v) = get("LIMITS_NOTIFICATION_ENABLED") {
            self.limits.notification_enabled = bool_of("LIMITS_NOTIFICATION_ENABLED", &v)?;
        }
        if let Some(v) = get("USAGE_ANALYTICS_INTERVAL") {
            parse_interval("USAGE_ANALYTICS_INTERVAL", &v)?;
            self.analytics.interval = v.trim().to_string();
        }
        // Set but empty: no key (as if unset), so a script can switch it off.
        if let Some(v) = get(crate::lake::crypto::KEY_FILE_ENV) {
            self.security.encryption_key_file =
                Some(PathBuf::from(v.trim())).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some(v) = get("MLK_PSEUDONYMISE_USERS") {
            self.privacy.pseudonymise_users = bool_of("MLK_PSEUDONYMISE_USERS", &v)?;
        }
        if let Some(v) = get(crate::lake::privacy::KEY_FILE_ENV) {
            self.privacy.pseudonym_key_file =
                Some(PathBuf::from(v.trim())).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some(v) = get("USAGE_ANALYTICS_MAX_MEMORY") {
            parse_size("USAGE_ANALYTICS_MAX_MEMORY", &v)?;
            self.analytics.max_memory = v.trim().to_string();
        }
        Ok(())
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<()> {
        crate::lake::remote::parse_location(&self.paths.lake, "paths.lake")?;
        self.forecast.kind()?;
        self.notify.validate()?;
        self.analytics.every()?;
        self.analytics.max_memory()?;
        if self.forecast.horizon == 0 {
            return Err(Error::InvalidParameter {
                name: "forecast.horizon",
                reason: "must be at least 1".into(),
            });
        }
        if !(self.forecast.level > 0.0 && self.forecast.level < 100.0) {
            return Err(Error::InvalidParameter {
                name: "forecast.level",
                reason: format!("{} is not a percent in (0, 100)", self.forecast.level),
            });
        }
        if !(self.anomalies.threshold.is_finite() && self.anomalies.threshold > 0.0) {
            return Err(Error::InvalidParameter {
                name: "anomalies.threshold",
                reason: format!("{} is not a positive number", self.anomalies.threshold),
            });
        }
        if !self.limits.webhook_url.is_empty() {
            crate::http::check_url(&self.limits.webhook_url).map_err(|reason| {
                Error::InvalidParameter {
                    name: "limits.webhook_url",
                    reason,
                }
            })?;
        }
        if !matches!(self.anomalies.granularity.as_str(), "hour" | "day") {
            return Err(Error::InvalidParameter {
                name: "anomalies.granularity",
                reason: format!("`{}` is not hour or day", self.anomalies.granularity),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c: Config = toml::from_str(
            "[tracking]\nretention_days = 90\n[forecast]\nmodel = \"holt\"\n[limits]\nnotification_enabled = true\n",
        )
        .unwrap();
        assert_eq!(c.tracking.events_days(), Some(90));
        c.apply_env(env(&[
            ("USAGE_TRACKING_EVENTS_RETENTION_DAYS", "30"),
            ("ANALYTICS_FORECAST_MODEL", "ses"),
            ("LIMITS_NOTIFICATION_ENABLED", "false"),
            ("ANALYTICS_ANOMALY_DETECTION_THRESHOLD", "4.5"),
        ]))
        .unwrap();
        assert_eq!(c.tracking.events_days(), Some(30));
        assert_eq!(
            c.tracking.metrics_days(),
            Some(90),
            "the general default still applies"
        );
        assert_eq!(c.forecast.kind().unwrap(), ModelKind::Ses);
        assert!(!c.limits.notification_enabled);
        assert_eq!(c.anomalies.threshold, 4.5);
    }

    #[test]
    fn bad_values_name_their_source() {
        let mut c = Config::default();
        let e = c
            .apply_env(env(&[("USAGE_RETENTION_DAYS", "ninety")]))
            .unwrap_err();
        assert!(e.to_string().contains("USAGE_RETENTION_DAYS"), "{e}");
        let e = c
            .apply_env(env(&[("LIMITS_ENFORCEMENT_ENABLED", "maybe")]))
            .unwrap_err();
        assert!(e.to_string().contains("LIMITS_ENFORCEMENT_ENABLED"), "{e}");
        let e = c
            .apply_env(env(&[("ANALYTICS_FORECAST_MODEL", "prophet")]))
            .unwrap_err();
        assert!(e.to_string().contains("ANALYTICS_FORECAST_MODEL"), "{e}");
        let e = toml::from_str::<Config>("[forecast]\nhorizn = 3\n").unwrap_err();
        assert!(e.to_string().contains("horizn"), "{e}");
    }

    #[test]
    fn intervals_parse_with_their_unit() {
        let d = |s: &str| parse_interval("x", s).unwrap();
        assert_eq!(d("30s"), Some(std::time::Duration::from_secs(30)));
        assert_eq!(d("5m"), Some(std::time::Duration::from_secs(300)));
        assert_eq!(d("1h"), Some(std::time::Duration::from_secs(3600)));
        assert_eq!(d("250ms"), Some(std::time::Duration::from_millis(250)));
        assert_eq!(d("off"), None);
        assert_eq!(d("0"), None);
        let mut c = Config::default();
        let e = c
            .apply_env(env(&[("USAGE_ANALYTICS_INTERVAL", "soon")]))
            .unwrap_err();
        assert!(e.to_string().contains("USAGE_ANALYTICS_INTERVAL"), "{e}");
    }

    #[test]
    fn sizes_parse_with_their_unit() {
        let b = |s: &str| parse_size("x", s).unwrap();
        assert_eq!(b("512MiB"), Some(512 << 20));
        assert_eq!(b("2 GiB"), Some(2 << 30));
        assert_eq!(b("64k"), Some(64 << 10));
        assert_eq!(b("1000"), Some(1000));
        assert_eq!(b("1.5M"), Some(3 << 19));
        assert_eq!(b("off"), None);
        assert_eq!(b("0"), None);
        for bad in ["lots", "12 parsecs", "-1MiB", ""] {
            assert!(parse_size("x", bad).is_err(), "{bad}");
        }
        assert_eq!(
            Config::default().analytics.max_memory().unwrap(),
            Some(512 << 20)
        );
        let mut c = Config::default();
        let e = c
            .apply_env(env(&[("USAGE_ANALYTICS_MAX_MEMORY", "much")]))
            .unwrap_err();
        assert!(e.to_string().contains("USAGE_ANALYTICS_MAX_MEMORY"), "{e}");
    }

    #[test]
    fn zero_keeps_everything() {
        let c = Config::default();
        assert_eq!(c.tracking.events_days(), None);
        assert_eq!(c.tracking.metrics_days(), None);
    }
}
