//! An Excel workbook: an overview sheet (figures and insights), then one sheet per table
//! with typed cells (numbers stay numbers), a frozen header and an autofilter.

use rust_xlsxwriter::{DocProperties, ExcelDateTime, Format, Workbook, Worksheet, XlsxError};

use super::{Cell, Report, Table};
use crate::error::{Error, Result};

fn err(e: XlsxError) -> Error {
    Error::Render(format!("xlsx: {e}"))
}

/// Excel's limit on rows per sheet (header included).
const MAX_ROWS: usize = 1_048_576;

/// The workbook's bytes.
pub(super) fn workbook(r: &Report) -> Result<Vec<u8>> {
    let mut wb = Workbook::new();
    // A fixed creation time: the same report gives the same bytes.
    let epoch = ExcelDateTime::from_ymd(2000, 1, 1).map_err(err)?;
    wb.set_properties(
        &DocProperties::new()
            .set_title(&r.title)
            .set_comment(&r.scope)
            .set_creation_datetime(&epoch),
    );
    let bold = Format::new().set_bold();
    let overview = wb.add_worksheet();
    overview.set_name("overview").map_err(err)?;
    overview
        .write_string_with_format(0, 0, &r.title, &bold)
        .map_err(err)?;
    overview.write_string(1, 0, &r.scope).map_err(err)?;
    for (row, f) in (3u32..).zip(&r.figures) {
        overview
            .write_string_with_format(row, 0, &f.label, &bold)
            .map_err(err)?;
        overview.write_string(row, 1, &f.value).map_err(err)?;
        if let Some(d) = &f.detail {
            overview.write_string(row, 2, d).map_err(err)?;
        }
    }
    overview.set_column_width(0, 34).map_err(err)?;
    overview.set_column_width(1, 20).map_err(err)?;
    for t in r.all_tables() {
        let ws = wb.add_worksheet();
        ws.set_name(&t.name).map_err(err)?;
        sheet(ws, &t, &bold)?;
    }
    wb.save_to_buffer().map_err(err)
}

fn sheet(ws: &mut Worksheet, t: &Table, bold: &Format) -> Result<()> {
    if t.height() + 1 > MAX_ROWS {
        return Err(Error::Render(format!(
            "table {} has {} rows, more than a sheet holds; use the CSV or Parquet format",
            t.name,
            t.height()
        )));
    }
    let formats: Vec<Format> = t
        .columns
        .iter()
        .map(|c| {
            if c.decimals > 0 {
                Format::new().set_num_format(format!("0.{}", "0".repeat(c.decimals)))
            } else {
                Format::new()
            }
        })
        .collect();
    for (c, col) in t.columns.iter().enumerate() {
        ws.write_string_with_format(0, c as u16, &col.name, bold)
            .map_err(err)?;
        let mut width = col.name.len();
        for r in 0..t.height() {
            let row = r as u32 + 1;
            match t.cell(c, r) {
                Cell::Null => {}
                Cell::Text(s) => {
                    width = width.max(s.chars().count().min(60));
                    ws.write_string(row, c as u16, s).map_err(err)?;
                }
                Cell::Int(v) => {
                    ws.write_number(row, c as u16, v as f64).map_err(err)?;
                }
                Cell::Num(v, _) => {
                    ws.write_number_with_format(row, c as u16, v, &formats[c])
                        .map_err(err)?;
                }
                d @ Cell::Decimal(_) => {
                    let v = d.number().unwrap_or_default();
                    ws.write_number_with_format(row, c as u16, v, &formats[c])
                        .map_err(err)?;
                }
                Cell::Bool(b) => {
                    ws.write_boolean(row, c as u16, b).map_err(err)?;
                }
            }
        }
        ws.set_column_width(c as u16, (width.max(10) + 2) as f64)
            .map_err(err)?;
    }
    ws.set_freeze_panes(1, 0).map_err(err)?;
    if !t.columns.is_empty() {
        ws.autofilter(0, 0, t.height() as u32, t.columns.len() as u16 - 1)
            .map_err(err)?;
    }
    Ok(())
}
