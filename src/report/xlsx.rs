//! An Excel workbook: an overview sheet (figures and insights), then one sheet per table
//! with typed cells (numbers stay numbers, dates and instants are Excel dates shown as
//! `yyyy-mm-dd` and `yyyy-mm-dd hh:mm:ss`, UTC), a frozen header and an autofilter. The
//! overview's figures are numbers too, with a display format that shows them as the
//! other formats do (`1,234`, `432.62 EUR`, `+5.0%`).

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
    // Deflate level 3, not 6: a report's workbook is written on every run, and level 6's
    // match search was 8 % of the batch job's CPU in its report stage (perf). On the
    // 1,000-tenant lake the stage took 4.4-4.8 s instead of 5.2-5.3 s for workbooks 13 %
    // larger (level 1: 4.2-4.6 s, 75 % larger).
    wb.set_zip_compression_level(3);
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
        match figure_number(&f.value) {
            Some((v, fmt)) => overview
                .write_number_with_format(row, 1, v, &Format::new().set_num_format(fmt))
                .map_err(err)?,
            None => overview.write_string(row, 1, &f.value).map_err(err)?,
        };
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
            // Thousands grouped, as the other page formats show them; money says its
            // currency.
            let mut f = if c.decimals > 0 {
                format!("#,##0.{}", "0".repeat(c.decimals))
            } else {
                "#,##0".to_string()
            };
            if let Some(cur) = &c.currency {
                f.push_str(&format!("\" {cur}\""));
            }
            Format::new().set_num_format(f)
        })
        .collect();
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let datetime = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    for (c, col) in t.columns.iter().enumerate() {
        ws.write_string_with_format(0, c as u16, &col.name, bold)
            .map_err(err)?;
        let mut width = col.name.len();
        for r in 0..t.height() {
            let row = r as u32 + 1;
            match t.cell(c, r) {
                Cell::Null => {}
                Cell::Text(s) => match excel_date(s) {
                    Some((dt, time)) => {
                        let f = if time { &datetime } else { &date };
                        width = width.max(if time { 19 } else { 10 });
                        ws.write_datetime_with_format(row, c as u16, &dt, f)
                            .map_err(err)?;
                    }
                    None => {
                        width = width.max(s.chars().count().min(60));
                        ws.write_string(row, c as u16, s).map_err(err)?;
                    }
                },
                Cell::Int(v) => {
                    ws.write_number_with_format(row, c as u16, v as f64, &formats[c])
                        .map_err(err)?;
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

/// A date (`2026-10-01`) or a UTC instant (`2026-10-01T12:30:00Z`, RFC 3339) as an Excel
/// date, and whether it has a time of day; None for any other text.
fn excel_date(s: &str) -> Option<(ExcelDateTime, bool)> {
    use chrono::{Datelike, Timelike};
    let bytes = s.as_bytes();
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    if s.len() == 10 {
        let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
        let x = ExcelDateTime::from_ymd(d.year() as u16, d.month() as u8, d.day() as u8).ok()?;
        return Some((x, false));
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?.naive_utc();
    let secs = t.second() as f64 + f64::from(t.nanosecond()) / 1e9;
    let x = ExcelDateTime::from_ymd(t.year() as u16, t.month() as u8, t.day() as u8)
        .ok()?
        .and_hms(t.hour() as u16, t.minute() as u8, secs)
        .ok()?;
    Some((x, true))
}

/// A figure's text as a number and the Excel format that shows it the same way: `1,234` →
/// 1234 as `#,##0`; `432.62 EUR` → 432.62 as `#,##0.00" EUR"`; `+5.0 %` → 0.05 as
/// `+0.0%;-0.0%`. None for text that is not one number (`12 / 3`, `n/a`, `Thu`).
fn figure_number(v: &str) -> Option<(f64, String)> {
    let v = v.trim();
    let (num, suffix, percent) = if let Some(n) = v.strip_suffix('%') {
        (n.trim_end(), String::new(), true)
    } else {
        match v.rsplit_once(' ') {
            Some((n, cur)) if cur.len() == 3 && cur.bytes().all(|b| b.is_ascii_uppercase()) => {
                (n, format!("\" {cur}\""), false)
            }
            _ => (v, String::new(), false),
        }
    };
    let plain = num.replace(',', "");
    let digits = plain.trim_start_matches(['+', '-']);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || digits.matches('.').count() > 1
        || !digits.as_bytes()[0].is_ascii_digit()
    {
        return None;
    }
    let x: f64 = plain.parse().ok()?;
    let decimals = digits.split_once('.').map_or(0, |(_, d)| d.len());
    let frac = if decimals > 0 {
        format!(".{}", "0".repeat(decimals))
    } else {
        String::new()
    };
    let signed = num.starts_with(['+', '-']);
    Some(if percent {
        let f = format!("0{frac}%");
        (x / 100.0, if signed { format!("+{f};-{f}") } else { f })
    } else {
        (x, format!("#,##0{frac}{suffix}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_become_numbers_with_their_look() {
        let cases: [(&str, Option<(f64, &str)>); 9] = [
            ("134,274", Some((134274.0, "#,##0"))),
            ("432.62 EUR", Some((432.62, "#,##0.00\" EUR\""))),
            ("+5.0 %", Some((0.05, "+0.0%;-0.0%"))),
            ("-34.4 %", Some((-0.344, "+0.0%;-0.0%"))),
            ("0.971", Some((0.971, "#,##0.000"))),
            ("77 %", Some((0.77, "0%"))),
            ("27 / 39", None),
            ("n/a", None),
            ("Thu", None),
        ];
        for (text, want) in cases {
            let got = figure_number(text);
            match (got, want) {
                (Some((v, f)), Some((wv, wf))) => {
                    assert!((v - wv).abs() < 1e-12, "{text}: {v}");
                    assert_eq!(f, wf, "{text}");
                }
                (None, None) => {}
                (g, w) => panic!("{text}: {g:?} against {w:?}"),
            }
        }
    }

    #[test]
    fn only_whole_dates_and_instants_become_dates() {
        assert_eq!(excel_date("2026-10-01").map(|d| d.1), Some(false));
        assert_eq!(excel_date("2026-10-01T12:30:00Z").map(|d| d.1), Some(true));
        assert_eq!(
            excel_date("2026-10-01T12:30:00.250000Z").map(|d| d.1),
            Some(true)
        );
        for not in [
            "2026-13-01",
            "2026-10-01 extra",
            "acme-001",
            "2026-10",
            "12:30",
        ] {
            assert!(excel_date(not).is_none(), "{not}");
        }
    }
}
