//! Text on pictures (plots, the confusion matrix, the mistakes grid), drawn with an embedded
//! DejaVu Sans (the `dejavu` crate), rasterised by `ab_glyph` and blended by its coverage: no
//! system font is needed, so a headless machine draws the same pictures.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

/// The text's height in pixels (an 8 px x-height, readable at the pictures' sizes).
pub const SIZE: f32 = 14.0;
/// A line of text, top to top.
pub const LINE: u32 = 16;

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(dejavu::sans::regular()).expect("the embedded font is valid")
    })
}

/// The width `text` takes, in pixels.
pub fn text_width(text: &str) -> u32 {
    let font = font().as_scaled(PxScale::from(SIZE));
    let mut width = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = previous {
            width += font.kern(p, id);
        }
        width += font.h_advance(id);
        previous = Some(id);
    }
    width.ceil() as u32
}

/// Draws `text` with its top-left corner at (x, y), blending `color` into the canvas by
/// each pixel's coverage.
pub fn draw_text(canvas: &mut RgbImage, text: &str, x: u32, y: u32, color: Rgb<u8>) {
    let font = font().as_scaled(PxScale::from(SIZE));
    let mut pen = x as f32;
    let baseline = y as f32 + font.ascent();
    let mut previous = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = previous {
            pen += font.kern(p, id);
        }
        let glyph = id.with_scale_and_position(PxScale::from(SIZE), ab_glyph::point(pen, baseline));
        pen += font.h_advance(id);
        previous = Some(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let (px, py) = (
                bounds.min.x as i64 + gx as i64,
                bounds.min.y as i64 + gy as i64,
            );
            if px < 0 || py < 0 || px >= canvas.width() as i64 || py >= canvas.height() as i64 {
                return;
            }
            let pixel = canvas.get_pixel_mut(px as u32, py as u32);
            let c = coverage.clamp(0.0, 1.0);
            for (channel, ink) in pixel.0.iter_mut().zip(color.0) {
                *channel = (*channel as f32 * (1.0 - c) + ink as f32 * c).round() as u8;
            }
        });
    }
}
