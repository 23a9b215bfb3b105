//! The one table printer of the command line: every `--output table` (and every aligned
//! list in a command's summary) goes through [`Table`], a thin layer over comfy-table.
//!
//! Cells arrive formatted (money as exact decimals, percents with their sign, `-` for
//! nothing); the printer groups the thousands of a right-aligned cell that is one plain
//! number (`1234567.5` → `1,234,567.5`, `98%` stays) and aligns: text left, numbers right, two spaces between
//! columns, each as wide as its widest cell (display width, so non-ASCII names line up),
//! no borders and no trailing spaces. Reports do not use it: they render their own
//! typed tables (`report::Table`).

use std::fmt::Display;
use std::io::{self, Write};

use comfy_table::{Cell, CellAlignment, ContentArrangement};

/// How a column aligns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

pub(crate) use Align::{Left, Right};

/// `s` with its thousands grouped when it is one plain number (an optional sign, digits,
/// an optional fraction); anything else as it is.
fn grouped(s: &str) -> String {
    let (sign, digits) = match s.strip_prefix(['-', '+']) {
        Some(d) => (&s[..1], d),
        None => ("", s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !plain || int.len() < 4 {
        return s.to_string();
    }
    format!("{sign}{}", crate::report::group_thousands(digits))
}

/// Spaces between columns.
const GAP: u16 = 2;

/// A table being filled; [`Table::write`] prints it.
pub(crate) struct Table {
    inner: comfy_table::Table,
    aligns: Vec<Align>,
    indent: &'static str,
}

impl Table {
    /// A table with a header row: each column's name and alignment.
    pub(crate) fn new(columns: &[(&str, Align)]) -> Table {
        let mut t = Table::bare(&columns.iter().map(|c| c.1).collect::<Vec<_>>());
        t.inner.set_header(columns.iter().map(|c| Cell::new(c.0)));
        t
    }

    /// A table without a header (a list of labelled values), with each column's alignment.
    pub(crate) fn bare(aligns: &[Align]) -> Table {
        let mut inner = comfy_table::Table::new();
        inner
            .load_style(comfy_table::presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled);
        Table {
            inner,
            aligns: aligns.to_vec(),
            indent: "",
        }
    }

    /// Starts every line with `prefix` (a list under a heading).
    pub(crate) fn indent(mut self, prefix: &'static str) -> Table {
        self.indent = prefix;
        self
    }

    /// Adds a row, one cell per column.
    pub(crate) fn row(&mut self, cells: &[&dyn Display]) -> &mut Table {
        debug_assert_eq!(cells.len(), self.aligns.len(), "one cell per column");
        self.inner
            .add_row(cells.iter().zip(&self.aligns).map(|(c, a)| match a {
                Align::Right => Cell::new(grouped(&c.to_string())),
                Align::Left => Cell::new(c),
            }));
        self
    }

    /// Writes the table, one line per row (the header first).
    pub(crate) fn write(mut self, out: &mut impl Write) -> io::Result<()> {
        for (col, align) in self.inner.column_iter_mut().zip(&self.aligns) {
            col.set_padding((0, GAP));
            col.set_cell_alignment(match align {
                Align::Left => CellAlignment::Left,
                Align::Right => CellAlignment::Right,
            });
        }
        for line in self.inner.lines() {
            writeln!(out, "{}{}", self.indent, line.trim_end())?;
        }
        Ok(())
    }

    /// Writes the table to stdout.
    pub(crate) fn print(self) -> io::Result<()> {
        self.write(&mut io::stdout().lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_get_their_thousands_grouped() {
        for (s, want) in [
            ("1234567", "1,234,567"),
            ("-25592.50", "-25,592.50"),
            ("999", "999"),
            ("98%", "98%"),
            ("35164 [34653, 35676]", "35164 [34653, 35676]"),
            ("-", "-"),
            ("1.5", "1.5"),
        ] {
            assert_eq!(grouped(s), want, "{s}");
        }
    }

    fn text(t: Table) -> String {
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn aligns_text_left_and_numbers_right() {
        let mut t = Table::new(&[("tenant", Left), ("value", Right), ("note", Left)]);
        t.row(&[&"acme-001", &12.5, &"ok"]);
        t.row(&[&"x", &1234, &""]);
        assert_eq!(
            text(t),
            "tenant    value  note\nacme-001   12.5  ok\nx         1,234\n"
        );
    }

    #[test]
    fn bare_lists_indent_and_size_by_display_width() {
        let mut t = Table::bare(&[Left, Right]).indent("  ");
        t.row(&[&"größe", &3]);
        t.row(&[&"a", &10]);
        assert_eq!(text(t), "  größe   3\n  a      10\n");
    }
}
