//! The report model every format renders: tables of typed columns, headline figures,
//! insights and charts. Builders compute a [`Report`]; renderers never compute.
//!
//! Money is a [`Values::Decimal`] column: exact to its last step. JSON, CSV and Parquet
//! carry it as a number (the f64 nearest the decimal, which prints back as the decimal:
//! money has far fewer than 15 significant digits), so their columns keep the type they
//! have always had; text formats print the decimal itself.

use std::collections::BTreeMap;

use polars::prelude::{Column, DataFrame};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::error::Result;

/// A column's values, typed so spreadsheets and Parquet get numbers, not text.
#[derive(Debug, Clone)]
pub enum Values {
    /// Text (dates are ISO text: they sort and read the same in every format).
    Text(Vec<Option<String>>),
    /// Whole numbers.
    Int(Vec<Option<i64>>),
    /// Real numbers, shown with the column's decimals.
    Num(Vec<Option<f64>>),
    /// Exact decimals (money), rounded to the column's decimals.
    Decimal(Vec<Option<Decimal>>),
    /// Yes / no.
    Bool(Vec<Option<bool>>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Text(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::Num(v) => v.len(),
            Values::Decimal(v) => v.len(),
            Values::Bool(v) => v.len(),
        }
    }
}

/// One column.
#[derive(Debug, Clone)]
pub struct Col {
    /// Its name (snake_case: a Parquet and CSV header).
    pub name: String,
    /// Its values.
    pub values: Values,
    /// Decimals shown by text formats (numbers only).
    pub decimals: usize,
    /// A quantity in its row's unit (the table's `unit` column): page formats show bytes
    /// as KB, MB, GB, TB.
    pub in_unit: bool,
    /// Money in this currency: page formats say it in the header.
    pub currency: Option<String>,
}

/// A named table.
#[derive(Debug, Clone)]
pub struct Table {
    /// Short name: the sheet, the file suffix, the JSON key.
    pub name: String,
    /// Heading shown above it.
    pub title: String,
    /// Its columns, all of one length.
    pub columns: Vec<Col>,
}

/// A cell, for renderers that walk rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// Missing.
    Null,
    /// Text.
    Text(&'a str),
    /// A whole number.
    Int(i64),
    /// A real number and its decimals.
    Num(f64, usize),
    /// An exact decimal, already at its column's decimals.
    Decimal(Decimal),
    /// Yes / no.
    Bool(bool),
}

impl Cell<'_> {
    /// The cell as text formats show it (thousands not grouped: it stays machine-readable).
    pub fn display(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Text(s) => (*s).to_string(),
            Cell::Int(v) => v.to_string(),
            Cell::Num(v, d) => format!("{v:.d$}"),
            Cell::Decimal(v) => v.to_string(),
            Cell::Bool(b) => if *b { "yes" } else { "no" }.into(),
        }
    }

    /// The cell for people: [`Cell::display`] with thousands grouped (`1,234,567.89`).
    pub fn human(&self) -> String {
        match self {
            Cell::Int(_) | Cell::Num(..) | Cell::Decimal(_) => {
                let s = self.display();
                let (sign, digits) = match s.strip_prefix('-') {
                    Some(d) => ("-", d),
                    None => ("", s.as_str()),
                };
                format!("{sign}{}", group_thousands(digits))
            }
            _ => self.display(),
        }
    }

    /// Whether the column aligns right.
    pub fn numeric(&self) -> bool {
        matches!(self, Cell::Int(_) | Cell::Num(..) | Cell::Decimal(_))
    }

    /// The number a data format stores (JSON, XLSX): the f64 nearest an exact decimal,
    /// which prints back as that decimal.
    pub fn number(&self) -> Option<f64> {
        match self {
            Cell::Int(v) => Some(*v as f64),
            Cell::Num(v, _) => Some(*v),
            Cell::Decimal(v) => Some(decimal_f64(*v)),
            _ => None,
        }
    }
}

/// Commas between thousands of an unsigned decimal's integer part (`1234567.5` →
/// `1,234,567.5`).
pub(crate) fn group_thousands(s: &str) -> String {
    let (int, frac) = s.split_once('.').map_or((s, None), |(a, b)| (a, Some(b)));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(fr) = frac {
        out.push('.');
        out.push_str(fr);
    }
    out
}

/// Bytes for people, in powers of 1,000: `512 B`, `9.68 MB`, `13.56 GB`.
pub fn human_bytes(v: f64) -> String {
    let a = v.abs();
    for (scale, unit) in [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")] {
        // From the value that rounds to 1.00 of this unit (999,995 bytes is 1.00 MB).
        if a >= scale * 0.999_995 {
            return format!("{:.2} {unit}", v / scale);
        }
    }
    format!("{v:.0} B")
}

/// A duration in seconds for people: `42 s`, `12 min 5 s`, `3 h 20 min`.
pub fn human_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The f64 nearest `d` (parsed from its text: `Decimal::to_f64` may be one ulp off), so
/// that shortest round-trip printing (JSON, CSV) shows the decimal itself.
pub fn decimal_f64(d: Decimal) -> f64 {
    d.to_string().parse().unwrap_or(0.0)
}

/// `d` rounded half away from zero to `decimals` places and shown with exactly that many
/// (no negative zero), like [`round`] for f64.
pub fn round_decimal(d: Decimal, decimals: usize) -> Decimal {
    let mut r = d.round_dp_with_strategy(decimals as u32, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(decimals as u32);
    if r.is_zero() {
        r.set_sign_positive(true);
    }
    r
}

impl Table {
    /// An empty table.
    pub fn new(name: &str, title: &str) -> Table {
        Table {
            name: name.into(),
            title: title.into(),
            columns: Vec::new(),
        }
    }

    /// Adds a text column.
    pub fn text<S: Into<String>>(self, name: &str, v: impl IntoIterator<Item = S>) -> Self {
        self.push(
            name,
            Values::Text(v.into_iter().map(|s| Some(s.into())).collect()),
            0,
        )
    }

    /// Adds a text column with gaps.
    pub fn opt_text(self, name: &str, v: Vec<Option<String>>) -> Self {
        self.push(name, Values::Text(v), 0)
    }

    /// Adds a whole-number column.
    pub fn int(self, name: &str, v: impl IntoIterator<Item = i64>) -> Self {
        self.push(name, Values::Int(v.into_iter().map(Some).collect()), 0)
    }

    /// Adds a real column shown with `decimals` (values are rounded to them, so every
    /// format carries the same number).
    pub fn num(self, name: &str, decimals: usize, v: impl IntoIterator<Item = f64>) -> Self {
        let v = v
            .into_iter()
            .map(|x| x.is_finite().then(|| round(x, decimals)))
            .collect();
        self.push(name, Values::Num(v), decimals)
    }

    /// Adds a real column with gaps.
    pub fn opt_num(self, name: &str, decimals: usize, v: Vec<Option<f64>>) -> Self {
        let v = v
            .into_iter()
            .map(|x| x.filter(|x| x.is_finite()).map(|x| round(x, decimals)))
            .collect();
        self.push(name, Values::Num(v), decimals)
    }

    /// Adds an exact decimal column (money) shown with `decimals` (values are rounded half
    /// away from zero to them).
    pub fn dec(self, name: &str, decimals: usize, v: impl IntoIterator<Item = Decimal>) -> Self {
        let v = v
            .into_iter()
            .map(|x| Some(round_decimal(x, decimals)))
            .collect();
        self.push(name, Values::Decimal(v), decimals)
    }

    /// Adds an exact decimal column with gaps.
    pub fn opt_dec(self, name: &str, decimals: usize, v: Vec<Option<Decimal>>) -> Self {
        let v = v
            .into_iter()
            .map(|x| x.map(|x| round_decimal(x, decimals)))
            .collect();
        self.push(name, Values::Decimal(v), decimals)
    }

    /// Adds a yes/no column.
    pub fn bool(self, name: &str, v: impl IntoIterator<Item = bool>) -> Self {
        self.push(name, Values::Bool(v.into_iter().map(Some).collect()), 0)
    }

    fn push(mut self, name: &str, values: Values, decimals: usize) -> Table {
        debug_assert!(self.columns.is_empty() || self.columns[0].values.len() == values.len());
        self.columns.push(Col {
            name: name.into(),
            values,
            decimals,
            in_unit: false,
            currency: None,
        });
        self
    }

    /// Marks `names` as quantities in each row's `unit` (see [`Col::in_unit`]).
    pub fn in_unit(mut self, names: &[&str]) -> Self {
        for c in &mut self.columns {
            if names.contains(&c.name.as_str()) {
                c.in_unit = true;
            }
        }
        self
    }

    /// Sets the currency of every money (decimal) column.
    pub fn set_currency(&mut self, currency: &str) {
        if currency.is_empty() {
            return;
        }
        for c in &mut self.columns {
            if matches!(c.values, Values::Decimal(_)) {
                c.currency = Some(currency.to_string());
            }
        }
    }

    /// A column's header in the page formats: its name, and the currency of money.
    pub fn header(&self, col: usize) -> String {
        let c = &self.columns[col];
        match &c.currency {
            Some(cur) => format!("{} ({cur})", c.name),
            None => c.name.clone(),
        }
    }

    /// A cell as the page formats (HTML, Markdown, PDF, the dashboard) show it to people:
    /// thousands grouped, bytes in KB to TB where the row's unit is bytes. The data
    /// formats keep the raw numbers.
    pub fn shown(&self, col: usize, row: usize) -> String {
        let cell = self.cell(col, row);
        if self.columns[col].in_unit
            && let Some(v) = cell.number()
            && self.unit_of(row) == Some("bytes")
        {
            return human_bytes(v);
        }
        cell.human()
    }

    /// The row's unit, from the table's `unit` column.
    fn unit_of(&self, row: usize) -> Option<&str> {
        let c = self.columns.iter().position(|c| c.name == "unit")?;
        match self.cell(c, row) {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.columns.first().map_or(0, |c| c.values.len())
    }

    /// The cell at `row` of column `col`.
    pub fn cell(&self, col: usize, row: usize) -> Cell<'_> {
        let c = &self.columns[col];
        match &c.values {
            Values::Text(v) => v[row].as_deref().map_or(Cell::Null, Cell::Text),
            Values::Int(v) => v[row].map_or(Cell::Null, Cell::Int),
            Values::Num(v) => v[row].map_or(Cell::Null, |x| Cell::Num(x, c.decimals)),
            Values::Decimal(v) => v[row].map_or(Cell::Null, Cell::Decimal),
            Values::Bool(v) => v[row].map_or(Cell::Null, Cell::Bool),
        }
    }

    /// The table as a polars frame (Parquet and CSV outputs). Decimal columns are Float64
    /// columns of the f64 nearest each decimal: CSV prints them back as the decimal, and
    /// Parquet readers keep the type they have always read.
    pub fn frame(&self) -> Result<DataFrame> {
        let cols: Vec<Column> = self
            .columns
            .iter()
            .map(|c| match &c.values {
                Values::Text(v) => Column::new(c.name.as_str().into(), v),
                Values::Int(v) => Column::new(c.name.as_str().into(), v),
                Values::Num(v) => Column::new(c.name.as_str().into(), v),
                Values::Decimal(v) => Column::new(
                    c.name.as_str().into(),
                    v.iter().map(|x| x.map(decimal_f64)).collect::<Vec<_>>(),
                ),
                Values::Bool(v) => Column::new(c.name.as_str().into(), v),
            })
            .collect();
        Ok(DataFrame::new_infer_height(cols)?)
    }

    /// The rows as JSON objects, in column order.
    pub fn records(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        (0..self.height())
            .map(|r| {
                self.columns
                    .iter()
                    .enumerate()
                    .map(|(c, col)| {
                        let v = match self.cell(c, r) {
                            Cell::Null => serde_json::Value::Null,
                            Cell::Text(s) => s.into(),
                            Cell::Int(v) => v.into(),
                            Cell::Num(v, _) => v.into(),
                            d @ Cell::Decimal(_) => d.number().into(),
                            Cell::Bool(b) => b.into(),
                        };
                        (col.name.clone(), v)
                    })
                    .collect()
            })
            .collect()
    }
}

/// Rounds half away from zero to `decimals` places. A value too large for `x · 10^d` to be
/// exact (beyond 2^52, where f64 has no finer steps to drop anyway) is kept as it is:
/// scaling it would invent decimals (541701701925027 bytes became ….06).
pub fn round(x: f64, decimals: usize) -> f64 {
    let p = 10f64.powi(decimals as i32);
    if (x * p).abs() >= 4_503_599_627_370_496.0 {
        return x;
    }
    let r = (x * p).round() / p;
    if r == 0.0 { 0.0 } else { r }
}

/// A headline number.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What it is.
    pub label: String,
    /// Its value, formatted.
    pub value: String,
    /// A line of context (growth, comparison).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// How much an insight matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs a look.
    Warning,
    /// Needs action.
    Critical,
}

impl Severity {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A finding computed from the data, with the numbers behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Insight {
    /// What kind of finding (`fast_growth`, `decline`, `quota_reached`, ...).
    pub kind: String,
    /// The tenant it is about (none: platform-wide).
    pub tenant_id: Option<String>,
    /// The meter it is about.
    pub meter: Option<String>,
    /// How much it matters.
    pub severity: Severity,
    /// One sentence, built from the evidence.
    pub message: String,
    /// The numbers behind it.
    pub evidence: BTreeMap<String, f64>,
}

/// Insights as a table.
pub fn insights_table(insights: &[Insight]) -> Table {
    Table::new("insights", "Insights")
        .text("severity", insights.iter().map(|i| i.severity.name()))
        .text("kind", insights.iter().map(|i| i.kind.as_str()))
        .opt_text(
            "tenant_id",
            insights.iter().map(|i| i.tenant_id.clone()).collect(),
        )
        .opt_text("meter", insights.iter().map(|i| i.meter.clone()).collect())
        .text("message", insights.iter().map(|i| i.message.as_str()))
        .text(
            "evidence",
            insights
                .iter()
                .map(|i| serde_json::to_string(&i.evidence).unwrap_or_default()),
        )
}

/// A point in time (UTC µs) and a value.
pub type Point = (i64, f64);

/// A line of a time chart.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend.
    pub name: String,
    /// Points in time order.
    pub points: Vec<Point>,
}

/// A time chart: history lines, a forecast with its band, anomaly markers.
#[derive(Debug, Clone)]
pub struct TimeChart {
    /// Title.
    pub title: String,
    /// Y axis label.
    pub y_label: String,
    /// Observed lines.
    pub lines: Vec<Line>,
    /// The forecast's mean.
    pub forecast: Option<Line>,
    /// The forecast's band: (ts, lower, upper).
    pub band: Vec<(i64, f64, f64)>,
    /// Anomalies: (ts, value, label).
    pub markers: Vec<(i64, f64, String)>,
}

impl TimeChart {
    /// A period against the previous one shifted onto it: two lines, `this period` and
    /// `previous period (shifted)`.
    pub fn two_periods(
        title: String,
        y_label: String,
        current: impl IntoIterator<Item = (i64, f64)>,
        previous: impl IntoIterator<Item = (i64, f64)>,
    ) -> TimeChart {
        TimeChart {
            title,
            y_label,
            lines: vec![
                Line {
                    name: "this period".into(),
                    points: current.into_iter().collect(),
                },
                Line {
                    name: "previous period (shifted)".into(),
                    points: previous.into_iter().collect(),
                },
            ],
            forecast: None,
            band: Vec::new(),
            markers: Vec::new(),
        }
    }
}

/// One bar.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Its label.
    pub label: String,
    /// Its length.
    pub value: f64,
    /// Colour class: ok, warning, critical, exceeded.
    pub status: String,
}

/// Horizontal bars (quota percent per tenant), with a reference line.
#[derive(Debug, Clone)]
pub struct BarChart {
    /// Title.
    pub title: String,
    /// Unit of the values.
    pub unit: String,
    /// The bars, top first.
    pub bars: Vec<Bar>,
    /// A reference value drawn as a line (100 %).
    pub reference: Option<f64>,
}

impl BarChart {
    /// The largest bar or reference value, at least 1: the end of the value axis before
    /// any headroom.
    pub fn max_value(&self) -> f64 {
        self.bars
            .iter()
            .map(|x| x.value)
            .chain(self.reference)
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max)
    }
}

/// A chart.
#[derive(Debug, Clone)]
pub enum Chart {
    /// Values over time.
    Time(TimeChart),
    /// Bars.
    Bars(BarChart),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A whole number stays whole at every magnitude (scaling a large one by 100 used
        /// to invent decimals), and a small value rounds to what its decimal text says.
        #[test]
        fn rounding_keeps_whole_numbers_and_rounds_text(
            n in -(1i64 << 53)..(1i64 << 53),
            cents in -10_000_000i64..10_000_000,
            d in 0usize..4,
        ) {
            prop_assert_eq!(round(n as f64, d), n as f64);
            let x = cents as f64 / 1000.0;
            let want: f64 = format!("{:.*}", d, x).parse().unwrap();
            // Half away from zero, where the text's rounding is half to even: only exact
            // halves differ.
            let diff = (round(x, d) - want).abs();
            prop_assert!(diff < 1e-9 || (diff - 10f64.powi(-(d as i32))).abs() < 1e-9, "{} {} {}", x, d, round(x, d));
        }
    }

    #[test]
    fn large_values_keep_their_digits() {
        assert_eq!(round(541701701925027.0, 2), 541701701925027.0);
        assert_eq!(round(1000000000000998.0, 1), 1000000000000998.0);
        assert_eq!(round(2.345, 2), 2.35);
        assert_eq!(round(-2.5, 0), -3.0);
    }

    #[test]
    fn page_formats_show_units_for_people_and_data_formats_keep_numbers() {
        let mut t = Table::new("usage", "Usage")
            .text("meter", ["ingest_bytes", "api_calls"])
            .text("unit", ["bytes", "calls"])
            .num("total", 2, [9_675_945.0, 1_234_567.0])
            .int("events", [32, 12_345])
            .dec(
                "cost",
                2,
                [Decimal::new(123_456_789, 2), Decimal::new(-5, 1)],
            )
            .in_unit(&["total"]);
        t.set_currency("EUR");
        let shown: Vec<String> = (0..2).map(|r| t.shown(2, r)).collect();
        assert_eq!(shown, ["9.68 MB", "1,234,567.00"]);
        assert_eq!(t.shown(3, 1), "12,345");
        assert_eq!(t.shown(4, 0), "1,234,567.89");
        assert_eq!(t.shown(4, 1), "-0.50");
        assert_eq!(t.header(4), "cost (EUR)");
        assert_eq!(t.header(2), "total");
        let json = t.records();
        assert_eq!(json[0]["total"], serde_json::json!(9_675_945.0));
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(999_995.0), "1.00 MB");
        assert_eq!(human_bytes(999.0), "999 B");
        assert_eq!(human_bytes(13_564_368_128.0), "13.56 GB");
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap_or_default()
    }

    /// Money sums that drift in f64 (0.1 + 0.2) come out exact in every format.
    #[test]
    fn decimal_columns_print_the_exact_decimal() {
        let t = Table::new("t", "T").dec(
            "amount",
            2,
            [
                d("0.1") + d("0.2"),
                d("1234.5"),
                d("12"),
                d("2.675"),
                d("-0.001"),
            ],
        );
        let shown: Vec<String> = (0..t.height()).map(|r| t.cell(0, r).display()).collect();
        assert_eq!(shown, ["0.30", "1234.50", "12.00", "2.68", "0.00"]);
        let json: Vec<String> = t
            .records()
            .iter()
            .map(|r| r["amount"].to_string())
            .collect();
        assert_eq!(json, ["0.3", "1234.5", "12.0", "2.68", "0.0"]);
        assert!(t.cell(0, 0).numeric());
        let df = t.frame().expect("frame");
        let col = df.column("amount").expect("column");
        assert_eq!(col.dtype(), &polars::prelude::DataType::Float64);
        let v: Vec<Option<f64>> = col.f64().expect("f64").iter().collect();
        assert_eq!(
            v,
            [Some(0.3), Some(1234.5), Some(12.0), Some(2.68), Some(0.0)]
        );
    }

    /// (A lone empty cell is quoted so the row is not blank; whole numbers print bare.)
    #[test]
    fn csv_prints_decimal_columns_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.csv");
        let t = Table::new("t", "T").opt_dec(
            "amount",
            2,
            vec![Some(d("0.1") + d("0.2")), None, Some(d("7"))],
        );
        crate::stage::tables::write_frame(&path, &mut t.frame().expect("frame")).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["amount", "0.3", "\"\"", "7"]
        );
    }
}
