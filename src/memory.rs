//! Memory sizes as a spec writes them (`max_memory: "2 GiB"`) and as messages show them.

use serde::Deserialize;

/// The most memory a kind's accumulators may take (`max_memory` in the spec): a size
/// such as `"2 GiB"`, `"512 MiB"`, `"8 GB"`, or a number of bytes. The default is 2 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit(pub u64);

impl Default for MemoryLimit {
    fn default() -> Self {
        Self(2 << 30)
    }
}

impl<'de> Deserialize<'de> for MemoryLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Bytes(b) if b > 0 => return Ok(Self(b)),
            Raw::Bytes(b) => b.to_string(),
            Raw::Text(t) => t,
        };
        parse_bytes(&text).map(Self).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "max_memory `{text}` is not a memory size: write e.g. \"2 GiB\", \"512 MiB\" or \"8 GB\""
            ))
        })
    }
}

/// A size in words or a number of bytes, as the deserializer above reads it.
impl schemars::JsonSchema for MemoryLimit {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MemoryLimit".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A memory size: `\"2 GiB\"`, `\"512 MiB\"`, `\"8 GB\"`, or a number of bytes. Default 2 GiB.",
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*([kKmMgGtT][iI]?[bB]|[bB])?\\s*$"}
            ]
        })
    }
}

/// Parses a memory size as written in a spec: `"2 GiB"`, `"512MiB"`, `"1.5 GB"`, or a
/// number of bytes.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return None,
    };
    let bytes = n * mult;
    (bytes.is_finite() && bytes >= 1.0).then_some(bytes as u64)
}

/// A byte count as people read it: `"812.3 MiB"`.
pub fn show_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_bytes("2 GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("1.5 GB"), Some(1_500_000_000));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("2 parsecs"), None);
        assert_eq!(show_bytes(812 << 20), "812.0 MiB");
    }
}
