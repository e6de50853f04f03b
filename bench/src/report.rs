//! The results of a run as Markdown tables: printed as they come, and written
//! to a file at the end so BENCHMARKS.md can quote a whole run.

use std::fmt::Write as _;

#[derive(Default)]
pub struct Report {
    text: String,
}

impl Report {
    /// Starts a table.
    pub fn section(&mut self, title: &str, columns: &[&str]) {
        let mut table = format!("\n### {title}\n\n| {} |\n|", columns.join(" | "));
        for _ in columns {
            table.push_str("---|");
        }
        table.push('\n');
        self.emit(&table);
    }

    pub fn row(&mut self, cells: &[&str]) {
        self.emit(&format!("| {} |\n", cells.join(" | ")));
    }

    /// A line of prose under the current table.
    pub fn note(&mut self, text: &str) {
        self.emit(&format!("\n{text}\n"));
    }

    fn emit(&mut self, text: &str) {
        print!("{text}");
        self.text.push_str(text);
    }

    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, &self.text)
    }
}

/// A whole number with thousands separators: 12,345.
pub fn count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds with two decimals.
pub fn ms(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

/// `value / floor` as "×N".
pub fn ratio(value: f64, floor: f64) -> String {
    if floor <= 0.0 {
        return "–".to_owned();
    }
    let share = value / floor;
    let mut out = String::new();
    // Small shares keep two significant digits instead of showing ×0.0.
    let decimals = if share >= 0.1 { 1 } else { (1 - share.log10().floor() as i32).clamp(1, 6) as usize };
    let _ = write!(out, "×{share:.decimals$}");
    out
}
