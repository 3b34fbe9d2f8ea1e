//! The TOML file of `keel node --config` (and `keel dev --config`): the keys of
//! [`RawSettings`], with `[kafka]`, `[broker]` and `[raft]` sections (docs/config.md lists
//! them; docs/keel.example.toml is a whole file). Unknown keys and values of the wrong type are
//! refused with the file, the line and the key.

use std::path::Path;

use super::node_config::RawSettings;

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}, {message}")]
    Parse { path: String, message: String },
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<RawSettings, FileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.display().to_string(), source })?;
    parse(&text, &path.display().to_string())
}

/// Parses a config file's text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<RawSettings, FileError> {
    toml::from_str(text).map_err(|e| FileError::Parse { path: path.to_string(), message: describe(&e, text) })
}

/// `line N, key `K`: what is wrong` from toml's error (whose own text spans several lines).
fn describe(e: &toml::de::Error, text: &str) -> String {
    let message = match e.message().strip_prefix("unknown field ") {
        // "unknown field `x`, expected one of `a`, `b`": serde's words for a key.
        Some(rest) => match rest.split_once(", expected ") {
            Some((_, expected)) => format!("unknown key; expected {}", expected.replace('`', "")),
            None => "unknown key".to_string(),
        },
        None => e.message().to_string(),
    };
    let Some(span) = e.span() else {
        return message;
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    match key_at(text, span.start) {
        Some(key) => format!("line {line}, key `{key}`: {message}"),
        None => format!("line {line}: {message}"),
    }
}

/// The dotted key (`raft.heartbeat_ms`) of the line holding byte `at`: the section header above
/// it and the key before the line's `=` (or the header itself, for an error about a section).
fn key_at(text: &str, at: usize) -> Option<String> {
    let start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("").trim();
    let header = |l: &str| l.strip_prefix('[').and_then(|l| l.split(']').next()).map(|h| h.trim().to_string());
    if let Some(h) = header(line) {
        return Some(h);
    }
    let key = line.split_once('=')?.0.trim().trim_matches('"').trim_matches('\'');
    if key.is_empty() {
        return None;
    }
    let section = text[..start].lines().rev().map(str::trim).find_map(header);
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::node_config::validate_node;

    fn refused(text: &str) -> String {
        parse(text, "keel.toml").expect_err("refused").to_string()
    }

    #[test]
    fn unknown_keys_are_refused_with_the_file_line_and_key() {
        assert_eq!(
            refused("id = 1\n[raft]\nheartbeat = 5\n"),
            "config file keel.toml, line 3, key `raft.heartbeat`: unknown key; expected one of heartbeat_ms, \
             election_timeout_min_ms, election_timeout_max_ms"
        );
        let e = refused("id = 1\nbogus = 2\n");
        assert!(
            e.starts_with("config file keel.toml, line 2, key `bogus`: unknown key; expected one of id, data_dir"),
            "{e}"
        );
        let e = refused("[http]\nport = 9644\n");
        assert!(e.contains("line 2, key `http.port`: unknown key"), "{e}");
        // Kafka's dotted name unquoted is a nested table in TOML, and not a key Keel knows.
        let e = refused("[broker]\nauto.create.topics.enable = true\n");
        assert!(e.contains("line 2, key `broker.auto.create.topics.enable`: unknown key"), "{e}");
    }

    #[test]
    fn values_of_the_wrong_type_name_the_line_and_key() {
        assert_eq!(
            refused("id = \"one\"\n"),
            "config file keel.toml, line 1, key `id`: invalid type: string \"one\", expected u64"
        );
        assert_eq!(
            refused("id = 1\n\n[broker]\nnum_partitions = -1\n"),
            "config file keel.toml, line 4, key `broker.num_partitions`: invalid value: integer `-1`, expected u32"
        );
        let e = refused("[broker]\nauto_create_topics_enable = \"yes\"\n");
        assert!(
            e.ends_with(
                "line 2, key `broker.auto_create_topics_enable`: invalid type: string \"yes\", expected a boolean"
            ),
            "{e}"
        );
        let e = refused("[nodes]\nx = \"a:1\"\n");
        assert!(e.ends_with("line 1, key `nodes`: node id \"x\" is not a number"), "{e}");
        let e = refused("id = \n");
        assert!(e.starts_with("config file keel.toml, line 1"), "{e}");
    }

    #[test]
    fn nodes_are_a_table_or_the_flags_string() {
        let table = parse("[nodes]\n1 = \"a:1\"\n2 = \"b:2\"\n", "f").unwrap().nodes.unwrap();
        let string = parse("nodes = \"1=a:1,2=b:2\"\n", "f").unwrap().nodes.unwrap();
        assert_eq!(table, string);
        assert_eq!(table.0.len(), 2);
    }

    /// docs/keel.example.toml, the file docs/config.md points to, parses and validates; the
    /// same file serves node 2 with `--id 2`.
    #[test]
    fn the_example_file_is_a_valid_three_node_config() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/keel.example.toml");
        let file = read(std::path::Path::new(path)).unwrap();
        let one = validate_node(file.clone()).unwrap();
        assert_eq!((one.id, one.addr.as_str(), one.kafka_advertised.as_str()), (1, "10.0.0.1:19201", "10.0.0.1:9092"));
        assert_eq!(one.voters.len(), 3);
        assert!(!one.kafka.broker.auto_create_topics_enable);
        let flags = RawSettings { id: Some(2), ..RawSettings::default() };
        let two = validate_node(flags.over(file)).unwrap();
        assert_eq!((two.id, two.addr.as_str(), two.kafka_advertised.as_str()), (2, "10.0.0.2:19201", "10.0.0.2:9092"));
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let e = read(std::path::Path::new("/nonexistent/keel.toml")).unwrap_err().to_string();
        assert!(e.starts_with("cannot read config file /nonexistent/keel.toml: "), "{e}");
    }
}
