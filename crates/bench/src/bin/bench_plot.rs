//! `bench-plot`: reads the results of `just bench-scale` (JSON lines on
//! standard input: `bench` records, and `http` lines with the server's peak
//! RSS) and writes how cost grows with the data: a PNG plot (per-op latency
//! and server memory against the number of tasks) at the path given, and a
//! Markdown table on standard output.
//!
//! Exit codes: 0 success, 1 failure (input that does not parse included), 2
//! bad arguments.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, bail};
use bench::workload::Workload;
use plotters::prelude::*;
use serde::Deserialize;

/// The font the plot's text is drawn with (Debian's `fonts-dejavu-core`).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One input line: a `bench` record, or an `http` line.
#[derive(Deserialize)]
struct Line {
    stack: String,
    op: String,
    scale: f64,
    #[serde(default)]
    ops_per_s: f64,
    #[serde(default)]
    rss_mb: f64,
}

/// A series: its label and `(tasks, value)` points in order of size.
type Series = BTreeMap<String, Vec<(f64, f64)>>;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(png), None) = (args.next(), args.next()) else {
        eprintln!("usage: bench-plot OUTPUT.png < results.jsonl");
        return ExitCode::from(2);
    };
    match run(&png) {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-plot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(png: &str) -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let (mut latency, mut memory) = (Series::new(), Series::new());
    for (number, text) in input
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: Line = serde_json::from_str(text)
            .with_context(|| format!("standard input, line {}", number + 1))?;
        let tasks = Workload::new(line.scale).tasks as f64;
        if line.op == "http" {
            memory
                .entry("server RSS under HTTP load".into())
                .or_default()
                .push((tasks, line.rss_mb));
        } else if line.ops_per_s > 0.0 && !matches!(line.op.as_str(), "load" | "get_concurrent") {
            let label = format!("{} ({})", line.op, line.stack);
            latency
                .entry(label)
                .or_default()
                .push((tasks, 1000.0 / line.ops_per_s));
        }
    }
    if latency.is_empty() {
        bail!("standard input holds no per-op results");
    }
    for series in latency.values_mut().chain(memory.values_mut()) {
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    plot(png, &latency, &memory)?;
    Ok(table(&latency, &memory))
}

/// The table: one row per series, one column per table size.
fn table(latency: &Series, memory: &Series) -> String {
    let mut sizes: Vec<f64> = latency.values().flatten().map(|p| p.0).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let mut text = String::from("| per op | ");
    for size in &sizes {
        text.push_str(&format!("{size} tasks | "));
    }
    text.push_str("largest / smallest |\n|---|");
    text.push_str(&"---|".repeat(sizes.len() + 1));
    text.push('\n');
    let rows = latency
        .iter()
        .map(|(label, points)| (format!("{label}, ms"), points, 3))
        .chain(
            memory
                .iter()
                .map(|(label, points)| (format!("{label}, MB"), points, 1)),
        );
    for (label, points, decimals) in rows {
        text.push_str(&format!("| {label} | "));
        for size in &sizes {
            match points.iter().find(|p| p.0 == *size) {
                Some((_, v)) => text.push_str(&format!("{v:.decimals$} | ")),
                None => text.push_str("- | "),
            }
        }
        let (first, last) = (points.first().map(|p| p.1), points.last().map(|p| p.1));
        match (first, last) {
            (Some(a), Some(b)) if a > 0.0 => text.push_str(&format!("{:.2}× |\n", b / a)),
            _ => text.push_str("- |\n"),
        }
    }
    text
}

fn plot(png: &str, latency: &Series, memory: &Series) -> anyhow::Result<()> {
    let font = std::fs::read(FONT)
        .with_context(|| format!("{FONT}: the plot's font (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{FONT}: not a font"))?;
    let root = BitMapBackend::new(png, (900, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(620);
    let xs = || latency.values().flatten().map(|p| p.0);
    let (x_lo, x_hi) = (
        xs().fold(f64::MAX, f64::min) * 0.8,
        xs().fold(0.0, f64::max) * 1.25,
    );
    let ys = || latency.values().flatten().map(|p| p.1);
    let (y_lo, y_hi) = (
        ys().fold(f64::MAX, f64::min) * 0.5,
        ys().fold(0.0, f64::max) * 2.0,
    );
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "Per-op latency against table size (PostgreSQL)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("tasks")
        .y_desc("ms per op")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .light_line_style(WHITE)
        .draw()?;
    for (i, (label, points)) in latency.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let rss = || memory.values().flatten().map(|p| p.1);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("Server memory under HTTP load", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x_lo..x_hi).log_scale(),
            0.0..rss().fold(40.0, f64::max) * 1.2,
        )?;
    chart
        .configure_mesh()
        .x_desc("tasks")
        .y_desc("peak RSS, MB")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let limit = [(x_lo, 40.0), (x_hi, 40.0)];
    chart
        .draw_series(LineSeries::new(limit, RED.stroke_width(1)))?
        .label("40 MB target")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    for (label, points) in memory {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                BLUE.stroke_width(2),
            ))?
            .label(label)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
