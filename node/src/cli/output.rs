//! What the commands print: tables for people, JSON for scripts (`--json`), on stdout.
//!
//! Everything goes through [`Output`], which returns write errors instead of panicking as
//! `println!` does: `keel cluster status | head -1` closes the pipe early, the write fails with
//! `BrokenPipe`, and [`is_broken_pipe`] lets `main` exit quietly and successfully.

use std::io::Write;

use comfy_table::Table;
use comfy_table::presets::NOTHING;

/// Stdout, and whether the user asked for JSON.
pub struct Output {
    pub json: bool,
    stdout: std::io::Stdout,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output { json, stdout: std::io::stdout() }
    }

    /// One line of text.
    pub fn line(&mut self, text: &str) -> anyhow::Result<()> {
        let mut lock = self.stdout.lock();
        writeln!(lock, "{text}")?;
        lock.flush()?;
        Ok(())
    }

    /// A table with a header row, columns aligned, no borders (like `kubectl get`, `rpk`).
    pub fn table(&mut self, header: &[&str], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
        self.line(&table(header, rows))
    }

    /// One JSON value, pretty-printed.
    pub fn json_value(&mut self, value: &serde_json::Value) -> anyhow::Result<()> {
        self.line(&serde_json::to_string_pretty(value)?)
    }

    /// One JSON value on one line (a stream of records: one per line).
    pub fn json_line(&mut self, value: &serde_json::Value) -> anyhow::Result<()> {
        self.line(&value.to_string())
    }
}

/// Renders a borderless table with an upper-case header row.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    for row in rows {
        t.add_row(row);
    }
    // comfy-table pads every line to the table's width; trailing blanks only get in the way.
    t.to_string()
        .lines()
        .map(|l| {
            let l = l.trim_end();
            l.strip_prefix(' ').unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `error` (or what caused it) is a write to a closed pipe.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Node ids joined by commas.
pub fn join_ids(ids: impl IntoIterator<Item = i32>) -> String {
    ids.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_under_an_upper_case_header() {
        let t =
            table(&["node", "addr"], vec![vec!["1".into(), "127.0.0.1:9092".into()], vec!["22".into(), "h:1".into()]]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("NODE"), "{t}");
        let col = lines[0].find("ADDR").unwrap();
        assert_eq!(lines[1].find("127.0.0.1:9092"), Some(col), "{t}");
        assert_eq!(lines[2].find("h:1"), Some(col), "{t}");
    }

    #[test]
    fn a_broken_pipe_is_recognised_through_context() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("printing");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
