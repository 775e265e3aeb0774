//! The Prometheus text exposition format, version 0.0.4: a `# HELP` and a
//! `# TYPE` line per family, then its samples, one per line:
//!
//! ```text
//! # HELP evloop_connections_closed_total Connections closed, by reason.
//! # TYPE evloop_connections_closed_total counter
//! evloop_connections_closed_total{reason="peer"} 3
//! ```
//!
//! Pure text building, no I/O: what a scrape sends is tested without a
//! socket.

use std::fmt::Write as _;

/// The content type of the format, as a scrape's answer names it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family's samples mean to Prometheus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (from 0 at start-up); name ends in `_total`. Queried
    /// with `rate()`.
    Counter,
    /// A value now, which may go up and down.
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A sample's value: counts are written exactly, measurements as decimals.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A count.
    Count(u64),
    /// A measurement (seconds, for instance).
    Float(f64),
}

impl From<u64> for Value {
    fn from(count: u64) -> Value {
        Value::Count(count)
    }
}

impl From<usize> for Value {
    fn from(count: usize) -> Value {
        Value::Count(count as u64)
    }
}

impl From<bool> for Value {
    /// 1 for true, 0 for false: how Prometheus writes a yes or no.
    fn from(yes: bool) -> Value {
        Value::Count(u64::from(yes))
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Value {
        Value::Float(value)
    }
}

/// A scrape's text, built family by family. Each family (metric name)
/// must appear once in an exposition: the sources that write into it own
/// distinct names.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts the family `name` (`[a-zA-Z_:][a-zA-Z0-9_:]*`; counters end
    /// in `_total`) of `kind`, described by `help` (one sentence, escaped
    /// here); its samples follow through the returned [`Family`].
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert!(is_metric_name(name), "not a metric name: {name}");
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"), "{name}");
        self.text.push_str("# HELP ");
        self.text.push_str(name);
        self.text.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.text.push_str("\\\\"),
                '\n' => self.text.push_str("\\n"),
                c => self.text.push(c),
            }
        }
        let _ = write!(self.text, "\n# TYPE {name} {}\n", kind.name());
        Family {
            text: &mut self.text,
            name,
        }
    }

    /// The text, ready to send.
    pub fn into_text(self) -> String {
        self.text
    }
}

/// One family being written: its samples, each with its own labels.
#[derive(Debug)]
pub struct Family<'a> {
    text: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    /// Adds a sample with `labels` (names `[a-zA-Z_][a-zA-Z0-9_]*`; values
    /// any text, escaped here) and `value`.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        self.text.push_str(self.name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                debug_assert!(is_label_name(name), "not a label name: {name}");
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(name);
                self.text.push_str("=\"");
                escape_label_value(value, self.text);
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        match value.into() {
            Value::Count(count) => {
                let _ = write!(self.text, "{count}");
            }
            Value::Float(f) if f.is_nan() => self.text.push_str("NaN"),
            Value::Float(f) if f == f64::INFINITY => self.text.push_str("+Inf"),
            Value::Float(f) if f == f64::NEG_INFINITY => self.text.push_str("-Inf"),
            Value::Float(f) => {
                let _ = write!(self.text, "{f}");
            }
        }
        self.text.push('\n');
        self
    }
}

/// A label value as the format quotes it: `\`, `"` and newlines escaped.
fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_has_help_type_and_its_samples() {
        let mut out = Exposition::new();
        out.family(
            "evloop_connections_closed_total",
            Kind::Counter,
            "Connections closed, by reason.",
        )
        .sample(&[("reason", "peer")], 3_u64)
        .sample(&[("reason", "idle")], 0_u64);
        out.family("evloop_loops", Kind::Gauge, "Event loops.")
            .sample(&[], 2_usize);
        assert_eq!(
            out.into_text(),
            "# HELP evloop_connections_closed_total Connections closed, by reason.\n\
             # TYPE evloop_connections_closed_total counter\n\
             evloop_connections_closed_total{reason=\"peer\"} 3\n\
             evloop_connections_closed_total{reason=\"idle\"} 0\n\
             # HELP evloop_loops Event loops.\n\
             # TYPE evloop_loops gauge\n\
             evloop_loops 2\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = Exposition::new();
        out.family(
            "x_info",
            Kind::Gauge,
            "back\\slash\nnewline \"quotes\" stay",
        )
        .sample(&[("a", "q\"b\\n\nl"), ("b", "ü")], true);
        assert_eq!(
            out.into_text(),
            "# HELP x_info back\\\\slash\\nnewline \"quotes\" stay\n\
             # TYPE x_info gauge\n\
             x_info{a=\"q\\\"b\\\\n\\nl\",b=\"ü\"} 1\n"
        );
    }

    #[test]
    fn floats_are_decimals_and_specials_are_spelled_as_the_format_wants() {
        let mut out = Exposition::new();
        let mut family = out.family("x_seconds", Kind::Gauge, "Seconds.");
        for value in [1.5, 1e21, 0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            family.sample(&[], value);
        }
        let text = out.into_text();
        let values: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(
            values,
            ["1.5", "1000000000000000000000", "0", "+Inf", "-Inf", "NaN"]
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(is_metric_name("evloop_build_info"));
        assert!(is_metric_name("a:b_c9"));
        assert!(!is_metric_name("9lives"));
        assert!(!is_metric_name("with-dash"));
        assert!(!is_metric_name(""));
        assert!(is_label_name("_loop"));
        assert!(!is_label_name("a:b"));
    }
}
