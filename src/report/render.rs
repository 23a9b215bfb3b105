//! JSON and Markdown renderings of a report.

use std::fmt::Write;

use super::{PAGE_ROWS, Report, Table};
use crate::error::Result;

/// The report as one JSON document: figures, insights (with evidence) and every table's rows.
pub(super) fn json(r: &Report) -> Result<Vec<u8>> {
    let tables: serde_json::Map<String, serde_json::Value> = r
        .tables
        .iter()
        .map(|t| {
            let rows = t
                .records()
                .into_iter()
                .map(serde_json::Value::Object)
                .collect();
            (t.name.clone(), serde_json::Value::Array(rows))
        })
        .collect();
    let doc = serde_json::json!({
        "kind": r.kind,
        "title": r.title,
        "scope": r.scope,
        "figures": r.figures,
        "insights": r.insights,
        "tables": tables,
    });
    let mut out =
        serde_json::to_vec_pretty(&doc).map_err(|e| crate::Error::Render(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// Escapes a Markdown table cell.
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// A table in Markdown, at most [`PAGE_ROWS`] rows (with a note of the rest).
pub(super) fn markdown_table(out: &mut String, t: &Table) {
    let _ = writeln!(out, "## {}\n", t.title);
    if t.height() == 0 {
        out.push_str("_none_\n\n");
        return;
    }
    let names: Vec<String> = (0..t.columns.len()).map(|c| t.header(c)).collect();
    let _ = writeln!(out, "| {} |", names.join(" | "));
    let aligns: Vec<&str> = (0..t.columns.len())
        .map(|c| {
            if t.cell(c, 0).numeric() {
                "---:"
            } else {
                "---"
            }
        })
        .collect();
    let _ = writeln!(out, "|{}|", aligns.join("|"));
    for r in 0..t.height().min(PAGE_ROWS) {
        let cells: Vec<String> = (0..t.columns.len())
            .map(|c| md_cell(&t.shown(c, r)))
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    if t.height() > PAGE_ROWS {
        let _ = writeln!(
            out,
            "\n_{} more rows in the CSV, Parquet and XLSX versions of this report._",
            t.height() - PAGE_ROWS
        );
    }
    out.push('\n');
}

/// The report in Markdown: figures, insights, then every table.
pub(super) fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n\n{}\n", r.title, r.scope);
    if !r.figures.is_empty() {
        for f in &r.figures {
            let _ = write!(out, "- **{}**: {}", f.label, f.value);
            if let Some(d) = &f.detail {
                let _ = write!(out, " ({d})");
            }
            out.push('\n');
        }
        out.push('\n');
    }
    let (shown, more) = r.page_insights();
    if !shown.is_empty() {
        out.push_str("## Insights\n\n");
        for i in shown {
            let _ = writeln!(out, "- **{}** {}", i.severity.name(), md_cell(&i.message));
        }
        if more > 0 {
            let _ = writeln!(out, "- _{more} more in the Insights table below._");
        }
        out.push('\n');
    }
    for t in &r.all_tables() {
        markdown_table(&mut out, t);
    }
    out
}
