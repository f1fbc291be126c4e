//! Learning-curve figures: accuracy vs round, test loss vs round, accuracy vs cumulative upload.

use crate::metrics::or_nan;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::style::{
    format_bytes, grid, legend, legend_entry, marker_element, method_color, method_marker, padded_range, CAPTION_SIZE,
    FIGURE_SIZE, FONT,
};
use crate::error::{ReportError, Result};
use crate::metrics::Curve;

/// A horizontal reference line with a label at its left end, above or below the line.
struct HLine {
    y: f64,
    label: String,
    above: bool,
}

/// A vertical reference line with a label near the top.
struct VLine {
    x: f64,
    label: String,
}

/// What one line chart draws.
struct LineChart<'a> {
    id: &'a str,
    caption: String,
    x_desc: &'a str,
    y_desc: &'a str,
    series: Vec<(String, Vec<(f64, f64)>)>,
    y_range: std::ops::Range<f64>,
    hlines: Vec<HLine>,
    vlines: Vec<VLine>,
    legend_position: SeriesLabelPosition,
    /// Per method: (x, low, high) of a shaded band (95 % interval over seeds), drawn under the lines.
    bands: Vec<(String, Vec<(f64, f64, f64)>)>,
}

impl LineChart<'_> {
    /// Draws on an x axis built from `x_spec`, labelling ticks with `x_fmt`.
    fn render<X>(&self, x_spec: X, x_fmt: &dyn Fn(&f64) -> String, x_labels: usize) -> Result<String>
    where
        X: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
    {
        let err = |e: &dyn std::fmt::Display| ReportError::plot(self.id, e);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, FIGURE_SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(&e))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.caption, (FONT, CAPTION_SIZE))
                .margin(12)
                .margin_right(24)
                .x_label_area_size(48)
                .y_label_area_size(62)
                .build_cartesian_2d(x_spec, self.y_range.clone())
                .map_err(|e| err(&e))?;
            grid(chart
                .configure_mesh()
                .x_desc(self.x_desc)
                .y_desc(self.y_desc)
                .x_labels(x_labels)
                .y_labels(8)
                .x_label_formatter(x_fmt)
                .y_label_formatter(&|v| format!("{v:.1}")))
                .draw()
                .map_err(|e| err(&e))?;

            let (x_lo, x_hi) = {
                let r = chart.x_range();
                (r.start, r.end)
            };
            let grey = RGBColor(110, 110, 110);
            for h in &self.hlines {
                let vpos = if h.above { VPos::Bottom } else { VPos::Top };
                chart
                    .draw_series(DashedLineSeries::new(vec![(x_lo, h.y), (x_hi, h.y)], 4, 4, grey.stroke_width(1)))
                    .map_err(|e| err(&e))?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!(" {}", h.label),
                        (x_lo, h.y),
                        TextStyle::from((FONT, 12).into_font()).color(&grey).pos(Pos::new(HPos::Left, vpos)),
                    )))
                    .map_err(|e| err(&e))?;
            }
            let (y_lo, y_hi) = (self.y_range.start, self.y_range.end);
            for v in &self.vlines {
                chart
                    .draw_series(DashedLineSeries::new(vec![(v.x, y_lo), (v.x, y_hi)], 6, 4, grey.stroke_width(1)))
                    .map_err(|e| err(&e))?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        v.label.clone(),
                        (v.x, y_lo),
                        TextStyle::from((FONT, 12).into_font()).color(&grey).pos(Pos::new(HPos::Left, VPos::Bottom)),
                    )))
                    .map_err(|e| err(&e))?;
            }
            for (method, band) in &self.bands {
                if band.len() < 2 {
                    continue;
                }
                let outline: Vec<(f64, f64)> =
                    band.iter().map(|&(x, lo, _)| (x, lo)).chain(band.iter().rev().map(|&(x, _, hi)| (x, hi))).collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(outline, method_color(method).mix(0.18).filled())))
                    .map_err(|e| err(&e))?;
            }
            for (method, points) in &self.series {
                let color = method_color(method);
                let width = if method == "slora" { 3 } else { 2 };
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(width)))
                    .map_err(|e| err(&e))?
                    .label(crate::metrics::method_label(method))
                    .legend(legend_entry(method));
                let marker = method_marker(method);
                chart
                    .draw_series(points.iter().map(|&p| marker_element(marker, p, color)))
                    .map_err(|e| err(&e))?;
            }
            legend(chart.configure_series_labels().position(self.legend_position.clone()))
                .draw()
                .map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        Ok(svg)
    }
}

/// The reference line of the time-to-target goal (accuracy as a fraction, label), when there is one.
fn target_lines(target: Option<&(f64, String)>) -> Vec<HLine> {
    target.map(|(y, label)| HLine { y: 100.0 * y, label: label.clone(), above: true }).into_iter().collect()
}

fn switch_lines(curves: &[Curve]) -> Vec<VLine> {
    curves
        .iter()
        .filter_map(|c| c.switch_round)
        .map(|r| VLine { x: f64::from(r), label: " SLoRA: sparse → LoRA".into() })
        .take(1)
        .collect()
}

fn round_axis(curves: &[Curve]) -> (std::ops::Range<f64>, usize) {
    let max_round = curves.iter().filter_map(|c| c.last()).map(|r| r.round).max().unwrap_or(1).max(1);
    (-0.25..f64::from(max_round) + 0.25, (max_round as usize + 1).min(21))
}

fn integer_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-6 { format!("{v:.0}") } else { String::new() }
}

fn accuracy_range(curves: &[Curve], extra: &[f64]) -> std::ops::Range<f64> {
    let values = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| 100.0 * or_nan(p.accuracy)))
        .filter(|v| v.is_finite())
        .chain(extra.iter().copied());
    let r = padded_range(values, 0.08);
    r.start.max(0.0)..r.end.min(100.0)
}

/// Test accuracy (%) vs federated round, one line per method (with its band over seeds, if given),
/// the target and the SLoRA switch marked.
pub fn accuracy_vs_round(curves: &[Curve], bands: &[(String, Vec<(f64, f64, f64)>)], target: Option<&(f64, String)>) -> Result<String> {
    let hlines = target_lines(target);
    let mut extra: Vec<f64> = hlines.iter().map(|h| h.y).collect();
    extra.extend(bands.iter().flat_map(|(_, b)| b.iter().flat_map(|&(_, lo, hi)| [lo, hi])));
    let (x, labels) = round_axis(curves);
    LineChart {
        id: "accuracy_vs_round",
        caption: "Test accuracy vs communication round".into(),
        x_desc: "Round (cumulative over SLoRA's two stages)",
        y_desc: "Test accuracy (%)",
        series: curves
            .iter()
            .map(|c| (c.method.clone(), c.evaluated().map(|p| (f64::from(p.round), 100.0 * or_nan(p.accuracy))).collect()))
            .collect(),
        y_range: accuracy_range(curves, &extra),
        hlines,
        vlines: switch_lines(curves),
        legend_position: SeriesLabelPosition::LowerRight,
        bands: bands.to_vec(),
    }
    .render(x, &integer_label, labels)
}

/// Test loss vs federated round.
pub fn loss_vs_round(curves: &[Curve]) -> Result<String> {
    let (x, labels) = round_axis(curves);
    let r = padded_range(curves.iter().flat_map(|c| c.points.iter().map(|p| or_nan(p.loss))), 0.08);
    LineChart {
        id: "loss_vs_round",
        caption: "Test loss vs communication round".into(),
        x_desc: "Round (cumulative over SLoRA's two stages)",
        y_desc: "Test cross-entropy loss",
        series: curves
            .iter()
            .map(|c| (c.method.clone(), c.evaluated().map(|p| (f64::from(p.round), or_nan(p.loss))).collect()))
            .collect(),
        y_range: r.start.max(0.0)..r.end,
        hlines: Vec::new(),
        vlines: switch_lines(curves),
        legend_position: SeriesLabelPosition::UpperRight,
        bands: Vec::new(),
    }
    .render(x, &integer_label, labels)
}

/// Test accuracy (%) vs cumulative bytes uploaded by all clients (log x); round 0 (0 bytes) is left out.
pub fn accuracy_vs_bytes(curves: &[Curve], target: Option<&(f64, String)>) -> Result<String> {
    let hlines = target_lines(target);
    let extra: Vec<f64> = hlines.iter().map(|h| h.y).collect();
    let series: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|c| {
            let pts = c
                .evaluated()
                .filter(|p| p.cum_bytes_up > 0)
                .map(|p| (p.cum_bytes_up as f64, 100.0 * or_nan(p.accuracy)))
                .collect();
            (c.method.clone(), pts)
        })
        .collect();
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = if lo.is_finite() { (lo / 1.6, hi * 1.6) } else { (1.0, 10.0) };
    LineChart {
        id: "accuracy_vs_bytes",
        caption: "Test accuracy vs total upload".into(),
        x_desc: "Cumulative bytes uploaded by all clients (log scale)",
        y_desc: "Test accuracy (%)",
        series,
        y_range: accuracy_range(curves, &extra),
        hlines,
        vlines: Vec::new(),
        legend_position: SeriesLabelPosition::LowerRight,
        bands: Vec::new(),
    }
    .render((lo..hi).log_scale(), &|v| format_bytes(*v), 10)
}

/// Final accuracy (%) against total upload (log x): per method, points `(bytes, accuracy, half-width)`
/// joined in order, each with its 95 % band (e.g. SLoRA at several Stage-1 densities, LoRA and FFT as
/// single reference points).
pub fn accuracy_vs_upload(series: &[(String, Vec<(f64, f64, f64)>)]) -> Result<String> {
    let lines: Vec<(String, Vec<(f64, f64)>)> =
        series.iter().map(|(m, p)| (m.clone(), p.iter().map(|&(x, y, _)| (x, y)).collect())).collect();
    let bands: Vec<(String, Vec<(f64, f64, f64)>)> =
        series.iter().map(|(m, p)| (m.clone(), p.iter().map(|&(x, y, h)| (x, y - h, y + h)).collect())).collect();
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).filter(|x| *x > 0.0);
    let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = if lo.is_finite() { (lo / 2.0, hi * 2.0) } else { (1.0, 10.0) };
    let ys = series.iter().flat_map(|(_, p)| p.iter().flat_map(|&(_, y, h)| [y - h, y + h]));
    LineChart {
        id: "accuracy_vs_upload",
        caption: "Final accuracy vs total upload".into(),
        x_desc: "Bytes uploaded by all clients over the run (log scale)",
        y_desc: "Final test accuracy (%)",
        series: lines,
        y_range: padded_range(ys, 0.1),
        hlines: Vec::new(),
        vlines: Vec::new(),
        legend_position: SeriesLabelPosition::LowerRight,
        bands,
    }
    .render((lo..hi).log_scale(), &|v| format_bytes(*v), 10)
}
