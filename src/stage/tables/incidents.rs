//! `LAKE/anomalies/granularity=G/incidents.parquet`: the anomaly stage's incidents (flagged
//! points merged), most severe first. The flagged points themselves go beside them in
//! `points.parquet`, a table nobody reads back (it is for people and notebooks).

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::{Columns, instants, write_frame};
use crate::error::Result;

/// Folder of the anomaly tables under the lake.
pub const DIR: &str = "anomalies";
/// The incidents file of one granularity's folder.
pub const FILE: &str = "incidents.parquet";
/// The flagged points file of one granularity's folder.
pub const POINTS_FILE: &str = "points.parquet";

/// One stored incident.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRecord {
    /// The tenant.
    pub tenant_id: String,
    /// The lake meter.
    pub meter: String,
    /// Users involved (user-level patterns), comma-separated; none when no user pattern.
    pub user_id: Option<String>,
    /// First flagged window's start (UTC µs).
    pub window_start: i64,
    /// Last flagged window's end (UTC µs).
    pub window_end: i64,
    /// Observed value at the strongest point.
    pub observed: f64,
    /// Expected value there.
    pub expected: f64,
    /// The strongest detector's score.
    pub score: f64,
    /// The strongest detector.
    pub detector: String,
    /// Every detector that fired, `+`-joined.
    pub detectors: String,
    /// Severity of the strongest flag.
    pub severity: String,
    /// Highest risk, 0-100.
    pub risk: f64,
    /// Whether abuse patterns fired.
    pub fraud_suspect: bool,
    /// Points merged.
    pub points: u32,
}

/// The folder of one granularity's anomaly tables.
pub fn dir(lake_dir: &Path, granularity: &str) -> PathBuf {
    lake_dir
        .join(DIR)
        .join(format!("granularity={granularity}"))
}

/// The incidents file of a lake's last detection: the most recently written of the hourly
/// and daily ones.
pub fn latest_file(lake_dir: &Path) -> Option<PathBuf> {
    // The most recently written: after `anomalies.granularity` changed from hour to day,
    // the hourly file is a stale result the reports must not show. Equal times: hourly.
    ["hour", "day"]
        .iter()
        .map(|g| dir(lake_dir, g).join(FILE))
        .filter_map(|p| {
            let t = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            Some((t, p))
        })
        .reduce(|a, b| if b.0 > a.0 { b } else { a })
        .map(|(_, p)| p)
}

/// Every incidents file of a lake with its granularity, by granularity name.
pub fn files(lake_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(lake_dir.join(DIR)) else {
        return Vec::new();
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let g = name.strip_prefix("granularity=")?.to_string();
            let p = e.path().join(FILE);
            p.exists().then_some((g, p))
        })
        .collect();
    files.sort();
    files
}

/// Writes the incidents at `path`, in the order given.
pub fn write(path: &Path, rows: &[IncidentRecord]) -> Result<()> {
    let text = |f: fn(&IncidentRecord) -> &String| -> Vec<String> {
        rows.iter().map(|r| f(r).clone()).collect()
    };
    let num = |f: fn(&IncidentRecord) -> f64| -> Vec<f64> { rows.iter().map(f).collect() };
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("tenant_id".into(), text(|r| &r.tenant_id)),
        Column::new("meter".into(), text(|r| &r.meter)),
        Column::new(
            "user_id".into(),
            rows.iter().map(|r| r.user_id.clone()).collect::<Vec<_>>(),
        ),
        instants(
            "window_start",
            rows.iter().map(|r| r.window_start).collect(),
        )?,
        instants("window_end", rows.iter().map(|r| r.window_end).collect())?,
        Column::new("observed".into(), num(|r| r.observed)),
        Column::new("expected".into(), num(|r| r.expected)),
        Column::new("score".into(), num(|r| r.score)),
        Column::new("detector".into(), text(|r| &r.detector)),
        Column::new("detectors".into(), text(|r| &r.detectors)),
        Column::new("severity".into(), text(|r| &r.severity)),
        Column::new("risk".into(), num(|r| r.risk)),
        Column::new(
            "fraud_suspect".into(),
            rows.iter().map(|r| r.fraud_suspect).collect::<Vec<_>>(),
        ),
        Column::new(
            "points".into(),
            rows.iter().map(|r| r.points).collect::<Vec<_>>(),
        ),
    ])?;
    write_frame(path, &mut df)
}

/// Reads the incidents at `path` (missing numbers read as NaN).
pub fn read(path: &Path) -> Result<Vec<IncidentRecord>> {
    let c = Columns::read(path)?;
    let (tenant, meter, users) = (
        c.text("tenant_id")?,
        c.text("meter")?,
        c.opt_text("user_id")?,
    );
    let (start, end) = (c.micros("window_start")?, c.micros("window_end")?);
    let (obs, exp, score, risk) = (
        c.f64("observed")?,
        c.f64("expected")?,
        c.f64("score")?,
        c.f64("risk")?,
    );
    let (det, dets, sev) = (
        c.text("detector")?,
        c.text("detectors")?,
        c.text("severity")?,
    );
    let (fraud, points) = (c.bool("fraud_suspect")?, c.u32("points")?);
    Ok((0..c.height())
        .map(|i| IncidentRecord {
            tenant_id: tenant[i].clone(),
            meter: meter[i].clone(),
            user_id: users[i].clone(),
            window_start: start[i],
            window_end: end[i],
            observed: obs[i],
            expected: exp[i],
            score: score[i],
            detector: det[i].clone(),
            detectors: dets[i].clone(),
            severity: sev[i].clone(),
            risk: risk[i],
            fraud_suspect: fraud[i],
            points: points[i],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        let rows = vec![
            IncidentRecord {
                tenant_id: "acme".into(),
                meter: "api_calls".into(),
                user_id: Some("u-1,u-2".into()),
                window_start: 1_790_000_000_000_000,
                window_end: 1_790_003_600_000_000,
                observed: 912.0,
                expected: 101.5,
                score: 8.25,
                detector: "seasonal".into(),
                detectors: "seasonal+velocity".into(),
                severity: "critical".into(),
                risk: 97.5,
                fraud_suspect: true,
                points: 3,
            },
            IncidentRecord {
                tenant_id: "beta".into(),
                meter: "ai_tokens".into(),
                user_id: None,
                window_start: 0,
                window_end: 3_600_000_000,
                observed: 0.0,
                expected: f64::NAN,
                score: -4.0,
                detector: "velocity".into(),
                detectors: "velocity".into(),
                severity: "high".into(),
                risk: 61.0,
                fraud_suspect: false,
                points: 1,
            },
        ];
        write(&p, &rows).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], rows[0]);
        assert!(back[1].expected.is_nan());
        assert_eq!(
            IncidentRecord {
                expected: 0.0,
                ..back[1].clone()
            },
            IncidentRecord {
                expected: 0.0,
                ..rows[1].clone()
            }
        );
    }
}
