//! Logs to stderr, every line prefixed with the process's name in the cluster
//! (`[n1] …`, or `[dev] …` for the dev supervisor), so that the interleaved output of
//! `ringkv-node dev`, or of several nodes collected in one place, says which node
//! wrote each line, the shutdown lines included.
//!
//! A prefix on every event rather than a span: a span entered on the main thread
//! would not follow the work tokio moves to other threads.
//!
//! `--log-format json` writes one JSON object per line instead, for log collectors:
//! tracing-subscriber's own JSON (event fields flattened to the top level) with a
//! `"node"` field first, in place of the prefix.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, `[n1] ` first.
    #[default]
    Text,
    /// One JSON object per line, with a `"node"` field.
    Json,
}

/// Installs the process's subscriber: level from `RUST_LOG` (default `info`), every
/// line prefixed with `[name] ` (text) or carrying `"node":"name"` (JSON).
pub fn init(name: &str, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .event_format(Prefixed::new(name))
            .init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(format::JsonFields::new())
            .event_format(JsonWithNode::new(name))
            .init(),
    }
}

/// tracing-subscriber's JSON lines with `"node":"<name>"` as their first field.
#[derive(Debug)]
pub struct JsonWithNode {
    /// The name as a JSON string, quotes included.
    node_json: String,
    inner: format::Format<format::Json>,
}

impl JsonWithNode {
    pub fn new(name: &str) -> Self {
        Self {
            node_json: serde_json::to_string(name).expect("a string always serializes"),
            inner: format::Format::default()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithNode
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The inner format writes one whole object; the node goes in after its `{`.
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let rest = line.strip_prefix('{').ok_or(fmt::Error)?;
        writer.write_str("{\"node\":")?;
        writer.write_str(&self.node_json)?;
        if !rest.starts_with('}') {
            writer.write_char(',')?;
        }
        writer.write_str(rest)
    }
}

/// The default event format with `[name] ` in front of every line.
#[derive(Debug)]
pub struct Prefixed {
    prefix: String,
    inner: format::Format,
}

impl Prefixed {
    pub fn new(name: &str) -> Self {
        Self {
            prefix: format!("[{name}] "),
            inner: format::Format::default(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Prefixed
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(&self.prefix)?;
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer, for reading back what was logged.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_starts_with_the_node_id() {
        // Proves each event, with or without fields and inside a span, is written on a
        // line that begins with `[n7] `.
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(Prefixed::new("n7"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("SIGINT: shutting down");
            let span = tracing::info_span!("handoff", peer = "n2");
            let _entered = span.enter();
            tracing::warn!(hints = 3, "replay failed");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in &lines {
            assert!(line.starts_with("[n7] "), "{line}");
        }
        assert!(lines[0].ends_with("SIGINT: shutting down"), "{}", lines[0]);
        assert!(lines[1].contains("hints=3"), "{}", lines[1]);
    }

    #[test]
    fn json_lines_parse_and_name_the_node() {
        // Proves --log-format json writes one JSON object per event, each with the
        // node's id, the level, the message and the event's fields at the top level.
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(format::JsonFields::new())
            .event_format(JsonWithNode::new("n\"7"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("SIGINT: shutting down");
            let span = tracing::info_span!("handoff", peer = "n2");
            let _entered = span.enter();
            tracing::warn!(hints = 3, "replay failed");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines.iter().all(|l| l["node"] == "n\"7"), "{text}");
        assert_eq!(lines[0]["message"], "SIGINT: shutting down");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[1]["hints"], 3);
        assert_eq!(lines[1]["span"]["peer"], "n2", "{text}");
    }
}
