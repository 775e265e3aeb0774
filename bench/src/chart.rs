//! The results as an SVG chart: per load, each server's requests/s relative
//! to the baseline (top) and its server CPU time per request (bottom).

use plotters::prelude::*;

use crate::compare::{PointResult, Results, ServerSummary};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 760;
/// One colour per server, in [`crate::servers::ServerKind::ALL`] order.
const COLOURS: [RGBColor; 8] = [
    RGBColor(90, 90, 90),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(160, 160, 160),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

/// Renders the chart to an SVG document.
pub fn render(results: &Results) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (top, bottom) = root.split_vertically(HEIGHT / 2);
        let baseline = results.baseline;
        panel(
            &top,
            &results.throughput,
            &format!("requests/s relative to {baseline} (higher is better)"),
            |s| s.requests_per_sec_vs_baseline,
        )?;
        panel(
            &bottom,
            &results.throughput,
            "server CPU µs per request (lower is better)",
            |s| s.cpu_us_per_request,
        )?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// One grouped bar chart: a group per load, a bar per server.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    points: &[PointResult],
    title: &str,
    value: impl Fn(&ServerSummary) -> Option<f64>,
) -> Result<(), String> {
    let servers = points.first().map_or(0, |p| p.servers.len()).max(1);
    let top = points
        .iter()
        .flat_map(|p| p.servers.iter().filter_map(&value))
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        // Headroom above the tallest bar for the legend.
        * 1.6;
    let labels: Vec<String> = points
        .iter()
        .map(|p| format!("{} conn × {} B", p.connections, p.size))
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..points.len() as f64, 0.0..top)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(points.len() * 2 + 1)
        .x_label_formatter(&|x| {
            // Labels sit at the middle of each group (x = i + 0.5).
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(draw_error)?;

    let bar_width = 0.8 / servers as f64;
    for (i, point) in points.iter().enumerate() {
        for (j, summary) in point.servers.iter().enumerate() {
            let Some(v) = value(summary) else { continue };
            let left = i as f64 + 0.1 + j as f64 * bar_width;
            let colour = COLOURS[j % COLOURS.len()];
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(left, 0.0), (left + bar_width * 0.9, v)],
                    colour.filled(),
                )))
                .map_err(draw_error)?;
        }
    }
    // The legend: one entry per server, drawn once.
    if let Some(first) = points.first() {
        for (j, summary) in first.servers.iter().enumerate() {
            let colour = COLOURS[j % COLOURS.len()];
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(draw_error)?
                .label(summary.server)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(draw_error)?;
    }
    Ok(())
}

fn draw_error(e: impl std::fmt::Display) -> String {
    format!("drawing the chart: {e}")
}
