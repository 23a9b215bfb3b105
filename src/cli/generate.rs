//! `meterlake generate --tenants N --days D --out FILE`.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::generate::{self, GenConfig};

/// Arguments of `generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of tenants.
    #[arg(long, default_value_t = 20)]
    pub tenants: usize,
    /// Days of history.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// First day (UTC, YYYY-MM-DD); default: `days` days before today.
    #[arg(long)]
    pub start: Option<chrono::NaiveDate>,
    /// RNG seed: same seed, same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Multiplies every tenant's volume (1.0 ≈ 2,000 events/day for an average tenant).
    #[arg(long, default_value_t = 1.0, conflicts_with = "events")]
    pub scale: f64,
    /// Aim for about this many events in total (sets --scale).
    #[arg(long)]
    pub events: Option<u64>,
    /// Share of events delivered 1–72 hours late.
    #[arg(long, default_value_t = generate::DEFAULT_LATE_RATE)]
    pub late_rate: f64,
    /// Share of events sent twice.
    #[arg(long, default_value_t = generate::DEFAULT_DUP_RATE)]
    pub dup_rate: f64,
    /// Share of malformed records.
    #[arg(long, default_value_t = generate::DEFAULT_BAD_RATE)]
    pub bad_rate: f64,
    /// Output NDJSON file (`.gz` to compress).
    #[arg(long)]
    pub out: PathBuf,
    /// Write the injected anomalies here (CSV: tenant_id,meter,start,end,kind).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Write the tenants here (CSV: tenant_id,plan,time_zone).
    #[arg(long)]
    pub tenants_out: Option<PathBuf>,
    /// Print the ground truth (lines, events, duplicates, malformed, sums) as JSON on stdout.
    #[arg(long)]
    pub summary: bool,
}

fn create(path: &Path) -> anyhow::Result<BufWriter<fs::File>> {
    if let Some(p) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(p).with_context(|| format!("{}", p.display()))?;
    }
    Ok(BufWriter::with_capacity(
        1 << 20,
        fs::File::create(path).with_context(|| format!("{}", path.display()))?,
    ))
}

pub(crate) fn run(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    let start = a
        .start
        .unwrap_or_else(|| chrono::Utc::now().date_naive() - chrono::Duration::days(a.days as i64));
    let mut cfg = GenConfig {
        tenants: a.tenants,
        days: a.days,
        start,
        seed: a.seed,
        scale: a.scale,
        late_rate: a.late_rate,
        dup_rate: a.dup_rate,
        bad_rate: a.bad_rate,
    };
    cfg.validate()?;
    // The output is NDJSON: a name `ingest` would read as another format is refused.
    let name = a
        .out
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase());
    let name = name.as_deref().unwrap_or("");
    let stem = name.strip_suffix(".gz").unwrap_or(name);
    if stem.ends_with(".csv") || stem.ends_with(".parquet") {
        anyhow::bail!(
            "invalid --out: {}: generate writes NDJSON, which `ingest` would read as {} by this name; name it .ndjson (or .ndjson.gz)",
            a.out.display(),
            if stem.ends_with(".csv") {
                "CSV"
            } else {
                "Parquet"
            }
        );
    }
    if let Some(target) = a.events {
        // Volume is linear in the scale (Poisson rates) plus a fixed part (hourly storage
        // readings, bot traffic): fit lines = fixed + slope * scale on two small dry runs.
        let lines_at = |scale: f64| -> anyhow::Result<f64> {
            let (s, _, _) = generate::generate(
                &GenConfig {
                    scale,
                    ..cfg.clone()
                },
                &mut std::io::sink(),
            )?;
            Ok(s.lines as f64)
        };
        let (s1, s2) = (0.02, 0.06);
        let (l1, l2) = (lines_at(s1)?, lines_at(s2)?);
        let slope = ((l2 - l1) / (s2 - s1)).max(1.0);
        let fixed = l1 - slope * s1;
        cfg.scale = ((target as f64 - fixed) / slope).max(1e-4);
    }
    let tmp = a.out.with_extension("partial");
    let mut w = create(&tmp)?;
    let gz = a.out.extension().is_some_and(|e| e == "gz");
    let result = if gz {
        let mut enc = flate2::write::GzEncoder::new(&mut w, flate2::Compression::new(6));
        generate::generate(&cfg, &mut enc)
            .map_err(anyhow::Error::from)
            .and_then(|r| Ok(enc.finish().map(|_| r)?))
    } else {
        generate::generate(&cfg, &mut w).map_err(anyhow::Error::from)
    };
    let (summary, labels, tenants) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    w.flush().with_context(|| format!("{}", tmp.display()))?;
    drop(w);
    fs::rename(&tmp, &a.out).with_context(|| format!("{}", a.out.display()))?;
    if let Some(p) = &a.labels {
        let mut w = create(p)?;
        writeln!(w, "tenant_id,meter,start,end,kind")?;
        for l in &labels {
            writeln!(
                w,
                "{},{},{},{},{}",
                l.tenant_id, l.meter, l.start, l.end, l.kind
            )?;
        }
        w.flush()?;
    }
    if let Some(p) = &a.tenants_out {
        let mut w = create(p)?;
        writeln!(w, "tenant_id,plan,time_zone")?;
        for t in &tenants {
            writeln!(w, "{},{},{}", t.tenant_id, t.plan, t.time_zone)?;
        }
        w.flush()?;
    }
    if a.summary {
        super::print_json(&summary)?;
    } else {
        eprintln!(
            "wrote {}: {} lines = {} events + {} duplicates + {} malformed ({} late), {} anomalies",
            a.out.display(),
            summary.lines,
            summary.events,
            summary.duplicates,
            summary.malformed,
            summary.late,
            summary.anomalies
        );
    }
    Ok(ExitCode::SUCCESS)
}
