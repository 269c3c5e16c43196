//! Text on pictures (plots, the mistakes grid) in an 8x8 bitmap font: plotters' own text
//! needs a TrueType font from the system, which a headless machine may not have.

use image::{Rgb, RgbImage};

/// Draws `text` with its top-left corner at (x, y) in the 8x8 font (ASCII; others as '?').
pub fn draw_text(canvas: &mut RgbImage, text: &str, x: u32, y: u32, color: Rgb<u8>) {
    for (i, c) in text.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY[if c.is_ascii() {
            c as usize
        } else {
            '?' as usize
        }];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                // Bit 0 is the leftmost pixel.
                if bits & (1 << col) != 0 {
                    let (px, py) = (x + i as u32 * 8 + col, y + row as u32);
                    if px < canvas.width() && py < canvas.height() {
                        canvas.put_pixel(px, py, color);
                    }
                }
            }
        }
    }
}
