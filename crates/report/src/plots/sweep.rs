//! Sweep figures over heterogeneity levels (categorical x): final accuracy per method, and the
//! paper's central figure, the gap to FFT (percentage points) per method.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::style::{
    grid, legend, legend_entry, marker_element, method_color, method_marker, padded_range, CAPTION_SIZE, FIGURE_SIZE,
    FONT,
};
use crate::error::{ReportError, Result};
use crate::metrics::method_label;

/// The x-axis title of a sweep over partitions.
pub const HETEROGENEITY_AXIS: &str = "Label heterogeneity across clients (sweep point)";

/// One line per method over the sweep points; `None` = the method did not run at that point.
pub type SweepSeries = Vec<(String, Vec<Option<f64>>)>;

#[allow(clippy::too_many_arguments)]
fn categorical_chart(
    id: &str,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[String],
    series: &SweepSeries,
    half_widths: Option<&SweepSeries>,
    zero_line: Option<&str>,
    legend_position: SeriesLabelPosition,
) -> Result<String> {
    let err = |e: &dyn std::fmt::Display| ReportError::plot(id, e);
    let n = points.len().max(1);
    // (method, per point: (mean, half-width)) of the bands.
    let bands: Vec<(String, Vec<Option<(f64, f64)>>)> = match half_widths {
        Some(h) => series
            .iter()
            .zip(h)
            .map(|((m, v), (_, h))| {
                (m.clone(), v.iter().zip(h).map(|(v, h)| Some((*v.as_ref()?, *h.as_ref()?))).collect())
            })
            .collect(),
        None => Vec::new(),
    };
    let mut values: Vec<f64> = series.iter().flat_map(|(_, v)| v.iter().flatten().copied()).collect();
    values.extend(bands.iter().flat_map(|(_, b)| b.iter().flatten().flat_map(|(v, h)| [v - h, v + h])));
    if zero_line.is_some() {
        values.push(0.0);
    }
    let y_range = padded_range(values, 0.12);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, FIGURE_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, (FONT, CAPTION_SIZE))
            .margin(12)
            .margin_right(24)
            .x_label_area_size(48)
            .y_label_area_size(62)
            // plotters' integer ranges are inclusive: 0..n-1 gives exactly n segments.
            .build_cartesian_2d((0..n - 1).into_segmented(), y_range.clone())
            .map_err(|e| err(&e))?;
        let x_fmt = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < points.len() => points[*i].clone(),
            _ => String::new(),
        };
        grid(chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(n)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| format!("{v:.1}")))
            .draw()
            .map_err(|e| err(&e))?;
        if let Some(label) = zero_line {
            let grey = RGBColor(90, 90, 90);
            let ends = vec![(SegmentValue::Exact(0), 0.0), (SegmentValue::Exact(n), 0.0)];
            chart.draw_series(DashedLineSeries::new(ends, 5, 4, grey.stroke_width(1))).map_err(|e| err(&e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{label} "),
                    (SegmentValue::Exact(n), 0.0),
                    TextStyle::from((FONT, 12).into_font()).color(&grey).pos(Pos::new(HPos::Right, VPos::Bottom)),
                )))
                .map_err(|e| err(&e))?;
        }
        for (method, band) in &bands {
            let color = method_color(method);
            let present: Vec<(usize, f64, f64)> = band.iter().enumerate().filter_map(|(i, b)| b.map(|(v, h)| (i, v, h))).collect();
            if present.len() >= 2 {
                let outline: Vec<(SegmentValue<usize>, f64)> = present
                    .iter()
                    .map(|&(i, v, h)| (SegmentValue::CenterOf(i), v - h))
                    .chain(present.iter().rev().map(|&(i, v, h)| (SegmentValue::CenterOf(i), v + h)))
                    .collect();
                chart.draw_series(std::iter::once(Polygon::new(outline, color.mix(0.15).filled()))).map_err(|e| err(&e))?;
            }
            for &(i, v, h) in &present {
                let bar = vec![(SegmentValue::CenterOf(i), v - h), (SegmentValue::CenterOf(i), v + h)];
                chart.draw_series(LineSeries::new(bar, color.mix(0.7).stroke_width(1))).map_err(|e| err(&e))?;
            }
        }
        for (method, vals) in series {
            let color = method_color(method);
            let pts: Vec<(SegmentValue<usize>, f64)> =
                vals.iter().enumerate().filter_map(|(i, v)| v.map(|v| (SegmentValue::CenterOf(i), v))).collect();
            let width = if method == "slora" { 3 } else { 2 };
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))
                .map_err(|e| err(&e))?
                .label(method_label(method))
                .legend(legend_entry(method));
            let marker = method_marker(method);
            chart.draw_series(pts.into_iter().map(|p| marker_element(marker, p, color))).map_err(|e| err(&e))?;
        }
        legend(chart.configure_series_labels().position(legend_position))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// Gap to FFT = FFT's final accuracy − the method's final accuracy, in percentage points, per sweep point.
pub fn gap_vs_heterogeneity(points: &[String], gaps: &SweepSeries) -> Result<String> {
    categorical_chart(
        "gap_vs_heterogeneity",
        "Gap to full fine-tuning vs label heterogeneity",
        HETEROGENEITY_AXIS,
        "FFT accuracy − method accuracy (pp)",
        points,
        gaps,
        None,
        Some("FFT (gap 0)"),
        SeriesLabelPosition::UpperLeft,
    )
}

/// Final test accuracy (%) per method and sweep point.
pub fn accuracy_vs_heterogeneity(points: &[String], accuracy: &SweepSeries) -> Result<String> {
    categorical_chart(
        "accuracy_vs_heterogeneity",
        "Final test accuracy vs label heterogeneity",
        HETEROGENEITY_AXIS,
        "Final test accuracy (%)",
        points,
        accuracy,
        None,
        None,
        SeriesLabelPosition::LowerLeft,
    )
}

/// [`gap_vs_heterogeneity`] with a 95 % band (half-widths per method and point) around each line, over
/// points described by `x_desc`.
pub fn gap_vs_heterogeneity_banded(points: &[String], gaps: &SweepSeries, half_widths: &SweepSeries, x_desc: &str) -> Result<String> {
    categorical_chart(
        "gap_vs_point",
        "Gap to full fine-tuning per point (95 % band)",
        x_desc,
        "FFT accuracy − method accuracy (pp)",
        points,
        gaps,
        Some(half_widths),
        Some("FFT (gap 0)"),
        SeriesLabelPosition::UpperLeft,
    )
}

/// [`accuracy_vs_heterogeneity`] with a 95 % band (half-widths per method and point) around each
/// line, over points described by `x_desc`.
pub fn accuracy_vs_heterogeneity_banded(
    points: &[String],
    accuracy: &SweepSeries,
    half_widths: &SweepSeries,
    x_desc: &str,
) -> Result<String> {
    categorical_chart(
        "accuracy_vs_point",
        "Final test accuracy per point (95 % band)",
        x_desc,
        "Final test accuracy (%)",
        points,
        accuracy,
        Some(half_widths),
        None,
        SeriesLabelPosition::LowerLeft,
    )
}
