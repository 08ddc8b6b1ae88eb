//! SVG charts of a backtest (plotters, SVG backend only: no font or image libraries needed).

use plotters::prelude::*;

use super::BacktestReport;
use quorum::{Error, Result};

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn chart_error(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("drawing the backtest chart failed: {e}"))
}

/// Five panels: the weights of each online rule (Hedge, BOA, ML-Poly, EWA) over time, and the
/// cumulative loss (log-loss, or squared error for regression) of every method and oracle minus that
/// of equal weights (below zero = better than equal weights so far).
pub fn backtest_svg(report: &BacktestReport) -> Result<String> {
    let mut svg = String::new();
    // The drawing borrows `svg` until it is presented.
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 1500)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let (top, bottom) = root.split_vertically(900);
        let panels = top.split_evenly((2, 2));
        let t = &report.timeline;
        let rows = t.row.len().max(1) as f64;
        let titled = [
            ("hedge", "Hedge (Fixed-Share, AdaHedge rate) weights"),
            ("boa", "BOA weights"),
            ("mlpol", "ML-Poly weights"),
            ("ewa", "EWA (calibrated) weights"),
        ];
        let empty = Vec::new();
        for (panel, (key, title)) in panels.iter().zip(titled) {
            let series = t.weights.get(key).unwrap_or(&empty);
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 18))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(44)
                .build_cartesian_2d(0f64..rows, 0f64..1f64)
                .map_err(chart_error)?;
            chart.configure_mesh().x_desc("scored row").y_desc("weight").draw().map_err(chart_error)?;
            for (i, member) in t.members.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(
                        series.iter().enumerate().map(|(x, w)| (x as f64, w[i])),
                        color.stroke_width(2),
                    ))
                    .map_err(chart_error)?
                    .label(member.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(chart_error)?;
        }
        let baseline = report.cumulative_loss("equal");
        let curves: Vec<(String, Vec<f64>)> = report
            .method_order
            .iter()
            .chain(report.oracles.keys())
            .map(|name| {
                let diff = report.cumulative_loss(name).iter().zip(&baseline).map(|(a, b)| a - b).collect();
                let label =
                    if report.oracles.contains_key(name) { format!("{name} (hindsight)") } else { name.clone() };
                (label, diff)
            })
            .collect();
        let (caption, axis) = match report.task {
            quorum::registry::Task::Classification => {
                ("cumulative log-loss minus equal weights' (lower is better)", "Δ log-loss")
            }
            quorum::registry::Task::Regression => {
                ("cumulative squared error minus equal weights' (lower is better)", "Δ squared error")
            }
        };
        let (lo, hi) =
            curves.iter().flat_map(|(_, c)| c.iter().copied()).fold((0f64, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let pad = ((hi - lo) * 0.05).max(1e-12);
        let mut chart = ChartBuilder::on(&bottom)
            .caption(caption, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..rows, (lo - pad)..(hi + pad))
            .map_err(chart_error)?;
        chart.configure_mesh().x_desc("scored row").y_desc(axis).draw().map_err(chart_error)?;
        for (i, (name, curve)) in curves.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let style = if name.ends_with("(hindsight)") { color.stroke_width(1) } else { color.stroke_width(2) };
            chart
                .draw_series(LineSeries::new(curve.iter().enumerate().map(|(x, v)| (x as f64, *v)), style))
                .map_err(chart_error)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(chart_error)?;
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}
