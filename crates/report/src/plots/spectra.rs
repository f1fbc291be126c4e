//! Stage-1 spectra: energy of the sparse update dW kept by a rank-k truncation, one line per adapted
//! matrix, coloured by matrix kind, with the chosen LoRA rank marked.

use std::collections::BTreeSet;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::style::{grid, legend, CAPTION_SIZE, FIGURE_SIZE, FONT, OKABE_ITO};
use crate::error::{ReportError, Result};
use crate::spectrum::Spectra;

/// Energy kept (%) vs truncation rank (log x) for every matrix; `rank` (lora.r) is marked.
pub fn energy_vs_rank(spectra: &Spectra, rank: Option<usize>) -> Result<String> {
    let err = |e: &dyn std::fmt::Display| ReportError::plot("spectra", e);
    let max_rank = spectra.max_rank().max(2) as f64;
    let kinds: Vec<String> = spectra.matrices.iter().map(|m| m.kind()).collect::<BTreeSet<_>>().into_iter().collect();
    let kind_color = |k: &str| OKABE_ITO[1 + kinds.iter().position(|x| x == k).unwrap_or(0) % 7];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, FIGURE_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Stage-1 update spectra: energy kept vs rank ({} matrices)", spectra.matrices.len()),
                (FONT, CAPTION_SIZE),
            )
            .margin(12)
            .margin_right(24)
            .x_label_area_size(48)
            .y_label_area_size(62)
            .build_cartesian_2d((1.0..max_rank * 1.05).log_scale(), 0.0..101.0)
            .map_err(|e| err(&e))?;
        grid(chart
            .configure_mesh()
            .x_desc("Truncation rank k (log scale)")
            .y_desc("Energy kept Σᵢ≤ₖ σᵢ² / Σ σᵢ² (%)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}")))
            .draw()
            .map_err(|e| err(&e))?;
        if let Some(r) = rank {
            let grey = RGBColor(110, 110, 110);
            chart
                .draw_series(DashedLineSeries::new(vec![(r as f64, 0.0), (r as f64, 101.0)], 6, 4, grey.stroke_width(1)))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!(" LoRA rank r = {r}"),
                    (r as f64, 2.0),
                    TextStyle::from((FONT, 12).into_font()).color(&grey).pos(Pos::new(HPos::Left, VPos::Bottom)),
                )))
                .map_err(|e| err(&e))?;
        }
        let mut labelled = BTreeSet::new();
        for m in &spectra.matrices {
            let kind = m.kind();
            let color = kind_color(&kind);
            let points = m.energy_kept.iter().enumerate().map(|(k, e)| ((k + 1) as f64, 100.0 * e));
            let series =
                chart.draw_series(LineSeries::new(points, color.mix(0.75).stroke_width(1))).map_err(|e| err(&e))?;
            if labelled.insert(kind.clone()) {
                series
                    .label(kind)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2)));
            }
        }
        legend(chart.configure_series_labels().position(SeriesLabelPosition::LowerRight))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
