//! `hftrain eval --show-mistakes N`: the N most confident mistakes as one PNG grid, each
//! image enlarged with its true and predicted class written under it.

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};

use crate::data::{Dataset, IMAGE_SIDE};
use crate::evaluation::Mistake;
use crate::report::text::{LINE, draw_text, text_width};
use crate::support::fsutil::write_atomic;

const SCALE: u32 = 3;
const COLUMNS: usize = 6;
const PAD: u32 = 6;
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const RED: Rgb<u8> = Rgb([200, 0, 0]);

/// The grid as an image: one cell per mistake, `COLUMNS` to a row.
pub fn grid(data: &Dataset, classes: &[String], mistakes: &[Mistake]) -> RgbImage {
    let side = IMAGE_SIDE as u32 * SCALE;
    let captions: Vec<(String, String)> = mistakes
        .iter()
        .map(|m| {
            (
                format!("true {}", classes[m.truth]),
                format!("pred {} {:.0}%", classes[m.predicted], 100.0 * m.confidence),
            )
        })
        .collect();
    let longest = captions
        .iter()
        .map(|(a, b)| text_width(a).max(text_width(b)))
        .max()
        .unwrap_or(0);
    let cell_w = side.max(longest) + 2 * PAD;
    let cell_h = side + 2 * LINE + 2 * PAD;
    let columns = mistakes.len().clamp(1, COLUMNS);
    let rows = mistakes.len().div_ceil(COLUMNS).max(1);
    let mut canvas = RgbImage::from_pixel(cell_w * columns as u32, cell_h * rows as u32, WHITE);
    let plane = IMAGE_SIDE * IMAGE_SIDE;
    for (k, (m, (truth, predicted))) in mistakes.iter().zip(&captions).enumerate() {
        let (x0, y0) = (
            (k % COLUMNS) as u32 * cell_w + PAD,
            (k / COLUMNS) as u32 * cell_h + PAD,
        );
        let image_x = x0 + (cell_w - 2 * PAD - side) / 2;
        // Stored channel-first: [r plane, g plane, b plane].
        let pixels = data.image(m.index);
        for y in 0..side {
            for x in 0..side {
                let p = (y / SCALE) as usize * IMAGE_SIDE + (x / SCALE) as usize;
                canvas.put_pixel(
                    image_x + x,
                    y0 + y,
                    Rgb([pixels[p], pixels[plane + p], pixels[2 * plane + p]]),
                );
            }
        }
        draw_text(&mut canvas, truth, x0, y0 + side + 2, BLACK);
        draw_text(&mut canvas, predicted, x0, y0 + side + 2 + LINE, RED);
    }
    canvas
}

/// Writes the grid as a PNG (atomically).
pub fn write_grid(
    path: &Path,
    data: &Dataset,
    classes: &[String],
    mistakes: &[Mistake],
) -> Result<()> {
    let mut bytes = Vec::new();
    grid(data, classes, mistakes)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, &bytes)
}
