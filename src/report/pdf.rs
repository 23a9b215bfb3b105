//! A PDF document drawn with pdf-writer: A4 pages with the title, figures, insights,
//! charts (vector lines, bands and markers) and tables in a monospaced font. It uses the
//! standard Helvetica and Courier fonts (nothing embedded), so its text is selectable and
//! `pdftotext` reads it back.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};

use super::html::{day_label, status_rgb, time_ranges};
use super::{BarChart, Chart, PAGE_ROWS, Report, Table, TimeChart};

const W: f32 = 595.0;
const H: f32 = 842.0;
const MARGIN: f32 = 40.0;
const SANS: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");
const MONO: Name<'static> = Name(b"F3");

/// Text in WinAnsi (Latin-1 plus €, dashes, quotes): what the standard fonts can show.
/// The other symbols the reports write are spelled with those (`→` as `->`, `≥` as `>=`,
/// `−` as `-`); anything else becomes `?`.
fn ansi(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in spelled(s).chars() {
        match c {
            '€' => out.push(0x80),
            '…' => out.push(0x85),
            '‘' => out.push(0x91),
            '’' => out.push(0x92),
            '“' => out.push(0x93),
            '”' => out.push(0x94),
            '•' => out.push(0x95),
            '–' => out.push(0x96),
            '—' => out.push(0x97),
            '≈' => out.push(b'~'),
            '−' => out.push(b'-'),
            c if (c as u32) < 0x7f && (c as u32) >= 0x20 => out.push(c as u8),
            c if (0xa0..=0xff).contains(&(c as u32)) => out.push(c as u8),
            _ => out.push(b'?'),
        }
    }
    out
}

/// `s` with the symbols the standard fonts lack and [`ansi`] prints as two characters
/// spelled out (`→` as `->`, `≥` as `>=`): one mapping, so a table measures and wraps
/// exactly what it prints.
fn spelled(s: &str) -> String {
    s.replace('→', "->")
        .replace('←', "<-")
        .replace('≥', ">=")
        .replace('≤', "<=")
}

/// Pages being laid out, top to bottom.
struct Doc {
    pages: Vec<Content>,
    page: Content,
    y: f32,
}

impl Doc {
    fn new() -> Doc {
        Doc {
            pages: Vec::new(),
            page: Content::new(),
            y: H - MARGIN,
        }
    }

    /// Starts a new page unless `need` points are left on this one.
    fn room(&mut self, need: f32) {
        if self.y - need < MARGIN {
            let full = std::mem::replace(&mut self.page, Content::new());
            self.pages.push(full);
            self.y = H - MARGIN;
        }
    }

    fn text_at(&mut self, font: Name, size: f32, x: f32, y: f32, s: &str) {
        let bytes = ansi(s);
        self.page
            .begin_text()
            .set_font(font, size)
            .next_line(x, y)
            .show(Str(&bytes))
            .end_text();
    }

    /// A line of text, wrapped at the page width (Helvetica ~0.5 em per character).
    fn para(&mut self, font: Name, size: f32, s: &str) {
        let per_line = ((W - 2.0 * MARGIN) / (size * 0.5)) as usize;
        let mut line = String::new();
        let mut lines = Vec::new();
        for word in s.split_whitespace() {
            if !line.is_empty() && line.chars().count() + word.chars().count() + 1 > per_line {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            lines.push(line);
        }
        for l in lines {
            self.room(size * 1.4);
            self.y -= size * 1.4;
            self.text_at(font, size, MARGIN, self.y, &l);
        }
    }

    fn finish(mut self) -> Vec<Content> {
        self.pages.push(self.page);
        self.pages
    }
}

/// The document's bytes.
pub(super) fn document(r: &Report) -> Vec<u8> {
    let mut d = Doc::new();
    d.para(BOLD, 18.0, &r.title);
    d.para(SANS, 10.0, &r.scope);
    d.y -= 8.0;
    for f in &r.figures {
        let line = match &f.detail {
            Some(x) => format!("{}: {} ({x})", f.label, f.value),
            None => format!("{}: {}", f.label, f.value),
        };
        d.para(SANS, 10.0, &line);
    }
    let (shown, more) = r.page_insights();
    if !shown.is_empty() {
        d.y -= 6.0;
        d.para(BOLD, 13.0, "Insights");
        for i in shown {
            d.para(SANS, 9.0, &format!("[{}] {}", i.severity.name(), i.message));
        }
        if more > 0 {
            d.para(
                SANS,
                9.0,
                &format!("{more} more in the Insights table below."),
            );
        }
    }
    for c in &r.charts {
        match c {
            Chart::Time(t) => time_chart(&mut d, t),
            Chart::Bars(b) => bar_chart(&mut d, b),
        }
    }
    for t in &r.all_tables() {
        table(&mut d, t);
    }
    assemble(d.finish())
}

fn assemble(pages: Vec<Content>) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let fonts = [Ref::new(3), Ref::new(4), Ref::new(5)];
    let ids: Vec<(Ref, Ref)> = (0..pages.len() as i32)
        .map(|i| (Ref::new(6 + 2 * i), Ref::new(7 + 2 * i)))
        .collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(ids.iter().map(|p| p.0))
        .count(pages.len() as i32);
    for (font, (id, base)) in [SANS, BOLD, MONO].into_iter().zip(fonts.iter().zip([
        &b"Helvetica"[..],
        b"Helvetica-Bold",
        b"Courier",
    ])) {
        let _ = font;
        pdf.type1_font(*id)
            .base_font(Name(base))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    for (content, (page_id, content_id)) in pages.into_iter().zip(&ids) {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, W, H));
        page.parent(tree);
        page.contents(*content_id);
        let mut res = page.resources();
        let mut f = res.fonts();
        f.pair(SANS, fonts[0]);
        f.pair(BOLD, fonts[1]);
        f.pair(MONO, fonts[2]);
        f.finish();
        res.finish();
        page.finish();
        let bytes = content.finish();
        pdf.stream(*content_id, &bytes);
    }
    pdf.finish()
}

fn rgb(c: (u8, u8, u8)) -> (f32, f32, f32) {
    (c.0 as f32 / 255.0, c.1 as f32 / 255.0, c.2 as f32 / 255.0)
}

fn time_chart(d: &mut Doc, t: &TimeChart) {
    let (ch, cw) = (170.0, W - 2.0 * MARGIN - 50.0);
    d.room(ch + 50.0);
    d.y -= 16.0;
    d.text_at(BOLD, 11.0, MARGIN, d.y, &t.title);
    d.y -= 8.0;
    let (x0, y0) = (MARGIN + 50.0, d.y - ch);
    let ((t0, t1), ymax) = time_ranges(t);
    let sx = |ts: i64| x0 + (ts - t0) as f32 / (t1 - t0) as f32 * cw;
    let sy = |v: f64| y0 + (v / ymax) as f32 * ch;
    let p = &mut d.page;
    // Axes and three horizontal guides.
    p.set_stroke_rgb(0.85, 0.87, 0.9).set_line_width(0.5);
    for k in 1..=3 {
        let y = y0 + ch * k as f32 / 3.0;
        p.move_to(x0, y).line_to(x0 + cw, y).stroke();
    }
    p.set_stroke_rgb(0.3, 0.3, 0.3).set_line_width(0.8);
    p.move_to(x0, y0 + ch)
        .line_to(x0, y0)
        .line_to(x0 + cw, y0)
        .stroke();
    if !t.band.is_empty() {
        p.set_fill_rgb(0.8, 0.86, 0.94);
        let first = &t.band[0];
        p.move_to(sx(first.0), sy(first.2));
        for b in &t.band[1..] {
            p.line_to(sx(b.0), sy(b.2));
        }
        for b in t.band.iter().rev() {
            p.line_to(sx(b.0), sy(b.1.max(0.0)));
        }
        p.close_path().fill_nonzero();
    }
    let colours = [
        (44, 102, 176),
        (60, 150, 80),
        (140, 80, 160),
        (30, 160, 170),
    ];
    for (i, l) in t.lines.iter().enumerate() {
        let (r, g, b) = rgb(colours[i % colours.len()]);
        polyline(
            p,
            l.points.iter().map(|q| (sx(q.0), sy(q.1))),
            (r, g, b),
            None,
        );
    }
    if let Some(f) = &t.forecast {
        polyline(
            p,
            f.points.iter().map(|q| (sx(q.0), sy(q.1))),
            rgb((214, 120, 38)),
            Some([4.0, 3.0]),
        );
    }
    p.set_fill_rgb(0.82, 0.27, 0.23);
    for m in &t.markers {
        let (x, y) = (sx(m.0), sy(m.1));
        p.rect(x - 2.5, y - 2.5, 5.0, 5.0).fill_nonzero();
    }
    p.set_fill_rgb(0.0, 0.0, 0.0);
    d.text_at(SANS, 7.0, MARGIN, y0 + ch - 3.0, &compact(ymax / 1.08));
    d.text_at(SANS, 7.0, MARGIN, y0, "0");
    for k in 0..5 {
        let ts = t0 + (t1 - t0) * k / 4;
        d.text_at(SANS, 7.0, sx(ts) - 18.0, y0 - 10.0, &day_label(ts));
    }
    let mut legend: Vec<String> = t.lines.iter().map(|l| l.name.clone()).collect();
    if let Some(f) = &t.forecast {
        legend.push(format!("{} (dashed, shaded interval)", f.name));
    }
    if !t.markers.is_empty() {
        legend.push(format!("{} anomalies (red)", t.markers.len()));
    }
    d.text_at(
        SANS,
        7.0,
        x0,
        y0 - 20.0,
        &legend.join("  ·  ").replace('·', "-"),
    );
    d.y = y0 - 28.0;
}

fn polyline(
    p: &mut Content,
    pts: impl Iterator<Item = (f32, f32)>,
    (r, g, b): (f32, f32, f32),
    dash: Option<[f32; 2]>,
) {
    p.save_state();
    p.set_stroke_rgb(r, g, b).set_line_width(1.2);
    if let Some(ds) = dash {
        p.set_dash_pattern(ds, 0.0);
    }
    let mut first = true;
    for (x, y) in pts {
        if first {
            p.move_to(x, y);
            first = false;
        } else {
            p.line_to(x, y);
        }
    }
    if !first {
        p.stroke();
    }
    p.restore_state();
}

/// 1234567 → `1.23M`.
fn compact(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

fn bar_chart(d: &mut Doc, b: &BarChart) {
    let row = 11.0;
    d.room(40.0 + row * b.bars.len().min(10) as f32);
    d.y -= 16.0;
    d.text_at(
        BOLD,
        11.0,
        MARGIN,
        d.y,
        &format!("{} ({})", b.title, b.unit),
    );
    d.y -= 6.0;
    let label_w = 150.0;
    let cw = W - 2.0 * MARGIN - label_w - 40.0;
    let xmax = b.max_value();
    for bar in &b.bars {
        d.room(row + 4.0);
        d.y -= row;
        let x0 = MARGIN + label_w;
        let (r, g, bl) = rgb(status_rgb(&bar.status));
        let w = (bar.value.max(0.0) / xmax) as f32 * cw;
        d.page
            .set_fill_rgb(r, g, bl)
            .rect(x0, d.y, w, row - 3.0)
            .fill_nonzero();
        d.page.set_fill_rgb(0.0, 0.0, 0.0);
        let label: String = bar.label.chars().take(34).collect();
        d.text_at(SANS, 7.5, MARGIN, d.y + 1.5, &label);
        d.text_at(
            SANS,
            7.5,
            x0 + w + 3.0,
            d.y + 1.5,
            &format!("{:.1}", bar.value),
        );
        if let Some(rf) = b.reference {
            let x = x0 + (rf / xmax) as f32 * cw;
            d.page
                .set_stroke_rgb(0.2, 0.2, 0.2)
                .set_line_width(0.6)
                .move_to(x, d.y - 1.0)
                .line_to(x, d.y + row - 1.0)
                .stroke();
        }
    }
    d.y -= 8.0;
}

fn table(d: &mut Doc, t: &Table) {
    d.room(60.0);
    d.y -= 10.0;
    d.para(BOLD, 12.0, &t.title);
    if t.height() == 0 {
        d.para(SANS, 9.0, "none");
        return;
    }
    let rows = t.height().min(PAGE_ROWS);
    // Column widths in characters: the widest cell, capped; the font shrinks to fit the page.
    let mut widths: Vec<usize> = (0..t.columns.len())
        .map(|c| t.header(c).chars().count())
        .collect();
    for (c, w) in widths.iter_mut().enumerate() {
        for r in 0..rows {
            *w = (*w).max(spelled(&t.shown(c, r)).chars().count());
        }
        *w = (*w).min(40);
    }
    let chars: usize = widths.iter().sum::<usize>() + 2 * widths.len();
    let size = ((W - 2.0 * MARGIN) / (chars as f32 * 0.6)).clamp(4.5, 8.0);
    // A row is as many lines as its tallest cell: a long cell wraps (at spaces when it
    // can) instead of being cut.
    let lines = |cells: Vec<String>| -> Vec<String> {
        let wrapped: Vec<Vec<String>> = cells
            .iter()
            .zip(&widths)
            .map(|(s, w)| wrap(&spelled(s), *w))
            .collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
        (0..height)
            .map(|i| {
                wrapped
                    .iter()
                    .zip(&widths)
                    .map(|(parts, w)| {
                        let s = parts.get(i).map_or("", String::as_str);
                        format!("{s:<w$}  ")
                    })
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    };
    let header = lines((0..t.columns.len()).map(|c| t.header(c)).collect());
    let lead = size * 1.3;
    let print_header = |d: &mut Doc| {
        for h in &header {
            d.y -= lead;
            d.text_at(MONO, size, MARGIN, d.y, h);
        }
    };
    d.room(lead * (header.len() + 1) as f32);
    print_header(d);
    for r in 0..rows {
        let row = lines((0..t.columns.len()).map(|c| t.shown(c, r)).collect());
        if d.y - lead * (row.len() as f32) < MARGIN {
            d.room(H);
            print_header(d);
        }
        for l in &row {
            d.y -= lead;
            d.text_at(MONO, size, MARGIN, d.y, l);
        }
    }
    if t.height() > rows {
        d.para(
            SANS,
            8.0,
            &format!(
                "{} more rows in the CSV, Parquet and XLSX versions of this report.",
                t.height() - rows
            ),
        );
    }
}

/// `s` in lines of at most `w` characters, broken at spaces where a word fits, else inside
/// it; at least one line.
fn wrap(s: &str, w: usize) -> Vec<String> {
    let w = w.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        let len = cur.chars().count();
        if len > 0 && len + 1 + word.len() <= w {
            cur.push(' ');
            cur.extend(&word);
            continue;
        }
        if len > 0 {
            lines.push(std::mem::take(&mut cur));
        }
        while word.len() > w {
            lines.push(word.drain(..w).collect());
        }
        cur = word.into_iter().collect();
    }
    lines.push(cur);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_cells_wrap_and_lose_nothing() {
        let s = "acme-001 would pay 46.44 EUR on basic instead of 499.00 EUR on enterprise";
        let lines = wrap(s, 20);
        assert!(lines.iter().all(|l| l.chars().count() <= 20), "{lines:?}");
        assert_eq!(lines.join(" "), s);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 5), [""]);
    }

    #[test]
    fn symbols_are_spelled_in_winansi() {
        assert_eq!(ansi("111 → 49, ≥ 2 −3"), b"111 -> 49, >= 2 -3".to_vec());
        assert_eq!(ansi("10 €"), b"10 \x80".to_vec());
    }

    #[test]
    fn text_is_winansi() {
        assert_eq!(
            ansi("€5 — é ✓"),
            vec![0x80, b'5', b' ', 0x97, b' ', 0xe9, b' ', b'?']
        );
    }

    #[test]
    fn long_tables_flow_onto_more_pages() {
        let t = Table::new("t", "T").int("n", 0..500);
        let r = Report {
            kind: super::super::ReportKind::Summary,
            title: "x".into(),
            scope: "y".into(),
            figures: vec![],
            insights: vec![],
            charts: vec![],
            tables: vec![t],
        };
        let pdf = document(&r);
        let text = String::from_utf8_lossy(&pdf);
        // 200 rows shown (PAGE_ROWS), the rest pointed to the data formats.
        assert!(text.contains("(199)") && !text.contains("(200)"));
        assert!(text.contains("300 more rows"));
        let pages = text.matches("/Type /Page").count() - text.matches("/Type /Pages").count();
        assert!(pages >= 3, "{pages} pages for 200 rows");
    }
}
