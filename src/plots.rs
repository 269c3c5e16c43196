//! PNG plots of a run, in `<run>/plots/`: train and test loss and accuracy and the learning
//! rate per epoch, and for Hessian-free the damping, CG iterations and rho per step.
//! Rewritten after every epoch, and by `hftrain plot <run>` from the run's CSV files.
//!
//! plotters draws the axes, grid and lines into an RGB buffer; the text (title, legend, axis
//! ranges) is drawn with the 8x8 bitmap font of `text.rs`, because plotters' own text
//! needs a TrueType font from the system, which a headless machine may not have.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::RgbImage;
use plotters::prelude::*;

use crate::fsutil::write_atomic;
use crate::metrics::{EpochMetrics, StepMetrics};
use crate::text::draw_text;

const WIDTH: u32 = 640;
const HEIGHT: u32 = 400;
/// Margins for the text around the plotting area.
const LEFT: u32 = 90;
const RIGHT: u32 = 20;
const TOP: u32 = 40;
const BOTTOM: u32 = 40;
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - pad, hi + pad)
}

fn number(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

/// A line chart of `series` against a shared x axis.
pub fn line_chart(title: &str, x_name: &str, series: &[Series]) -> Result<RgbImage> {
    let (x0, x1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut buffer = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    let corners;
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (WIDTH, HEIGHT)).into_drawing_area();
        let area = root.margin(TOP, BOTTOM, LEFT, RIGHT);
        let mut chart = ChartBuilder::on(&area)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| anyhow::anyhow!("cannot lay out the chart {title}: {e}"))?;
        let grid = RGBColor(225, 225, 225);
        for i in 0..=4 {
            let y = y0 + (y1 - y0) * i as f64 / 4.0;
            let x = x0 + (x1 - x0) * i as f64 / 4.0;
            for line in [[(x0, y), (x1, y)], [(x, y0), (x, y1)]] {
                chart
                    .draw_series(LineSeries::new(line, grid))
                    .map_err(|e| anyhow::anyhow!("cannot draw {title}: {e}"))?;
            }
        }
        for (s, color) in series.iter().zip(COLORS.iter().cycle()) {
            let points = s.points.iter().copied().filter(|p| p.1.is_finite());
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("cannot draw {title}: {e}"))?;
        }
        let frame = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)];
        chart
            .draw_series(LineSeries::new(frame, BLACK))
            .map_err(|e| anyhow::anyhow!("cannot draw {title}: {e}"))?;
        corners = (
            chart.backend_coord(&(x0, y1)),
            chart.backend_coord(&(x1, y0)),
        );
        root.present()
            .map_err(|e| anyhow::anyhow!("cannot draw {title}: {e}"))?;
    }
    let mut image =
        RgbImage::from_raw(WIDTH, HEIGHT, buffer).expect("the buffer has the image's size");
    let ((left, top), (right, bottom)) = corners;
    let (left, top, right, bottom) = (
        left.max(0) as u32,
        top.max(0) as u32,
        right.max(0) as u32,
        bottom.max(0) as u32,
    );
    let black = image::Rgb([0, 0, 0]);
    draw_text(&mut image, title, left, 12, black);
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let py = bottom - ((bottom - top) as f64 * i as f64 / 4.0) as u32;
        let label = number(y);
        draw_text(
            &mut image,
            &label,
            left.saturating_sub(label.len() as u32 * 8 + 6),
            py.saturating_sub(4),
            black,
        );
        let x = x0 + (x1 - x0) * i as f64 / 4.0;
        let px = left + ((right - left) as f64 * i as f64 / 4.0) as u32;
        let label = number(x);
        draw_text(
            &mut image,
            &label,
            px.saturating_sub(label.len() as u32 * 4),
            bottom + 6,
            black,
        );
    }
    draw_text(
        &mut image,
        x_name,
        right.saturating_sub(x_name.len() as u32 * 8),
        bottom + 22,
        black,
    );
    // Legend, top right, in each series' colour.
    let mut y = top + 6;
    for (s, color) in series.iter().zip(COLORS.iter().cycle()) {
        let x = right.saturating_sub(s.name.len() as u32 * 8 + 8);
        draw_text(
            &mut image,
            &s.name,
            x,
            y,
            image::Rgb([color.0, color.1, color.2]),
        );
        y += 12;
    }
    Ok(image)
}

pub fn save(image: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, &bytes)
}

/// Writes every plot of a run into `<run>/plots/` and returns the files written.
pub fn write_all(
    run_dir: &Path,
    metrics: &[EpochMetrics],
    steps: Option<&[StepMetrics]>,
) -> Result<Vec<PathBuf>> {
    let dir = run_dir.join("plots");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let per_epoch = |f: fn(&EpochMetrics) -> f64| {
        metrics
            .iter()
            .map(|m| (m.epoch as f64, f(m)))
            .collect::<Vec<_>>()
    };
    let series = |name: &str, points| Series {
        name: name.into(),
        points,
    };
    let mut charts = vec![
        (
            "loss.png",
            line_chart(
                "loss per epoch",
                "epoch",
                &[
                    series("train", per_epoch(|m| m.train_loss)),
                    series("test", per_epoch(|m| m.test_loss)),
                ],
            )?,
        ),
        (
            "accuracy.png",
            line_chart(
                "accuracy (%) per epoch",
                "epoch",
                &[
                    series("train", per_epoch(|m| 100.0 * m.train_accuracy)),
                    series("test", per_epoch(|m| 100.0 * m.test_accuracy)),
                ],
            )?,
        ),
        (
            "lr.png",
            line_chart(
                "learning rate (Hessian-free: step length)",
                "epoch",
                &[series("lr", per_epoch(|m| m.lr))],
            )?,
        ),
    ];
    let sharpness: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|m| Some((m.epoch as f64, m.sharpness?)))
        .collect();
    if !sharpness.is_empty() {
        charts.push((
            "sharpness.png",
            line_chart(
                "sharpness: top Hessian eigenvalue per epoch",
                "epoch",
                &[series("top eigenvalue", sharpness)],
            )?,
        ));
    }
    if let Some(steps) = steps.filter(|s| !s.is_empty()) {
        let pick = |f: fn(&StepMetrics) -> f64| {
            steps
                .iter()
                .map(|s| (s.step as f64, f(s)))
                .collect::<Vec<_>>()
        };
        charts.push((
            "damping.png",
            line_chart(
                "Hessian-free damping (log10 lambda) per step",
                "step",
                &[series(
                    "log10 lambda",
                    pick(|s| s.report.damping_used.log10()),
                )],
            )?,
        ));
        charts.push((
            "cg_iterations.png",
            line_chart(
                "CG iterations per step",
                "step",
                &[series(
                    "iterations",
                    pick(|s| s.report.cg_iterations as f64),
                )],
            )?,
        ));
        charts.push((
            "rho.png",
            line_chart(
                "reduction ratio rho per step",
                "step",
                &[series("rho", pick(|s| s.report.rho.clamp(-2.0, 3.0)))],
            )?,
        ));
    }
    let mut written = Vec::new();
    for (name, image) in charts {
        let path = dir.join(name);
        save(&image, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// The confusion matrix as a picture: rows true classes, columns predicted, each cell shaded
/// by its share of the row and labelled with its count.
pub fn confusion_image(classes: &[String], confusion: &[Vec<u64>]) -> RgbImage {
    const CELL: u32 = 44;
    let label_w = classes.iter().map(|c| c.len()).max().unwrap_or(5) as u32 * 8 + 12;
    let k = classes.len() as u32;
    let (width, height) = (label_w + k * CELL + 10, 30 + k * CELL + 40);
    let mut image = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let black = image::Rgb([0, 0, 0]);
    draw_text(
        &mut image,
        "confusion matrix: rows true, columns predicted",
        8,
        8,
        black,
    );
    for (i, row) in confusion.iter().enumerate() {
        let total = row.iter().sum::<u64>().max(1) as f64;
        let y = 30 + i as u32 * CELL;
        draw_text(&mut image, &classes[i], 6, y + CELL / 2 - 4, black);
        for (j, &count) in row.iter().enumerate() {
            let x = label_w + j as u32 * CELL;
            let share = count as f64 / total;
            // White to blue by share of the row.
            let shade = |full: u8| (255.0 - share * (255.0 - full as f64)) as u8;
            let fill = image::Rgb([shade(31), shade(119), shade(180)]);
            for dy in 1..CELL {
                for dx in 1..CELL {
                    image.put_pixel(x + dx, y + dy, fill);
                }
            }
            let text = count.to_string();
            let ink = if share > 0.5 {
                image::Rgb([255, 255, 255])
            } else {
                black
            };
            draw_text(
                &mut image,
                &text,
                x + CELL / 2 - text.len() as u32 * 4,
                y + CELL / 2 - 4,
                ink,
            );
        }
    }
    for (j, _) in classes.iter().enumerate() {
        let x = label_w + j as u32 * CELL;
        draw_text(
            &mut image,
            &j.to_string(),
            x + CELL / 2 - 4,
            30 + k * CELL + 6,
            black,
        );
    }
    draw_text(
        &mut image,
        "predicted class (index, in row order)",
        label_w,
        30 + k * CELL + 22,
        black,
    );
    image
}

/// Writes `confusion_image` as a PNG (atomically).
pub fn write_confusion(path: &Path, classes: &[String], confusion: &[Vec<u64>]) -> Result<()> {
    save(&confusion_image(classes, confusion), path)
}
