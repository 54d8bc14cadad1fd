//! Plain-text tables for a terminal: a header row, columns padded to their widest cell, two
//! spaces between columns, nothing trailing. Cells are single-line (newlines become spaces).

/// A table being built row by row.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells
            .into_iter()
            .take(self.header.len())
            .map(|c| c.replace(['\n', '\r', '\t'], " "))
            .collect();
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Millisatoshis as sats for people: whole sats plainly, fractions to the msat (`10.5`).
pub fn sats(msat: u64) -> String {
    let (whole, frac) = (msat / 1000, msat % 1000);
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:03}")
            .trim_end_matches('0')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_lines_do_not_trail() {
        let mut t = Table::new(&["AGENT", "SATS", "NOTE"]);
        t.row(vec!["research".into(), "10".into(), String::new()]);
        t.row(vec!["a".into(), "12345".into(), "two\nlines".into()]);
        assert_eq!(
            t.render(),
            "AGENT     SATS   NOTE\nresearch  10\na         12345  two lines\n"
        );
    }

    #[test]
    fn sats_show_fractions_only_when_there_are_some() {
        assert_eq!(sats(10_000), "10");
        assert_eq!(sats(10_500), "10.5");
        assert_eq!(sats(1), "0.001");
        assert_eq!(sats(0), "0");
    }
}
