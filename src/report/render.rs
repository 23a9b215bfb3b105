//! JSON and Markdown renderings of a report.

use std::fmt::Write;

use super::{PAGE_ROWS, Report, Table};
use crate::error::Result;

/// The report as one JSON document: figures, insights (with evidence) and every table's rows.
/// Streamed: each table's rows are written as they are read, never built as JSON values
/// first (the detailed report of 1,000 tenants is 34 MB of JSON).
pub(super) fn json(r: &Report) -> Result<Vec<u8>> {
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        kind: &'a super::ReportKind,
        title: &'a str,
        scope: &'a str,
        figures: &'a [super::Figure],
        insights: &'a [super::Insight],
        tables: Tables<'a>,
    }
    let doc = Doc {
        kind: &r.kind,
        title: &r.title,
        scope: &r.scope,
        figures: &r.figures,
        insights: &r.insights,
        tables: Tables(&r.tables),
    };
    let mut out = Vec::new();
    serde_json::to_writer_pretty(&mut out, &doc)
        .map_err(|e| crate::Error::Render(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// Tables as one JSON object: name → rows.
struct Tables<'a>(&'a [Table]);

impl serde::Serialize for Tables<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for t in self.0 {
            m.serialize_entry(&t.name, &Rows(t))?;
        }
        m.end()
    }
}

/// A table's rows as a JSON array of objects, in column order.
struct Rows<'a>(&'a Table);

impl serde::Serialize for Rows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let t = self.0;
        let mut seq = s.serialize_seq(Some(t.height()))?;
        for r in 0..t.height() {
            seq.serialize_element(&Row(t, r))?;
        }
        seq.end()
    }
}

/// One row of a table as a JSON object.
struct Row<'a>(&'a Table, usize);

impl serde::Serialize for Row<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use super::table::Cell;
        use serde::ser::SerializeMap;
        let (t, r) = (self.0, self.1);
        let mut m = s.serialize_map(Some(t.columns.len()))?;
        for (c, col) in t.columns.iter().enumerate() {
            match t.cell(c, r) {
                Cell::Null => m.serialize_entry(&col.name, &())?,
                Cell::Text(v) => m.serialize_entry(&col.name, v)?,
                Cell::Int(v) => m.serialize_entry(&col.name, &v)?,
                // A non-finite number is written `null`, as a JSON value of it would be.
                Cell::Num(v, _) => m.serialize_entry(&col.name, &v)?,
                d @ Cell::Decimal(_) => m.serialize_entry(&col.name, &d.number())?,
                Cell::Bool(v) => m.serialize_entry(&col.name, &v)?,
            }
        }
        m.end()
    }
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
