//! One self-contained HTML page: figures, insights, SVG charts drawn with plotters, tables.
//! No scripts, no external files: it opens the same from a mail attachment or a file share.

use std::fmt::Write;

use plotters::prelude::*;

use super::{BarChart, Chart, PAGE_ROWS, Report, Table, TimeChart};
use crate::error::{Error, Result};

/// The style of every HTML page: the reports, and the dashboard under its own.
pub const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;padding:0 1rem}\
h1{margin-bottom:.2rem}.scope{color:#5b6474;margin-top:0}\
.figures{display:flex;flex-wrap:wrap;gap:.8rem;margin:1.2rem 0}\
.figure{border:1px solid #d8dde6;border-radius:6px;padding:.6rem .9rem;min-width:10rem}\
.figure .v{font-size:1.4rem;font-weight:600}.figure .l{color:#5b6474;font-size:.85rem}.figure .d{color:#5b6474;font-size:.8rem}\
ul.insights{padding-left:0;list-style:none}ul.insights li{margin:.3rem 0;padding:.3rem .6rem;border-left:4px solid #8aa1c1}\
li.warning{border-color:#e0a030!important}li.critical{border-color:#d0453a!important}\
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.85rem}th,td{border-bottom:1px solid #e3e7ee;padding:.25rem .6rem;text-align:left}\
th{background:#f3f5f9}td.n{text-align:right;font-variant-numeric:tabular-nums}.note{color:#5b6474;font-size:.85rem}\
.chart{margin:1rem 0}.chart svg{max-width:100%;height:auto}.scroll{overflow-x:auto}";

/// Escapes text for HTML (element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// The page.
pub(super) fn page(r: &Report) -> Result<String> {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1><p class=\"scope\">{}</p>\n",
        esc(&r.title),
        esc(&r.title),
        esc(&r.scope)
    );
    o.push_str(&body(r, true)?);
    o.push_str("</body></html>\n");
    Ok(o)
}

/// The report's figures, insights, charts and tables as HTML elements (no title, no page
/// around them): what a page embeds, in [`STYLE`]'s classes. Each chart is a figure with
/// a text alternative; each table scrolls on its own on a narrow screen and can be reached
/// with the keyboard. `insights_table` adds the insights as a table after the others (the
/// list at the top shows [`super::PAGE_INSIGHTS`] of them).
pub fn body(r: &Report, insights_table: bool) -> Result<String> {
    let mut o = String::new();
    if !r.figures.is_empty() {
        o.push_str("<div class=\"figures\">");
        for f in &r.figures {
            let _ = write!(
                o,
                "<div class=\"figure\"><div class=\"l\">{}</div><div class=\"v\">{}</div>",
                esc(&f.label),
                esc(&f.value)
            );
            if let Some(d) = &f.detail {
                let _ = write!(o, "<div class=\"d\">{}</div>", esc(d));
            }
            o.push_str("</div>");
        }
        o.push_str("</div>\n");
    }
    let (shown, more) = r.page_insights();
    if !shown.is_empty() {
        o.push_str("<h2>Insights</h2><ul class=\"insights\">");
        for i in shown {
            let _ = write!(
                o,
                "<li class=\"{}\"><b>{}</b> {}</li>",
                i.severity.name(),
                i.severity.name(),
                esc(&i.message)
            );
        }
        if more > 0 {
            let _ = write!(o, "<li>{more} more in the Insights table below.</li>");
        }
        o.push_str("</ul>\n");
    }
    for c in &r.charts {
        let _ = write!(
            o,
            "<figure class=\"chart\" role=\"img\" aria-label=\"{}\">",
            esc(&describe(c))
        );
        o.push_str(&svg(c)?);
        o.push_str("</figure>\n");
    }
    let tables = if insights_table {
        r.all_tables()
    } else {
        r.tables.clone()
    };
    for t in &tables {
        table(&mut o, t);
    }
    Ok(o)
}

/// A chart in words: its title, its lines and their span and peak, or its bars.
pub fn describe(c: &Chart) -> String {
    match c {
        Chart::Time(t) => {
            let ((x0, x1), _) = time_ranges(t);
            let mut parts: Vec<String> = t
                .lines
                .iter()
                .chain(t.forecast.iter())
                .map(|l| {
                    let peak = l.points.iter().map(|p| p.1).fold(f64::NAN, f64::max);
                    format!(
                        "{} ({} points, peak {})",
                        l.name,
                        l.points.len(),
                        if peak.is_finite() {
                            format!("{peak:.1}")
                        } else {
                            "none".into()
                        }
                    )
                })
                .collect();
            if !t.markers.is_empty() {
                parts.push(format!("{} anomalies marked", t.markers.len()));
            }
            format!(
                "{}, {} to {}: {}",
                t.title,
                day_label(x0),
                day_label(x1),
                parts.join("; ")
            )
        }
        Chart::Bars(b) => {
            let bars: Vec<String> = b
                .bars
                .iter()
                .map(|x| format!("{} {:.1}", x.label, x.value))
                .collect();
            format!("{} ({}): {}", b.title, b.unit, bars.join(", "))
        }
    }
}

fn table(o: &mut String, t: &Table) {
    let _ = write!(o, "<h2>{}</h2>", esc(&t.title));
    if t.height() == 0 {
        o.push_str("<p class=\"note\">none</p>\n");
        return;
    }
    let _ = write!(
        o,
        "<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"{}\"><table><thead><tr>",
        esc(&t.title)
    );
    for c in 0..t.columns.len() {
        let _ = write!(o, "<th>{}</th>", esc(&t.header(c)));
    }
    o.push_str("</tr></thead><tbody>");
    for r in 0..t.height().min(PAGE_ROWS) {
        o.push_str("<tr>");
        for c in 0..t.columns.len() {
            let cell = t.cell(c, r);
            let class = if cell.numeric() { " class=\"n\"" } else { "" };
            let _ = write!(o, "<td{class}>{}</td>", esc(&t.shown(c, r)));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table></div>\n");
    if t.height() > PAGE_ROWS {
        let _ = writeln!(
            o,
            "<p class=\"note\">{} more rows in the CSV, Parquet and XLSX versions of this report.</p>",
            t.height() - PAGE_ROWS
        );
    }
}

fn draw_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Render(format!("chart: {e:?}"))
}

/// A chart as an inline SVG element.
pub(super) fn svg(c: &Chart) -> Result<String> {
    let mut buf = String::new();
    match c {
        Chart::Time(t) => time_svg(&mut buf, t)?,
        Chart::Bars(b) => bars_svg(&mut buf, b)?,
    }
    // plotters writes a standalone document; inline, the XML declaration must go.
    Ok(match buf.find("<svg") {
        Some(i) => buf[i..].to_string(),
        None => buf,
    })
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(44, 102, 176),
    RGBColor(214, 120, 38),
    RGBColor(60, 150, 80),
    RGBColor(140, 80, 160),
    RGBColor(120, 120, 120),
    RGBColor(30, 160, 170),
];

/// `YYYY-MM-DD` of a UTC µs instant (axis labels).
pub(super) fn day_label(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The x and y ranges of a time chart (y from 0, with headroom).
pub(super) fn time_ranges(t: &TimeChart) -> ((i64, i64), f64) {
    let xs = t
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .chain(t.forecast.iter().flat_map(|l| l.points.iter().map(|p| p.0)))
        .chain(t.band.iter().map(|b| b.0));
    let (mut x0, mut x1) = (i64::MAX, i64::MIN);
    for x in xs {
        x0 = x0.min(x);
        x1 = x1.max(x);
    }
    if x0 > x1 {
        (x0, x1) = (0, 1);
    }
    if x0 == x1 {
        x1 = x0 + 1;
    }
    let ymax = t
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(t.forecast.iter().flat_map(|l| l.points.iter().map(|p| p.1)))
        .chain(t.band.iter().map(|b| b.2))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    ((x0, x1), if ymax > 0.0 { ymax * 1.08 } else { 1.0 })
}

fn time_svg(buf: &mut String, t: &TimeChart) -> Result<()> {
    let root = SVGBackend::with_string(buf, (1000, 320)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let ((x0, x1), ymax) = time_ranges(t);
    let mut chart = ChartBuilder::on(&root)
        .caption(&t.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(x0 as f64..x1 as f64, 0.0..ymax)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&|v| day_label(*v as i64))
        .y_label_formatter(&|v| axis_label(*v))
        .y_desc(t.y_label.as_str())
        .light_line_style(RGBColor(238, 240, 244))
        .draw()
        .map_err(draw_err)?;
    if !t.band.is_empty() {
        let mut poly: Vec<(f64, f64)> = t.band.iter().map(|b| (b.0 as f64, b.2)).collect();
        poly.extend(t.band.iter().rev().map(|b| (b.0 as f64, b.1.max(0.0))));
        chart
            .draw_series(std::iter::once(Polygon::new(poly, PALETTE[0].mix(0.18))))
            .map_err(draw_err)?
            .label("forecast interval")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 18, y + 5)], PALETTE[0].mix(0.18).filled())
            });
    }
    for (i, l) in t.lines.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                l.points.iter().map(|p| (p.0 as f64, p.1)),
                colour.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(l.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
    }
    if let Some(f) = &t.forecast {
        let colour = PALETTE[1];
        chart
            .draw_series(DashedLineSeries::new(
                f.points.iter().map(|p| (p.0 as f64, p.1)),
                6,
                4,
                colour.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(f.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
    }
    if !t.markers.is_empty() {
        let red = RGBColor(208, 69, 58);
        chart
            .draw_series(
                t.markers
                    .iter()
                    .map(|m| Circle::new((m.0 as f64, m.1), 5, red.filled())),
            )
            .map_err(draw_err)?
            .label("anomaly")
            .legend(move |(x, y)| Circle::new((x + 9, y), 5, red.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

/// An axis value for people: no spurious decimals, thousands as k, M, G, T (`16000.0` →
/// `16k`, `2500000` → `2.5M`, `0.25` → `0.25`).
pub(super) fn axis_label(v: f64) -> String {
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let a = v.abs();
    for (scale, suffix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if a >= scale {
            return format!("{}{suffix}", trim(format!("{:.2}", v / scale)));
        }
    }
    let s = trim(format!("{v:.2}"));
    if s == "-0" { "0".into() } else { s }
}

/// Colour of a quota status.
pub(super) fn status_rgb(status: &str) -> (u8, u8, u8) {
    match status {
        "warning" => (224, 160, 48),
        "critical" => (226, 110, 40),
        "exceeded" | "blocked" => (208, 69, 58),
        _ => (60, 150, 80),
    }
}

fn bars_svg(buf: &mut String, b: &BarChart) -> Result<()> {
    let n = b.bars.len().max(1);
    let height = 60 + 22 * n as u32;
    let root = SVGBackend::with_string(buf, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let xmax = b.max_value() * 1.08;
    let mut chart = ChartBuilder::on(&root)
        .caption(&b.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..xmax * 1.3, 0.0..n as f64)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_label_formatter(&|v| axis_label(*v))
        .x_desc(b.unit.as_str())
        .light_line_style(RGBColor(238, 240, 244))
        .draw()
        .map_err(draw_err)?;
    let top = |i: usize| (n - i) as f64 - 0.15;
    chart
        .draw_series(b.bars.iter().enumerate().map(|(i, bar)| {
            let (r, g, bl) = status_rgb(&bar.status);
            Rectangle::new(
                [(0.0, top(i) - 0.7), (bar.value.max(0.0), top(i))],
                RGBColor(r, g, bl).filled(),
            )
        }))
        .map_err(draw_err)?;
    chart
        .draw_series(b.bars.iter().enumerate().map(|(i, bar)| {
            Text::new(
                format!("{}  {:.1}", bar.label, bar.value),
                (bar.value.max(0.0) + xmax * 0.01, top(i) - 0.2),
                ("sans-serif", 13),
            )
        }))
        .map_err(draw_err)?;
    if let Some(rf) = b.reference {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(rf, 0.0), (rf, n as f64)],
                BLACK.stroke_width(1),
            )))
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_drop_spurious_decimals() {
        let cases = [
            (0.0, "0"),
            (16000.0, "16k"),
            (2_500_000.0, "2.5M"),
            (13_564_368_128.0, "13.56G"),
            (0.25, "0.25"),
            (120.0, "120"),
            (-1500.0, "-1.5k"),
            (-0.001, "0"),
        ];
        for (v, want) in cases {
            assert_eq!(axis_label(v), want, "{v}");
        }
    }
}
