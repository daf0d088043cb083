//! QR codes in the terminal: turns the gateway's QR PNG back into its module grid and prints it with Unicode half blocks.
//!
//! The gateway hands out the WhatsApp login QR only as a PNG data URL. Printing it needs the
//! module grid, not the pixels: we binarize the image, take the symbol's extent from its dark
//! pixels, measure the module pitch on the top-left finder pattern (its top row is exactly 7
//! dark modules), check all three finder patterns, and sample every module at its centre.
//! Two module rows share one text row (`▀`, `▄`, `█`, space), so the code stays square-ish
//! and fits an 80-column terminal up to version 17.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;

/// The light margin printed around the symbol, in modules. The standard asks for 4; 2 scans
/// fine on a screen and keeps larger codes within 80 columns.
pub const TERMINAL_QUIET_ZONE: usize = 2;

/// The largest PNG we decode (a QR of any version at a sane scale is far below this).
const MAX_DECODE_BYTES: usize = 16 * 1024 * 1024;

/// A square QR symbol: `size` × `size` modules, `true` = dark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleMatrix {
    size: usize,
    dark: Vec<bool>,
}

impl ModuleMatrix {
    /// An all-light matrix of `size` × `size` modules.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            dark: vec![false; size * size],
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn is_dark(&self, row: usize, col: usize) -> bool {
        self.dark[row * self.size + col]
    }

    pub fn set(&mut self, row: usize, col: usize, dark: bool) {
        self.dark[row * self.size + col] = dark;
    }

    /// Whether the module `dr` rows and `dc` columns into a finder pattern must be dark: the
    /// outer ring and the 3×3 core are, the ring between them is not.
    fn finder_expects_dark(dr: usize, dc: usize) -> bool {
        let ring = dr.abs_diff(3).max(dc.abs_diff(3));
        ring != 2
    }
}

/// The PNG bytes of a `data:image/png;base64,…` URL.
pub fn png_from_data_url(url: &str) -> Result<Vec<u8>> {
    const PREFIX: &str = "data:image/png;base64,";
    let encoded = url.strip_prefix(PREFIX).ok_or_else(|| {
        anyhow!(
            "the QR code is not a PNG data URL (it starts with {:?})",
            url.chars().take(30).collect::<String>()
        )
    })?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .context("the QR code's data URL is not valid base64")
}

/// Decodes a PNG and recovers the QR module grid it shows.
pub fn modules_from_png(png_bytes: &[u8]) -> Result<ModuleMatrix> {
    let image = Bitmap::decode(png_bytes)?;
    image.modules()
}

/// The symbol as text: each line covers two module rows, light modules are drawn (`█`), dark
/// ones are left blank, with `quiet` light modules around. With `ansi`, every line is
/// painted white on black so the code reads right on light and dark terminal themes alike;
/// without it, the drawing assumes light text on a dark background (most terminals).
pub fn render_half_blocks(matrix: &ModuleMatrix, quiet: usize, ansi: bool) -> String {
    let total = matrix.size() + 2 * quiet;
    let light = |row: usize, col: usize| -> bool {
        if row < quiet || col < quiet {
            return true;
        }
        let (r, c) = (row - quiet, col - quiet);
        r >= matrix.size() || c >= matrix.size() || !matrix.is_dark(r, c)
    };
    let mut out = String::new();
    for pair in (0..total).step_by(2) {
        if ansi {
            out.push_str(&crate::style::QR.render().to_string());
        }
        for col in 0..total {
            let top = light(pair, col);
            // An odd total leaves the last text row's lower half outside the symbol: quiet zone.
            let bottom = pair + 1 >= total || light(pair + 1, col);
            out.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        if ansi {
            out.push_str(&crate::style::QR.render_reset().to_string());
        }
        out.push('\n');
    }
    out
}

/// A decoded image reduced to dark/light pixels.
struct Bitmap {
    width: usize,
    height: usize,
    dark: Vec<bool>,
}

impl Bitmap {
    fn decode(png_bytes: &[u8]) -> Result<Self> {
        let mut decoder = png::Decoder::new_with_limits(
            std::io::Cursor::new(png_bytes),
            png::Limits {
                bytes: MAX_DECODE_BYTES,
            },
        );
        // Palette, 1/2/4-bit grey and 16-bit samples all become 8-bit grey or RGB(A).
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder
            .read_info()
            .context("the QR code is not a valid PNG")?;
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| anyhow!("the QR code's PNG is too large to decode"))?;
        let mut buffer = vec![0; size];
        let info = reader
            .next_frame(&mut buffer)
            .context("the QR code's PNG data is damaged")?;
        let channels = match info.color_type {
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Indexed => bail!("the QR code's PNG palette could not be expanded"),
        };
        let (width, height) = (info.width as usize, info.height as usize);
        let mut dark = Vec::with_capacity(width * height);
        for y in 0..height {
            let line = &buffer[y * info.line_size..][..width * channels];
            for pixel in line.chunks_exact(channels) {
                dark.push(luminance_on_white(pixel) < 128.0);
            }
        }
        Ok(Self {
            width,
            height,
            dark,
        })
    }

    fn is_dark(&self, x: usize, y: usize) -> bool {
        self.dark[y * self.width + x]
    }

    /// The smallest rectangle holding every dark pixel: the symbol without its quiet zone
    /// (its top-left, top-right and bottom-left corners are finder patterns, dark to the edge).
    fn dark_extent(&self) -> Option<(usize, usize, usize, usize)> {
        let (mut left, mut top, mut right, mut bottom) = (usize::MAX, usize::MAX, 0, 0);
        for y in 0..self.height {
            for x in 0..self.width {
                if self.is_dark(x, y) {
                    left = left.min(x);
                    right = right.max(x);
                    top = top.min(y);
                    bottom = bottom.max(y);
                }
            }
        }
        (left != usize::MAX).then_some((left, top, right, bottom))
    }

    fn modules(&self) -> Result<ModuleMatrix> {
        let not_a_qr = |why: &str| anyhow!("the gateway's image is not a readable QR code: {why}");
        let (left, top, right, bottom) = self
            .dark_extent()
            .ok_or_else(|| not_a_qr("it has no dark pixels"))?;
        // The top row of the top-left finder pattern: 7 dark modules, then a light separator.
        let run = (left..=right).take_while(|&x| self.is_dark(x, top)).count();
        let pitch_guess = run as f64 / 7.0;
        if pitch_guess < 1.0 {
            return Err(not_a_qr("no finder pattern in the top-left corner"));
        }
        let (width, height) = ((right - left + 1) as f64, (bottom - top + 1) as f64);
        let size = (width / pitch_guess).round() as usize;
        if size != (height / pitch_guess).round() as usize {
            return Err(not_a_qr("the symbol is not square"));
        }
        if !(21..=177).contains(&size) || !(size - 17).is_multiple_of(4) {
            return Err(not_a_qr(&format!(
                "{size} modules across is no QR version (21, 25, … 177)"
            )));
        }
        let (pitch_x, pitch_y) = (width / size as f64, height / size as f64);
        let mut matrix = ModuleMatrix::new(size);
        for row in 0..size {
            for col in 0..size {
                let x = left + ((col as f64 + 0.5) * pitch_x) as usize;
                let y = top + ((row as f64 + 0.5) * pitch_y) as usize;
                matrix.set(row, col, self.is_dark(x.min(right), y.min(bottom)));
            }
        }
        for (name, top_row, left_col) in [
            ("top-left", 0, 0),
            ("top-right", 0, size - 7),
            ("bottom-left", size - 7, 0),
        ] {
            let intact = (0..7).all(|dr| {
                (0..7).all(|dc| {
                    matrix.is_dark(top_row + dr, left_col + dc)
                        == ModuleMatrix::finder_expects_dark(dr, dc)
                })
            });
            if !intact {
                return Err(not_a_qr(&format!("no finder pattern in the {name} corner")));
            }
        }
        Ok(matrix)
    }
}

/// The pixel's brightness (0 black … 255 white), transparent parts counted as white paper.
fn luminance_on_white(pixel: &[u8]) -> f64 {
    let (grey, alpha) = match pixel {
        [g] => (f64::from(*g), 255.0),
        [g, a] => (f64::from(*g), f64::from(*a)),
        [r, g, b] => (luma(*r, *g, *b), 255.0),
        [r, g, b, a] => (luma(*r, *g, *b), f64::from(*a)),
        _ => (255.0, 0.0),
    };
    let alpha = alpha / 255.0;
    grey * alpha + 255.0 * (1.0 - alpha)
}

fn luma(r: u8, g: u8, b: u8) -> f64 {
    0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b)
}

/// A one-line description of the symbol, e.g. "QR version 10 (57×57 modules)".
pub fn describe(matrix: &ModuleMatrix) -> String {
    format!(
        "QR version {} ({}×{} modules)",
        (matrix.size() - 17) / 4,
        matrix.size(),
        matrix.size()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symbol of `size` modules with the three finder patterns, their separators, the timing
    /// patterns and pseudo-random data (a fixed xorshift seed) everywhere else.
    fn sample_symbol(size: usize, seed: u64) -> ModuleMatrix {
        let mut m = ModuleMatrix::new(size);
        let mut state = seed;
        for row in 0..size {
            for col in 0..size {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                m.set(row, col, state & 1 == 1);
            }
        }
        for (top, left) in [(0, 0), (0, size - 7), (size - 7, 0)] {
            // Separator: one light module around each finder pattern, inside the symbol.
            for dr in -1i64..=7 {
                for dc in -1i64..=7 {
                    let (r, c) = (top as i64 + dr, left as i64 + dc);
                    if (0..size as i64).contains(&r) && (0..size as i64).contains(&c) {
                        m.set(r as usize, c as usize, false);
                    }
                }
            }
            for dr in 0..7 {
                for dc in 0..7 {
                    m.set(
                        top + dr,
                        left + dc,
                        ModuleMatrix::finder_expects_dark(dr, dc),
                    );
                }
            }
        }
        for i in 8..size - 8 {
            m.set(6, i, i % 2 == 0);
            m.set(i, 6, i % 2 == 0);
        }
        m
    }

    /// The symbol as a PNG: `scale` pixels per module, `quiet` light modules around, in the
    /// given colour type (what the `qrcode` npm package and others write).
    fn encode_png(m: &ModuleMatrix, scale: usize, quiet: usize, color: png::ColorType) -> Vec<u8> {
        let side = (m.size() + 2 * quiet) * scale;
        let channels = match color {
            png::ColorType::Grayscale => 1,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unsupported test colour type {other:?}"),
        };
        let mut pixels = Vec::with_capacity(side * side * channels);
        for y in 0..side {
            for x in 0..side {
                let (row, col) = (y / scale, x / scale);
                let dark = row >= quiet
                    && col >= quiet
                    && row - quiet < m.size()
                    && col - quiet < m.size()
                    && m.is_dark(row - quiet, col - quiet);
                let value = if dark { 0 } else { 255 };
                match channels {
                    1 => pixels.push(value),
                    3 => pixels.extend([value; 3]),
                    // Light pixels fully transparent: they must read as paper, not as black.
                    _ => pixels.extend([value, value, value, if dark { 255 } else { 0 }]),
                }
            }
        }
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, side as u32, side as u32);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&pixels).unwrap();
        writer.finish().unwrap();
        bytes
    }

    /// Reads `render_half_blocks` output (no ANSI) back into modules.
    fn parse_half_blocks(text: &str, quiet: usize, size: usize) -> ModuleMatrix {
        let mut light = Vec::new();
        for line in text.lines() {
            let (mut top, mut bottom) = (Vec::new(), Vec::new());
            for ch in line.chars() {
                let (t, b) = match ch {
                    '█' => (true, true),
                    '▀' => (true, false),
                    '▄' => (false, true),
                    ' ' => (false, false),
                    other => panic!("unexpected character {other:?}"),
                };
                top.push(t);
                bottom.push(b);
            }
            light.push(top);
            light.push(bottom);
        }
        let mut m = ModuleMatrix::new(size);
        for row in 0..size {
            for col in 0..size {
                m.set(row, col, !light[row + quiet][col + quiet]);
            }
        }
        m
    }

    #[test]
    fn the_module_matrix_round_trips_through_png_and_text() {
        for (size, scale, quiet, color) in [
            (21, 1, 0, png::ColorType::Grayscale),
            (25, 4, 4, png::ColorType::Grayscale),
            (37, 6, 4, png::ColorType::Rgb),
            (57, 3, 2, png::ColorType::Rgba),
            (177, 2, 1, png::ColorType::Grayscale),
        ] {
            let symbol = sample_symbol(size, size as u64 * 7919);
            let png_bytes = encode_png(&symbol, scale, quiet, color);
            let decoded = modules_from_png(&png_bytes)
                .unwrap_or_else(|e| panic!("size {size} scale {scale}: {e:#}"));
            assert_eq!(decoded, symbol, "size {size}, scale {scale}, {color:?}");

            let text = render_half_blocks(&decoded, TERMINAL_QUIET_ZONE, false);
            let lines: Vec<&str> = text.lines().collect();
            let total = size + 2 * TERMINAL_QUIET_ZONE;
            assert_eq!(lines.len(), total.div_ceil(2));
            assert!(lines.iter().all(|l| l.chars().count() == total));
            // The quiet zone is light all around: the first line is full blocks.
            assert!(lines[0].chars().all(|c| c == '█'), "{}", lines[0]);
            assert_eq!(
                parse_half_blocks(&text, TERMINAL_QUIET_ZONE, size),
                symbol,
                "text round trip, size {size}"
            );
        }
    }

    #[test]
    fn ansi_rendering_paints_every_line_and_resets_it() {
        let symbol = sample_symbol(21, 1);
        let text = render_half_blocks(&symbol, 2, true);
        for line in text.lines() {
            let (on, off) = (
                crate::style::QR.render().to_string(),
                crate::style::QR.render_reset().to_string(),
            );
            assert!(on.contains("97") && on.contains("40"), "{on:?}");
            assert!(line.starts_with(&on) && line.ends_with(&off));
        }
    }

    #[test]
    fn data_urls_and_non_qr_images_are_refused_with_the_cause() {
        let symbol = sample_symbol(29, 3);
        let png_bytes = encode_png(&symbol, 3, 4, png::ColorType::Grayscale);
        let url = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&png_bytes)
        );
        assert_eq!(png_from_data_url(&url).unwrap(), png_bytes);
        let err = png_from_data_url("data:image/jpeg;base64,AAAA").unwrap_err();
        assert!(err.to_string().contains("not a PNG data URL"), "{err}");

        let blank = encode_png(&ModuleMatrix::new(21), 2, 2, png::ColorType::Grayscale);
        let err = modules_from_png(&blank).unwrap_err();
        assert!(err.to_string().contains("no dark pixels"), "{err}");

        // A symbol whose bottom-left finder pattern was wiped is not a QR code.
        let mut broken = sample_symbol(25, 5);
        for dr in 0..7 {
            for dc in 0..7 {
                broken.set(18 + dr, dc, false);
            }
        }
        broken.set(24, 0, true);
        let err =
            modules_from_png(&encode_png(&broken, 2, 2, png::ColorType::Grayscale)).unwrap_err();
        assert!(err.to_string().contains("bottom-left"), "{err}");

        assert!(modules_from_png(b"not a png").is_err());
    }
}
