//! Reports: what finance, admins and analysts read, computed from the lake and the
//! outputs of the other stages, in every format people use.
//!
//! A report is built once ([`build`]) into a [`Report`]: headline figures, [`Insight`]s
//! computed from the data, charts and tables. Renderers turn that one model into JSON, CSV
//! and Parquet (one file per table), Markdown, a self-contained HTML page with SVG charts,
//! an XLSX workbook (one sheet per table) and a PDF. Rendering computes nothing, so every
//! format says the same thing; the same lake and options give the same bytes.
//!
//! Kinds: `summary` (per tenant totals, quota percent, alerts, overage), `detailed` (day
//! by day with trends, previous-period comparison, peak times), `forecast` (predictions
//! with intervals, quota exceedance dates, expected overage, model accuracy), `anomaly`
//! (incidents, risk, fraud suspects, status), `executive` (platform KPIs, growth, revenue,
//! top tenants and features, users, next month, top insights) and `compliance` (ingests,
//! rejects, duplicates, retention and deletions from the audit log).
//!
//! Layout:
//! - `mod.rs`: [`ReportKind`], [`Format`], [`Report`], [`write()`] (one file per format, written
//!   atomically) and [`write_kinds`] (the batch job's kinds, written while the next is built);
//! - `build/`: [`build`] and the builders. `context.rs` holds `Ctx`, the period and the
//!   reads the kinds share; one file per kind (`summary`, `detailed`,
//!   `forecast`, `anomaly`, `executive`, `compliance`), each a short list of named sections;
//!   `tables.rs` (usage totals, the quota table, quota bars) and `figures.rs` (headline
//!   figures, grouped thousands, money, dates) are shared by the kinds;
//! - `insights.rs`: the findings, computed from plain facts the builders gather;
//! - `table.rs`: the model every format renders ([`Table`] of typed columns, money as exact
//!   [`Values::Decimal`], [`Figure`], [`Insight`], [`Chart`]);
//! - `render.rs` (JSON, Markdown), `html.rs`, `xlsx.rs`, `pdf.rs`: the renderers; CSV and
//!   Parquet go through [`Table::frame`].

mod build;
mod html;
pub mod insights;
mod pdf;
mod render;
mod table;

pub(crate) use table::group_thousands;
mod xlsx;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use build::{
    Page, PageOptions, QuotaSnapshot, ReportOptions, build, build_kinds, build_with, page,
};
pub use html::{STYLE as HTML_STYLE, body as html_body, esc as html_escape};
pub use table::{
    Bar, BarChart, Cell, Chart, Col, Figure, Insight, Line, Severity, Table, TimeChart, Values,
    human_duration, insights_table, round,
};

use crate::error::{Error, IoContext, Result};

/// Where `meterlake serve` keeps the reports it generates, one folder per tenant
/// (`LAKE/_api/reports/TENANT/KIND.EXT`); `forget` cleans them too.
pub const API_REPORTS_DIR: &str = "_api/reports";

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// Per tenant: totals per meter, quota percent, active alerts, overage cost.
    Summary,
    /// Day by day, trends, comparison with the previous period, peak times.
    Detailed,
    /// Predictions with intervals, quota exceedance dates, expected overage, accuracy.
    Forecast,
    /// Incidents with risk scores, fraud suspects, status.
    Anomaly,
    /// Platform KPIs, growth, revenue, top tenants and features, users, next month.
    Executive,
    /// What was ingested when, rejects, duplicates, retention and deletions.
    Compliance,
}

impl ReportKind {
    /// Every kind.
    pub const ALL: [ReportKind; 6] = [
        ReportKind::Summary,
        ReportKind::Detailed,
        ReportKind::Forecast,
        ReportKind::Anomaly,
        ReportKind::Executive,
        ReportKind::Compliance,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            ReportKind::Summary => "summary",
            ReportKind::Detailed => "detailed",
            ReportKind::Forecast => "forecast",
            ReportKind::Anomaly => "anomaly",
            ReportKind::Executive => "executive",
            ReportKind::Compliance => "compliance",
        }
    }
}

crate::error::named_enum!(ReportKind, "report kind");

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON document.
    Json,
    /// One CSV file per table (the first at the given path, others beside it).
    Csv,
    /// Markdown.
    Markdown,
    /// One self-contained HTML page with SVG charts.
    Html,
    /// An Excel workbook, one sheet per table.
    Xlsx,
    /// A PDF document.
    Pdf,
    /// One Parquet file per table (the first at the given path, others beside it).
    Parquet,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 7] = [
        Format::Json,
        Format::Csv,
        Format::Markdown,
        Format::Html,
        Format::Xlsx,
        Format::Pdf,
        Format::Parquet,
    ];

    /// Its name, as on the command line and in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Xlsx => "xlsx",
            Format::Pdf => "pdf",
            Format::Parquet => "parquet",
        }
    }

    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Markdown => "md",
            Format::Html => "html",
            Format::Xlsx => "xlsx",
            Format::Pdf => "pdf",
            Format::Parquet => "parquet",
        }
    }
}

crate::error::named_enum!(Format, "report format");

/// A built report.
#[derive(Debug, Clone)]
pub struct Report {
    /// Its kind.
    pub kind: ReportKind,
    /// Title.
    pub title: String,
    /// What it covers (tenants, period, as-of instant).
    pub scope: String,
    /// Headline figures.
    pub figures: Vec<Figure>,
    /// Findings, most severe first.
    pub insights: Vec<Insight>,
    /// Charts.
    pub charts: Vec<Chart>,
    /// Tables, the main one first.
    pub tables: Vec<Table>,
}

impl Report {
    /// Every table, with the insights as one more when there are any.
    pub fn all_tables(&self) -> Vec<Table> {
        let mut t = self.tables.clone();
        if !self.insights.is_empty() {
            t.push(insights_table(&self.insights));
        }
        t
    }
}

/// Rows of a table shown by page formats (Markdown, HTML, PDF); the data formats carry all.
pub const PAGE_ROWS: usize = 200;

/// Insights listed at the top of a page format (most severe first); every one is in the
/// `insights` table.
pub const PAGE_INSIGHTS: usize = 15;

impl Report {
    /// Names `currency` in every money column (see [`Table::set_currency`]).
    pub fn set_currency(&mut self, currency: &str) {
        for t in &mut self.tables {
            t.set_currency(currency);
        }
    }

    /// The insights a page shows first, and how many more the insights table holds.
    pub fn page_insights(&self) -> (&[Insight], usize) {
        let n = self.insights.len().min(PAGE_INSIGHTS);
        (&self.insights[..n], self.insights.len() - n)
    }
}

/// Where the batch job writes a report: its kind's own folder under `dir`
/// (`OUT/reports/KIND/KIND.EXT`, with a CSV or Parquet report's further tables beside it),
/// so each kind's files are together and apart from the others'.
pub fn path_in(dir: &Path, kind: ReportKind, format: Format) -> PathBuf {
    dir.join(kind.name())
        .join(format!("{}.{}", kind.name(), format.extension()))
}

/// Builds each of `kinds` (one context, see [`build_kinds`]) and writes it in every one
/// of `formats` to [`path_in`] `dir`; returns the files written, in kind and format order.
///
/// Building is mostly reading and writing is mostly formatting, so they overlap: a writer
/// thread takes each report as it is built (at most one waits) and writes its formats in
/// parallel, while the next kind is built. On the 1,000-tenant lake this took the batch
/// job's report stage from 8.9 s to 6.1-7.2 s.
pub fn write_kinds(
    lake_dir: &Path,
    billing: Option<&crate::billing::Billing>,
    opts: &ReportOptions,
    kinds: &[ReportKind],
    quotas: Option<&QuotaSnapshot>,
    formats: &[Format],
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    use rayon::prelude::*;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(ReportKind, Report)>(1);
        let writer = scope.spawn(move || -> Result<Vec<PathBuf>> {
            let mut files = Vec::new();
            for (k, r) in rx {
                let written = formats
                    .par_iter()
                    .map(|&f| write(&r, f, &path_in(dir, k, f)))
                    .collect::<Result<Vec<_>>>()?;
                files.extend(written.into_iter().flatten());
            }
            Ok(files)
        });
        // A send fails only when the writer stopped on an error: that error is the one
        // to report, and the writer's join gives it.
        let built = build_kinds(lake_dir, billing, opts, kinds, quotas, &mut |k, r| {
            tx.send((k, r)).map_err(|_| Error::InvalidParameter {
                name: "reports",
                reason: "the report writer stopped".into(),
            })
        });
        drop(tx);
        let written = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        match (built, written) {
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(files)) => Ok(files),
        }
    })
}

/// Writes `report` as `format` to `out` (and, for CSV and Parquet, one file per further
/// table beside it: `NAME.TABLE.EXT`). Every file is written to a temporary name, synced
/// and renamed, so a reader never sees half a report. Returns the files written.
pub fn write(report: &Report, format: Format, out: &Path) -> Result<Vec<PathBuf>> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    match format {
        Format::Csv | Format::Parquet => {
            let tables = report.all_tables();
            let mut written = Vec::new();
            for (i, t) in tables.iter().enumerate() {
                let path = if i == 0 {
                    out.to_path_buf()
                } else {
                    sibling(out, &t.name, format.extension())
                };
                let mut df = t.frame()?;
                crate::stage::tables::write_frame(&path, &mut df)?;
                written.push(path);
            }
            Ok(written)
        }
        _ => {
            let bytes = match format {
                Format::Json => render::json(report)?,
                Format::Markdown => render::markdown(report).into_bytes(),
                Format::Html => html::page(report)?.into_bytes(),
                Format::Xlsx => xlsx::workbook(report)?,
                Format::Pdf => pdf::document(report),
                Format::Csv | Format::Parquet => unreachable!("handled above"),
            };
            atomic_write(out, &bytes)?;
            Ok(vec![out.to_path_buf()])
        }
    }
}

/// `dir/name.TABLE.ext` beside `out`.
fn sibling(out: &Path, table: &str, ext: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "report".into());
    out.with_file_name(format!("{stem}.{table}.{ext}"))
}

pub use crate::stage::tables::atomic_write;

/// The format named by a file's extension.
pub fn format_of(path: &Path) -> Result<Format> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    Format::ALL
        .into_iter()
        .find(|f| f.extension() == ext || (ext == "markdown" && *f == Format::Markdown))
        .ok_or_else(|| Error::InvalidParameter {
            name: "--format",
            reason: format!(
                "cannot tell the format from {}: give --format json|csv|markdown|html|xlsx|pdf|parquet",
                path.display()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `summary.json` and `summary.html` written at the same time, over and over, from
    /// two threads (as two `/reports/generate` calls do): each file ends up holding its own
    /// bytes and no temp file is left. Both used to go through `summary.tmp-meterlake`, so
    /// one rename published the other's bytes, or failed for want of its file.
    #[test]
    fn two_formats_of_one_report_written_at_once_keep_their_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let write_many = |name: &'static str, dir: PathBuf| {
            std::thread::spawn(move || {
                let path = dir.join(name);
                for i in 0..200 {
                    let bytes = format!("{name} {i}\n").repeat(50);
                    atomic_write(&path, bytes.as_bytes()).unwrap();
                    let back = std::fs::read_to_string(&path).unwrap();
                    assert!(back.starts_with(name), "{name} holds {back:.20}");
                }
            })
        };
        let a = write_many("summary.json", dir.path().to_path_buf());
        let b = write_many("summary.html", dir.path().to_path_buf());
        a.join().unwrap();
        b.join().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["summary.html", "summary.json"]);
    }
}
