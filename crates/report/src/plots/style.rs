//! Shared look of every figure: colour-blind-safe method colours (Okabe-Ito), marker shapes that
//! still tell methods apart in greyscale print, font sizes, and number formats for axes.

use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters_backend::{BackendCoord, DrawingErrorKind};
use plotters::style::RGBColor;

/// The grid every chart shares: axis titles and ticks in the figure font, light minor lines and
/// slightly darker major ones.
pub fn grid<'m, 'a, 'b, X, Y, DB>(
    mesh: &'m mut plotters::chart::MeshStyle<'a, 'b, X, Y, DB>,
) -> &'m mut plotters::chart::MeshStyle<'a, 'b, X, Y, DB>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
    DB: DrawingBackend,
{
    mesh.axis_desc_style((FONT, AXIS_TITLE_SIZE))
        .label_style((FONT, TICK_SIZE))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
}

/// The legend box every chart shares: figure font, a white box with a grey border.
pub fn legend<'m, 'a, 'b, DB, CT>(
    labels: &'m mut plotters::chart::SeriesLabelStyle<'a, 'b, DB, CT>,
) -> &'m mut plotters::chart::SeriesLabelStyle<'a, 'b, DB, CT>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    labels.label_font((FONT, TICK_SIZE)).background_style(WHITE.mix(0.9)).border_style(RGBColor(160, 160, 160)).margin(8)
}

/// Figure size in pixels (width, height); the HTML scales SVGs to the page width.
pub const FIGURE_SIZE: (u32, u32) = (760, 460);
/// Font family for every text element (browsers pick their sans-serif face).
pub const FONT: &str = "sans-serif";
/// Caption font size.
pub const CAPTION_SIZE: u32 = 19;
/// Axis title font size.
pub const AXIS_TITLE_SIZE: u32 = 15;
/// Tick label font size.
pub const TICK_SIZE: u32 = 13;

/// Okabe-Ito palette (Wong, Nature Methods 2011), black first.
pub const OKABE_ITO: [RGBColor; 8] = [
    RGBColor(0, 0, 0),
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(240, 228, 66),
];

/// The colour of a method in every figure.
pub fn method_color(method: &str) -> RGBColor {
    match method {
        "fft" => OKABE_ITO[0],
        "lora" => OKABE_ITO[1],
        "sft" => OKABE_ITO[2],
        "slora" => OKABE_ITO[3],
        "slora-stage1" => OKABE_ITO[5],
        "slora-stage2" => OKABE_ITO[4],
        "ffa-lora" => OKABE_ITO[6],
        "fedex-lora" => OKABE_ITO[7],
        other => OKABE_ITO[1 + (other.bytes().map(usize::from).sum::<usize>() % 7)],
    }
}

/// Marker shapes, one per method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// Filled circle.
    Circle,
    /// Filled triangle.
    Triangle,
    /// Diagonal cross.
    Cross,
    /// Filled square.
    Square,
    /// Hollow circle.
    Ring,
}

/// The marker of a method in every figure.
pub fn method_marker(method: &str) -> Marker {
    match method {
        "fft" => Marker::Circle,
        "lora" => Marker::Triangle,
        "sft" => Marker::Cross,
        "slora" => Marker::Square,
        _ => Marker::Ring,
    }
}

/// A marker centred on a data point (or, as a legend entry, a short line with the marker on it).
#[derive(Debug, Clone)]
pub struct MarkerElement<C> {
    pos: C,
    marker: Marker,
    color: RGBColor,
    legend: bool,
}

/// A method's marker at `pos` (data coordinates).
pub fn marker_element<C>(marker: Marker, pos: C, color: RGBColor) -> MarkerElement<C> {
    MarkerElement { pos, marker, color, legend: false }
}

/// A legend entry for `method`: a 22-px line segment in the method's colour with its marker in the middle.
pub fn legend_entry(method: &str) -> impl Fn((i32, i32)) -> MarkerElement<(i32, i32)> {
    let (marker, color) = (method_marker(method), method_color(method));
    move |pos| MarkerElement { pos, marker, color, legend: true }
}

impl<'a, C> PointCollection<'a, C> for &'a MarkerElement<C> {
    type Point = &'a C;
    type IntoIter = std::iter::Once<&'a C>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.pos)
    }
}

impl<C, DB: DrawingBackend> Drawable<DB> for MarkerElement<C> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut points: I,
        backend: &mut DB,
        _parent_dim: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((mut x, y)) = points.next() else { return Ok(()) };
        let filled = self.color.filled();
        let stroke = self.color.stroke_width(2);
        if self.legend {
            backend.draw_line((x, y), (x + 22, y), &stroke)?;
            x += 11;
        }
        match self.marker {
            Marker::Circle => backend.draw_circle((x, y), 4, &filled, true),
            Marker::Ring => {
                backend.draw_circle((x, y), 4, &WHITE.filled(), true)?;
                backend.draw_circle((x, y), 4, &stroke, false)
            }
            Marker::Square => backend.draw_rect((x - 4, y - 4), (x + 4, y + 4), &filled, true),
            Marker::Triangle => backend.fill_polygon(vec![(x, y - 6), (x - 5, y + 4), (x + 5, y + 4)], &filled),
            Marker::Cross => {
                backend.draw_line((x - 4, y - 4), (x + 4, y + 4), &stroke)?;
                backend.draw_line((x - 4, y + 4), (x + 4, y - 4), &stroke)
            }
        }
    }
}

/// Bytes with a binary-free decimal unit, e.g. `12.3 MB` (the units papers report uploads in).
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else if value.abs() >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else if value.abs() >= 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Parameter counts as `22.7M`, `1.2k`, `640`.
pub fn format_count(n: u64) -> String {
    let v = n as f64;
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        n.to_string()
    }
}

/// Seconds as `42.0 s`, `3 min 05 s`, `1 h 02 min`.
pub fn format_seconds(s: f64) -> String {
    if !s.is_finite() {
        return "–".into();
    }
    // Round to the unit shown before splitting, or 539.7 s prints as "8 min 60 s".
    if s < 59.95 {
        format!("{s:.1} s")
    } else if s < 3599.5 {
        let whole = s.round() as u64;
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        let minutes = (s / 60.0).round() as u64;
        format!("{} h {:02} min", minutes / 60, minutes % 60)
    }
}

/// A padded [lo, hi] range around `values` for a linear axis, never empty.
pub fn padded_range(values: impl IntoIterator<Item = f64>, pad_fraction: f64) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let span = (hi - lo).max(1e-9);
    let pad = span * pad_fraction;
    if hi - lo < 1e-9 {
        return (lo - 1.0)..(hi + 1.0);
    }
    (lo - pad)..(hi + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bytes_counts_and_seconds() {
        assert_eq!(format_bytes(999.0), "999 B");
        assert_eq!(format_bytes(1_285_712.0), "1.29 MB");
        assert_eq!(format_bytes(69_590_096.0), "69.6 MB");
        assert_eq!(format_bytes(835_081_152.0), "835 MB");
        assert_eq!(format_count(17_397_524), "17.40M");
        assert_eq!(format_count(321_428), "321.4k");
        assert_eq!(format_count(640), "640");
        assert_eq!(format_seconds(42.04), "42.0 s");
        assert_eq!(format_seconds(276.0), "4 min 36 s");
        // No 60 in the smaller unit: each value rounds up into the next one.
        assert_eq!(format_seconds(59.96), "1 min 00 s");
        assert_eq!(format_seconds(539.7), "9 min 00 s");
        assert_eq!(format_seconds(3599.6), "1 h 00 min");
        assert_eq!(format_seconds(7199.0), "2 h 00 min");
        assert_eq!(format_seconds(3725.0), "1 h 02 min");
    }
}
