//! The partition heatmap: training rows per (client, label), so label skew is visible at a glance.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::style::{AXIS_TITLE_SIZE, CAPTION_SIZE, FONT, TICK_SIZE};
use crate::error::{ReportError, Result};
use crate::partition::PartitionCounts;

/// Sequential white-to-blue colour for `t` in [0, 1] (ColorBrewer "Blues" end points).
fn blues(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
    RGBColor(lerp(247, 8), lerp(251, 48), lerp(255, 107))
}

/// Longest label name shown on the y axis before it is cut with an ellipsis.
const MAX_LABEL_CHARS: usize = 26;

fn short(name: &str) -> String {
    if name.chars().count() <= MAX_LABEL_CHARS {
        name.to_string()
    } else {
        format!("{}…", name.chars().take(MAX_LABEL_CHARS - 1).collect::<String>())
    }
}

/// Clients on x, labels on y (label 0 at the top), cell colour = rows held, counts written in cells
/// when the grid is small enough to read them; a colour bar on the right gives the scale.
pub fn partition_heatmap(p: &PartitionCounts) -> Result<String> {
    let err = |e: &dyn std::fmt::Display| ReportError::plot("partition_heatmap", e);
    let (clients, labels) = (p.num_clients(), p.num_labels());
    let max = p.max_count().max(1) as f64;
    let longest = p.label_names.iter().map(|n| short(n).chars().count()).max().unwrap_or(2);
    let y_area = (longest as u32 * 7 + 24).max(60);
    let cell_h = if labels > 30 { 14 } else { 22 };
    let height = (labels as u32 * cell_h + 150).max(320);
    let width = 900u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (main, bar) = root.split_horizontally(width - 110);
        let mut chart = ChartBuilder::on(&main)
            .caption(format!("Training rows per client and label ({clients} clients × {labels} labels)"), (FONT, CAPTION_SIZE))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(y_area)
            // plotters' integer ranges are inclusive: 0..n-1 gives exactly n segments.
            .build_cartesian_2d((0..clients.max(1) - 1).into_segmented(), (0..labels.max(1) - 1).into_segmented())
            .map_err(|e| err(&e))?;
        let label_names: Vec<String> = p.label_names.iter().map(|n| short(n)).collect();
        let y_fmt = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < labels => label_names[labels - 1 - i].clone(),
            _ => String::new(),
        };
        let x_fmt = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < clients => i.to_string(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("Client")
            .y_desc("Label")
            .x_labels(clients.min(40))
            .y_labels(labels)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .axis_desc_style((FONT, AXIS_TITLE_SIZE))
            .label_style((FONT, if labels > 30 { 10 } else { 12 }))
            .draw()
            .map_err(|e| err(&e))?;
        let show_numbers = clients <= 30 && labels <= 30;
        for (c, row) in p.counts.iter().enumerate() {
            for (l, &n) in row.iter().enumerate() {
                let y = labels - 1 - l;
                let t = n as f64 / max;
                let cell = Rectangle::new(
                    [(SegmentValue::Exact(c), SegmentValue::Exact(y)), (SegmentValue::Exact(c + 1), SegmentValue::Exact(y + 1))],
                    blues(t).filled(),
                );
                chart.draw_series(std::iter::once(cell)).map_err(|e| err(&e))?;
                if show_numbers && n > 0 {
                    let color = if t > 0.55 { WHITE } else { RGBColor(40, 40, 40) };
                    let style = TextStyle::from((FONT, 10).into_font()).color(&color).pos(Pos::new(HPos::Center, VPos::Center));
                    chart
                        .draw_series(std::iter::once(Text::new(
                            n.to_string(),
                            (SegmentValue::CenterOf(c), SegmentValue::CenterOf(y)),
                            style,
                        )))
                        .map_err(|e| err(&e))?;
                }
            }
        }
        draw_colour_bar(&bar, max as u64, height).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

fn draw_colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    max: u64,
    height: u32,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (top, bottom) = (60i32, height as i32 - 70);
    let (x0, x1) = (20i32, 40i32);
    let steps = 64;
    for s in 0..steps {
        let t0 = s as f64 / steps as f64;
        let y_a = bottom - ((bottom - top) as f64 * t0) as i32;
        let y_b = bottom - ((bottom - top) as f64 * (s + 1) as f64 / steps as f64) as i32;
        area.draw(&Rectangle::new([(x0, y_b), (x1, y_a)], blues(t0 + 0.5 / steps as f64).filled()))?;
    }
    area.draw(&Rectangle::new([(x0, top), (x1, bottom)], RGBColor(120, 120, 120).stroke_width(1)))?;
    let style = TextStyle::from((FONT, TICK_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for k in 0..=4u64 {
        let value = max * k / 4;
        let y = bottom - ((bottom - top) as f64 * k as f64 / 4.0) as i32;
        area.draw(&PathElement::new(vec![(x1, y), (x1 + 4, y)], BLACK.stroke_width(1)))?;
        area.draw(&Text::new(value.to_string(), (x1 + 7, y), style.clone()))?;
    }
    area.draw(&Text::new(
        "rows",
        (x0 - 2, top - 16),
        TextStyle::from((FONT, TICK_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
    ))?;
    Ok(())
}
