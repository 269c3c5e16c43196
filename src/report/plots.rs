//! PNG plots of a run, in `<run>/plots/`: train and test loss and accuracy and the learning
//! rate per epoch, and for Hessian-free the damping, CG iterations and rho per step.
//! Rewritten after every epoch, and by `hftrain plot <run>` from the run's CSV files.
//!
//! plotters draws the axes, grid and lines into an RGB buffer; the text (title, legend, tick
//! labels) is drawn by `text.rs` with an embedded font, because plotters' own text needs a
//! TrueType font from the system, which a headless machine may not have.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::RgbImage;
use plotters::prelude::*;

use crate::report::text::{LINE, draw_text, text_width};
use crate::store::metrics::{EpochMetrics, StepMetrics};
use crate::support::fsutil::write_atomic;

const WIDTH: u32 = 640;
const HEIGHT: u32 = 400;
/// Margins for the text around the plotting area.
const LEFT: u32 = 90;
const RIGHT: u32 = 20;
const TOP: u32 = 44;
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

/// Tick marks at round numbers (1, 2, 2.5 or 5 times a power of ten; whole numbers only
/// where `integer`), at most about `most` of them, covering `lo..hi`: the axis range they
/// span, the ticks, and the decimals their labels need.
fn ticks(lo: f64, hi: f64, most: usize, integer: bool) -> (f64, f64, Vec<f64>, usize) {
    let raw = (hi - lo).max(f64::MIN_POSITIVE) / most as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        // 2.5 x 10^k is no whole number below 10.
        .filter(|&m| !(integer && m == 2.5))
        .map(|m| m * magnitude)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * magnitude);
    if integer {
        step = step.max(1.0).round();
    }
    let (first, last) = ((lo / step).floor(), (hi / step).ceil());
    let ticks: Vec<f64> = (0..=(last - first) as usize)
        .map(|i| (first + i as f64) * step)
        .collect();
    // Enough decimals for the step (2.5 needs one more than 2).
    let decimals = if integer {
        0
    } else {
        let d = (-step.log10().floor()).max(0.0) as usize;
        if (step / 10f64.powi(-(d as i32)) - (step / 10f64.powi(-(d as i32))).round()).abs() > 1e-9
        {
            d + 1
        } else {
            d
        }
    };
    (first * step, last * step, ticks, decimals)
}

fn label(v: f64, decimals: usize) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.1e}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// A line chart of `series` against a shared x axis: ticks at round numbers (whole numbers
/// where every x is one, as epochs and steps are), the legend above the plot where it covers
/// no line.
pub fn line_chart(title: &str, x_name: &str, series: &[Series]) -> Result<RgbImage> {
    let (x0, x1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let whole_x = series
        .iter()
        .flat_map(|s| &s.points)
        .all(|p| p.0.fract() == 0.0);
    let (x0, x1, x_ticks, x_decimals) = ticks(x0, x1, 8, whole_x);
    let (y0, y1, y_ticks, y_decimals) = ticks(y0, y1, 5, false);
    // The legend's rows, in the margin under the title.
    let legend = legend_rows(series, WIDTH - LEFT - RIGHT);
    let top = TOP + LINE * (legend.len() as u32 - 1);
    let mut buffer = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    let corners;
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (WIDTH, HEIGHT)).into_drawing_area();
        let area = root.margin(top, BOTTOM, LEFT, RIGHT);
        let mut chart = ChartBuilder::on(&area)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| anyhow::anyhow!("cannot lay out the chart {title}: {e}"))?;
        let grid = RGBColor(225, 225, 225);
        let mut lines: Vec<[(f64, f64); 2]> = y_ticks.iter().map(|&y| [(x0, y), (x1, y)]).collect();
        lines.extend(x_ticks.iter().map(|&x| [(x, y0), (x, y1)]));
        for line in lines {
            chart
                .draw_series(LineSeries::new(line, grid))
                .map_err(|e| anyhow::anyhow!("cannot draw {title}: {e}"))?;
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
        let at = |x: f64, y: f64| chart.backend_coord(&(x, y));
        corners = (
            at(x0, y1),
            at(x1, y0),
            x_ticks.iter().map(|&x| at(x, y0).0).collect::<Vec<_>>(),
            y_ticks.iter().map(|&y| at(x0, y).1).collect::<Vec<_>>(),
        );
        root.present()
            .map_err(|e| anyhow::anyhow!("cannot draw {title}: {e}"))?;
    }
    let mut image =
        RgbImage::from_raw(WIDTH, HEIGHT, buffer).expect("the buffer has the image's size");
    let ((left, _), (right, bottom), x_at, y_at) = corners;
    let (left, right, bottom) = (
        left.max(0) as u32,
        right.max(0) as u32,
        bottom.max(0) as u32,
    );
    let black = image::Rgb([0, 0, 0]);
    draw_text(&mut image, title, left, 4, black);
    for (&y, &py) in y_ticks.iter().zip(&y_at) {
        let text = label(y, y_decimals);
        let x = left.saturating_sub(text.len() as u32 * 8 + 6);
        draw_text(
            &mut image,
            &text,
            x,
            (py.max(0) as u32).saturating_sub(4),
            black,
        );
    }
    for (&x, &px) in x_ticks.iter().zip(&x_at) {
        let text = label(x, x_decimals);
        let px = (px.max(0) as u32).saturating_sub(text_width(&text) / 2);
        draw_text(&mut image, &text, px, bottom + 4, black);
    }
    draw_text(
        &mut image,
        x_name,
        right.saturating_sub(text_width(x_name)),
        bottom + 4 + LINE,
        black,
    );
    for (row, entries) in legend.iter().enumerate() {
        let y = 4 + LINE * (row as u32 + 1);
        for &(x, i) in entries {
            let color = COLORS[i % COLORS.len()];
            let rgb = image::Rgb([color.0, color.1, color.2]);
            // A short stroke of the line's colour, then its name.
            for dy in LINE / 2 - 1..LINE / 2 + 1 {
                for dx in 0..12 {
                    image.put_pixel(left + x + dx, y + dy, rgb);
                }
            }
            draw_text(&mut image, &series[i].name, left + x + 16, y, rgb);
        }
    }
    Ok(image)
}

/// The legend laid out in rows that fit `width`: (x offset, series index) per entry.
fn legend_rows(series: &[Series], width: u32) -> Vec<Vec<(u32, usize)>> {
    let mut rows: Vec<Vec<(u32, usize)>> = vec![Vec::new()];
    let mut x = 0;
    for (i, s) in series.iter().enumerate() {
        let entry = 16 + text_width(&s.name) + 16;
        if x > 0 && x + entry > width {
            rows.push(Vec::new());
            x = 0;
        }
        rows.last_mut().expect("a row").push((x, i));
        x += entry;
    }
    rows
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

/// The per-step charts: (file, title, series label, step-log column, transform).
type StepChart = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    fn(f64) -> f64,
);
const STEP_CHARTS: [StepChart; 3] = [
    (
        "damping.png",
        "Hessian-free damping (log10 lambda) per step",
        "log10 lambda",
        "damping_used",
        f64::log10,
    ),
    (
        "cg_iterations.png",
        "CG iterations per step",
        "iterations",
        "cg_iterations",
        |n| n,
    ),
    (
        "rho.png",
        "reduction ratio rho per step",
        "rho",
        "rho",
        |rho| rho.clamp(-2.0, 3.0),
    ),
];

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
    for (name, title, label, column, transform) in STEP_CHARTS {
        let points: Vec<(f64, f64)> = steps
            .unwrap_or_default()
            .iter()
            .filter_map(|s| Some((s.step as f64, transform(s.number(column)?))))
            .collect();
        // Drawn where the optimizer's step log has the column; one drawn before from rows
        // that are gone would show what the run no longer says.
        if points.is_empty() {
            let _ = std::fs::remove_file(dir.join(name));
        } else {
            charts.push((name, line_chart(title, "step", &[series(label, points)])?));
        }
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
    let label_w = classes.iter().map(|c| text_width(c)).max().unwrap_or(40) + 12;
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
        draw_text(&mut image, &classes[i], 6, y + CELL / 2 - LINE / 2, black);
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
                x + CELL / 2 - text_width(&text) / 2,
                y + CELL / 2 - LINE / 2,
                ink,
            );
        }
    }
    for (j, _) in classes.iter().enumerate() {
        let x = label_w + j as u32 * CELL;
        draw_text(
            &mut image,
            &j.to_string(),
            x + CELL / 2 - text_width(&j.to_string()) / 2,
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
