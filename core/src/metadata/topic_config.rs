//! Per-topic settings, by their Kafka names. A topic stores only the settings it overrides;
//! [`DEFAULTS`] are the broker defaults Kafka documents (and DescribeConfigs reports).

use std::collections::BTreeMap;

use super::MetaError;

/// How a setting's value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer in `[min, max]`.
    Int { min: i64, max: i64 },
    /// One of the listed words.
    OneOf(&'static [&'static str]),
}

/// Every topic setting Keel accepts: (name, default, kind).
pub const DEFAULTS: &[(&str, &str, Kind)] = &[
    ("cleanup.policy", "delete", Kind::OneOf(&["delete"])),
    ("retention.ms", "604800000", Kind::Int { min: -1, max: i64::MAX }),
    ("retention.bytes", "-1", Kind::Int { min: -1, max: i64::MAX }),
    ("segment.bytes", "1073741824", Kind::Int { min: 14, max: i32::MAX as i64 }),
    ("segment.ms", "604800000", Kind::Int { min: 1, max: i64::MAX }),
    ("max.message.bytes", "1048588", Kind::Int { min: 0, max: i32::MAX as i64 }),
    ("message.timestamp.type", "CreateTime", Kind::OneOf(&["CreateTime", "LogAppendTime"])),
    ("min.insync.replicas", "1", Kind::Int { min: 1, max: i32::MAX as i64 }),
    ("compression.type", "producer", Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"])),
];

/// The default of `name`, if Keel knows the setting.
pub fn default_of(name: &str) -> Option<&'static str> {
    DEFAULTS.iter().find(|(n, _, _)| *n == name).map(|(_, d, _)| *d)
}

/// Checks every setting's name and value.
pub fn validate(configs: &BTreeMap<String, String>) -> Result<(), MetaError> {
    for (name, value) in configs {
        let Some((_, _, kind)) = DEFAULTS.iter().find(|(n, _, _)| n == name) else {
            return Err(MetaError::InvalidConfig(format!("unknown topic config '{name}'")));
        };
        match kind {
            Kind::Int { min, max } => match value.parse::<i64>() {
                Ok(v) if (*min..=*max).contains(&v) => {}
                _ => {
                    return Err(MetaError::InvalidConfig(format!(
                        "'{name}' must be an integer between {min} and {max}, not '{value}'"
                    )));
                }
            },
            Kind::OneOf(words) => {
                if !words.contains(&value.as_str()) {
                    return Err(MetaError::InvalidConfig(format!("'{name}' must be one of {words:?}, not '{value}'")));
                }
            }
        }
    }
    Ok(())
}
