//! Minimal raster drawing for the project's PNG figures: filled rectangles, lines, 8x8
//! bitmap text (ASCII) at integer scales, image blits, and atomic PNG writing.

use std::path::Path;

use font8x8::legacy::BASIC_LEGACY;
use image::{Rgb, RgbImage};

/// An RGB canvas.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// The pixels.
    pub img: RgbImage,
}

/// Color helpers.
pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
/// Black.
pub const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
/// Mid gray.
pub const GRAY: Rgb<u8> = Rgb([150, 150, 150]);

impl Canvas {
    /// A `w x h` canvas filled with `bg`.
    pub fn new(w: u32, h: u32, bg: Rgb<u8>) -> Self {
        Self {
            img: RgbImage::from_pixel(w.max(1), h.max(1), bg),
        }
    }

    /// Sets one pixel, ignoring coordinates outside the canvas.
    pub fn put(&mut self, x: i64, y: i64, c: Rgb<u8>) {
        if x >= 0
            && y >= 0
            && (x as u64) < u64::from(self.img.width())
            && (y as u64) < u64::from(self.img.height())
        {
            self.img.put_pixel(x as u32, y as u32, c);
        }
    }

    /// Fills the rectangle with top-left `(x, y)` and size `w x h` (clipped).
    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb<u8>) {
        for yy in y.max(0)..(y + h).min(i64::from(self.img.height())) {
            for xx in x.max(0)..(x + w).min(i64::from(self.img.width())) {
                self.img.put_pixel(xx as u32, yy as u32, c);
            }
        }
    }

    /// Draws a 1-pixel line (Bresenham), `thick` pixels wide.
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>, thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.rect(x - thick / 2, y - thick / 2, thick.max(1), thick.max(1), c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Writes ASCII `text` with its top-left at `(x, y)`, each glyph 8x8 pixels times `scale`;
    /// unknown characters print as `?`. Returns the width drawn.
    pub fn text(&mut self, x: i64, y: i64, text: &str, c: Rgb<u8>, scale: i64) -> i64 {
        let s = scale.max(1);
        for (k, ch) in text.chars().enumerate() {
            let code = if ch.is_ascii() && !ch.is_ascii_control() {
                ch as usize
            } else {
                '?' as usize
            };
            let glyph = BASIC_LEGACY[code];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.rect(x + (k as i64 * 8 + col) * s, y + row as i64 * s, s, s, c);
                    }
                }
            }
        }
        text.chars().count() as i64 * 8 * s
    }

    /// Copies `src` with its top-left at `(x, y)` (clipped).
    pub fn blit(&mut self, src: &RgbImage, x: i64, y: i64) {
        for (sx, sy, p) in src.enumerate_pixels() {
            self.put(x + i64::from(sx), y + i64::from(sy), *p);
        }
    }

    /// Saves as PNG through a temporary file and a rename.
    pub fn save_png(&self, path: &Path) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        image::DynamicImage::ImageRgb8(self.img.clone())
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(std::io::Error::other)?;
        crate::bundle::write_atomic(path, &bytes)
    }
}

/// Side of a contact-sheet tile in pixels.
pub const TILE: u32 = 128;

/// A grid of thumbnails (each resized to [`TILE`] pixels square) with caption lines under each,
/// `cols` per row, under a title line.
pub fn contact_sheet(title: &str, tiles: &[(RgbImage, Vec<String>)], cols: usize) -> Canvas {
    let cols = cols.max(1);
    let rows = tiles.len().div_ceil(cols).max(1);
    let lines = tiles.iter().map(|t| t.1.len()).max().unwrap_or(0) as u32;
    let (pad, cap) = (8u32, 10 * lines + 4);
    let cell_w = TILE + pad;
    let cell_h = TILE + cap + pad;
    let w = cols as u32 * cell_w + pad;
    let h = 24 + rows as u32 * cell_h + pad;
    let mut c = Canvas::new(w, h, WHITE);
    c.text(i64::from(pad), 8, title, BLACK, 1);
    for (k, (img, caption)) in tiles.iter().enumerate() {
        let x = i64::from(pad + (k % cols) as u32 * cell_w);
        let y = i64::from(24 + (k / cols) as u32 * cell_h);
        let thumb = image::imageops::resize(img, TILE, TILE, image::imageops::FilterType::Triangle);
        c.blit(&thumb, x, y);
        for (l, line) in caption.iter().enumerate() {
            let max_chars = (TILE / 8) as usize;
            let shown: String = line.chars().take(max_chars).collect();
            c.text(x, y + i64::from(TILE) + 3 + l as i64 * 10, &shown, BLACK, 1);
        }
    }
    c
}

/// A color ramp from white (0) to dark blue (1).
pub fn heat(v: f64) -> Rgb<u8> {
    let t = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    Rgb([lerp(255.0, 8.0), lerp(255.0, 48.0), lerp(255.0, 107.0)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_sets_pixels_and_clips() {
        let mut c = Canvas::new(40, 10, WHITE);
        let w = c.text(0, 0, "A1", BLACK, 1);
        assert_eq!(w, 16);
        assert!(c.img.pixels().any(|p| *p == BLACK));
        c.text(-100, -100, "offscreen", BLACK, 3);
        c.rect(30, 5, 100, 100, GRAY);
        assert_eq!(*c.img.get_pixel(39, 9), GRAY);
    }

    #[test]
    fn png_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        let mut c = Canvas::new(8, 8, WHITE);
        c.line((0, 0), (7, 7), BLACK, 1);
        c.save_png(&p).unwrap();
        let back = image::open(&p).unwrap().to_rgb8();
        assert_eq!(*back.get_pixel(3, 3), BLACK);
        assert_eq!(*back.get_pixel(7, 0), WHITE);
    }
}
