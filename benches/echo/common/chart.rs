//! The SVG chart (plotters): per metric, netgrace's advantage over tokio-ct (dark) and tokio-mt
//! (light) on a log scale, right of 1× better for netgrace; a black tick marks a ratio target.

use std::{io, path::Path};

use plotters::coord::ranged1d::SegmentValue::{CenterOf, Exact};
use plotters::prelude::*;

/// One metric: its label, the advantage over tokio-ct and over tokio-mt, the target's tick.
pub struct Bar {
    pub label: String,
    pub advantage: [Option<f64>; 2],
    pub mark: Option<f64>,
}

/// Writes the chart of `bars` to `path`, titled `title`.
pub fn render(path: &Path, title: &str, bars: &[Bar]) -> io::Result<()> {
    draw(path, title, bars).map_err(|err| io::Error::other(format!("chart: {err}")))
}

fn draw(path: &Path, title: &str, bars: &[Bar]) -> Result<(), Box<dyn std::error::Error>> {
    let n = bars.len();
    // From 1/4× to 4× at least, further if a bar goes beyond.
    let values = bars.iter().flat_map(|b| b.advantage.iter().flatten());
    let (low, high) = values.fold((0.25_f64, 4.0_f64), |(lo, hi), v| {
        (lo.min(v / 1.2), hi.max(v * 1.2))
    });
    let root = SVGBackend::new(path, (980, 110 + 30 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 14))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(430)
        .build_cartesian_2d((low..high).log_scale(), (0..n).into_segmented())?;
    // Segments count from the bottom: the first bar goes on top.
    let label = |y: &_| match y {
        CenterOf(i) if *i < n => bars[n - 1 - i].label.clone(),
        _ => String::new(),
    };
    let mut mesh = chart.configure_mesh();
    mesh.disable_y_mesh().y_labels(n).y_label_formatter(&label);
    let desc = "netgrace's advantage (×) over tokio-ct (dark) and tokio-mt (light); black: target";
    mesh.x_desc(desc).draw()?;
    let colors = [RGBColor(25, 113, 194), RGBColor(116, 192, 252)];
    for (i, bar) in bars.iter().enumerate() {
        let row = n - 1 - i;
        // The top half of a row for tokio-ct, the bottom half for tokio-mt.
        let halves = [(Exact(row + 1), CenterOf(row)), (CenterOf(row), Exact(row))];
        for ((top, bottom), (value, color)) in
            halves.into_iter().zip(bar.advantage.iter().zip(colors))
        {
            if let Some(value) = value {
                let mut rect = Rectangle::new([(1.0, top), (*value, bottom)], color.filled());
                rect.set_margin(1, 1, 0, 0);
                chart.draw_series([rect])?;
            }
        }
        if let Some(mark) = bar.mark {
            let tick = vec![(mark, Exact(row)), (mark, Exact(row + 1))];
            chart.draw_series([PathElement::new(tick, BLACK.stroke_width(2))])?;
        }
    }
    let one = vec![(1.0, Exact(0)), (1.0, Exact(n))];
    chart.draw_series([PathElement::new(one, BLACK.mix(0.6))])?;
    root.present()?;
    Ok(())
}
