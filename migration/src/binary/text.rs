//! The human-readable log format: `tracing-subscriber`'s full format, line
//! for line, with two shortcuts for the line that every request logs.
//!
//! - The time is written by `humantime` (the same RFC 3339 form, to the
//!   microsecond) in one piece, instead of a formatted number for each part.
//! - An access line (target `access`, outside any span, without colours) is
//!   written by [`Fields`]: the message, then ` name=value` for each field,
//!   as the full format writes them, without its styles (empty without
//!   colours) and without escaping the message (the access line's is a
//!   constant; the full format escapes no other field either).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of the access lines (`web`'s access log).
const ACCESS: &str = "access";

/// The time of a line, as `tracing-subscriber`'s `SystemTime` writes it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Time;

impl FormatTime for Time {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now();
        if now < UNIX_EPOCH {
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        }
        write!(w, "{}", humantime::format_rfc3339_micros(now))
    }
}

/// The full format with [`Time`], and access lines written directly.
#[derive(Debug)]
pub(super) struct Text(Format<Full, Time>);

impl Default for Text {
    fn default() -> Self {
        Text(Format::default().with_timer(Time))
    }
}

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.target() != ACCESS || w.has_ansi_escapes() || ctx.event_scope().is_some() {
            return self.0.format_event(ctx, w, event);
        }
        Time.format_time(&mut w)?;
        let level = match *meta.level() {
            Level::TRACE => "TRACE",
            Level::DEBUG => "DEBUG",
            Level::INFO => " INFO",
            Level::WARN => " WARN",
            Level::ERROR => "ERROR",
        };
        write!(w, " {level} {ACCESS}: ")?;
        let mut fields = Fields {
            w: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// Writes an event's fields as the full format does without colours: the
/// message, then ` name=value` for each other field.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let space = if self.first { "" } else { " " };
        self.first = false;
        self.result = match field.name() {
            "message" => write!(self.w, "{space}{value:?}"),
            name => write!(self.w, "{space}{name}={value:?}"),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing::Level;
    use tracing_subscriber::fmt::MakeWriter;

    use super::Text;

    /// What a subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// The lines of a few events, in [`Text`] or in the full format.
    fn lines(text: bool) -> Vec<String> {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(Level::DEBUG)
            .with_writer(out.clone());
        let events = || {
            tracing::info!(
                target: "access",
                method = %"GET",
                uri = %"/tasks/7?x=%22",
                status = 200u16,
                latency_us = 1234u64,
                "finished processing request"
            );
            tracing::warn!(target: "access", quoted = "a \"b\"", flag = true, "slow");
            tracing::debug_span!("request", method = %"GET").in_scope(|| {
                tracing::info!(target: "access", status = 404u16, "finished processing request");
            });
            tracing::error!(target: "web::error", error = %"boom", "request failed");
        };
        match text {
            true => {
                let subscriber = builder.event_format(Text::default()).finish();
                tracing::subscriber::with_default(subscriber, events);
            }
            false => tracing::subscriber::with_default(builder.finish(), events),
        }
        let written = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        written.lines().map(str::to_owned).collect()
    }

    #[test]
    fn lines_are_those_of_the_full_format() {
        let (ours, full) = (lines(true), lines(false));
        assert_eq!(ours.len(), 4, "{ours:#?}");
        assert_eq!(ours.len(), full.len());
        // The time: `2026-12-06T07:03:02.123456Z`, then what the line says.
        let time = "2026-12-06T07:03:02.123456Z".len();
        for (ours, full) in ours.iter().zip(&full) {
            humantime::parse_rfc3339(&ours[..time]).unwrap();
            humantime::parse_rfc3339(&full[..time]).unwrap();
            assert_eq!(ours[time..], full[time..]);
        }
        assert!(
            ours[0].ends_with(
                "  INFO access: finished processing request method=GET uri=/tasks/7?x=%22 status=200 latency_us=1234"
            ),
            "{}",
            ours[0]
        );
    }
}
