//! Image decoding with size limits, and preprocessing into the bundle's input tensor layout.

use std::io::Cursor;
use std::path::Path;

use image::{imageops::FilterType, DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

use crate::bundle::InputSpec;

/// Largest accepted image side in pixels; larger headers are refused before decoding.
pub const MAX_SIDE: u32 = 8192;
/// Largest accepted pixel count (width x height), checked from the header before decoding: a
/// board-sized budget that bounds the decoded frame (72 MB as 8-bit RGB) whatever the format.
pub const MAX_PIXELS: u64 = 24_000_000;
/// Largest accepted file size in bytes.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest decoder allocation in bytes.
pub const MAX_DECODE_ALLOC: u64 = 256 * 1024 * 1024;

/// Why an image was skipped.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// The file is empty.
    #[error("empty file")]
    Empty,
    /// The file exceeds [`MAX_FILE_BYTES`].
    #[error("file of {0} bytes exceeds the {MAX_FILE_BYTES}-byte limit")]
    TooLarge(u64),
    /// The content is not a decodable image, or exceeds the decode limits.
    #[error("cannot decode: {0}")]
    Decode(#[from] image::ImageError),
    /// The content's format contradicts the file name's extension.
    #[error("content is {content} but the name says {named}")]
    FormatMismatch {
        /// Format found in the content.
        content: String,
        /// Format the extension names.
        named: String,
    },
    /// A JPEG stream stops before its end-of-image marker (lost or cut-off data).
    #[error("truncated JPEG: no end-of-image marker")]
    TruncatedJpeg,
    /// The header claims a side beyond [`MAX_SIDE`] or more than [`MAX_PIXELS`] pixels; the
    /// image is not decoded.
    #[error("header claims {0}x{1} pixels, beyond the limits ({MAX_SIDE} per side, {MAX_PIXELS} in all); not decoded")]
    TooManyPixels(u32, u32),
    /// The decoded image is too small to carry information.
    #[error("image of {0}x{1} pixels is below the 8x8 minimum")]
    TooSmall(u32, u32),
}

/// Reads and decodes an image file within the size limits above. The format is read from the
/// content; a content that contradicts a known image extension (a PNG named `.JPG`) is refused.
pub fn decode_file(path: &Path) -> Result<DynamicImage, ImageError> {
    let mut bytes = Vec::new();
    read_checked(path, &mut bytes)?;
    decode_bytes(&bytes)
}

/// Reads `path` into `bytes` (replacing its content, reusing its capacity) after the file-size
/// checks, and refuses a content that contradicts a known image extension.
fn read_checked(path: &Path, bytes: &mut Vec<u8>) -> Result<(), ImageError> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if meta.len() == 0 {
        return Err(ImageError::Empty);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ImageError::TooLarge(meta.len()));
    }
    bytes.clear();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES)
        .read_to_end(bytes)?;
    if let Some(named) = path
        .extension()
        .and_then(|e| e.to_str())
        .and_then(image::ImageFormat::from_extension)
    {
        if let Ok(content) = image::guess_format(bytes) {
            if content != named {
                return Err(ImageError::FormatMismatch {
                    content: format!("{content:?}").to_uppercase(),
                    named: format!("{named:?}").to_uppercase(),
                });
            }
        }
    }
    Ok(())
}

/// Decodes an in-memory image within the size limits above.
pub fn decode_bytes(bytes: &[u8]) -> Result<DynamicImage, ImageError> {
    let img = checked_reader(bytes)?.decode()?;
    if img.width() < 8 || img.height() < 8 {
        return Err(ImageError::TooSmall(img.width(), img.height()));
    }
    Ok(img)
}

/// A reader over `bytes` that passed the content checks (non-empty, complete JPEG, header
/// within [`MAX_SIDE`] and [`MAX_PIXELS`]) with the decode limits set.
fn checked_reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !has_jpeg_eoi(bytes) {
        return Err(ImageError::TruncatedJpeg);
    }
    let (w, h) = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()?
        .into_dimensions()?;
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(ImageError::TooManyPixels(w, h));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    Ok(reader)
}

/// Buffers reused from image to image by [`DecodeBuffers::load_resized`]: the file's bytes and
/// the decoded frame.
#[derive(Debug, Default)]
pub struct DecodeBuffers {
    file: Vec<u8>,
    frame: Vec<u8>,
}

impl DecodeBuffers {
    /// [`content_hash`] of the file [`Self::load_resized`] read last (of no bytes before any).
    pub fn last_file_hash(&self) -> u64 {
        content_hash(&self.file)
    }

    /// Reads, checks and decodes `path` like [`decode_file`] and resizes it like
    /// [`resize_rgb`], into the same image. An 8-bit RGB image (every camera JPEG) is decoded
    /// into the reused frame buffer; any other pixel format goes through [`decode_bytes`].
    pub fn load_resized(&mut self, path: &Path, spec: &InputSpec) -> Result<RgbImage, ImageError> {
        read_checked(path, &mut self.file)?;
        let decoder = checked_reader(&self.file)?.into_decoder()?;
        let (w, h) = decoder.dimensions();
        if w < 8 || h < 8 {
            return Err(ImageError::TooSmall(w, h));
        }
        if decoder.color_type() != image::ColorType::Rgb8 {
            let img = DynamicImage::from_decoder(decoder)?;
            return Ok(resize_rgb(&img, spec));
        }
        let len = decoder.total_bytes();
        if len > MAX_DECODE_ALLOC {
            return Err(ImageError::Decode(image::ImageError::Limits(
                image::error::LimitError::from_kind(
                    image::error::LimitErrorKind::InsufficientMemory,
                ),
            )));
        }
        self.frame.resize(len as usize, 0);
        decoder.read_image(&mut self.frame)?;
        let mismatch = || {
            ImageError::Decode(image::ImageError::Parameter(
                image::error::ParameterError::from_kind(
                    image::error::ParameterErrorKind::DimensionMismatch,
                ),
            ))
        };
        if w == spec.width && h == spec.height {
            return RgbImage::from_raw(w, h, self.frame.clone()).ok_or_else(mismatch);
        }
        let frame = image::ImageBuffer::<image::Rgb<u8>, &[u8]>::from_raw(w, h, &self.frame[..])
            .ok_or_else(mismatch)?;
        Ok(image::imageops::resize(
            &frame,
            spec.width,
            spec.height,
            FilterType::Triangle,
        ))
    }
}

/// 64-bit FNV-1a hash of a file's bytes: a fast content fingerprint, stable across builds and
/// machines (it is stored in journals), to find byte-identical copies. Not a cryptographic hash.
pub fn content_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether a JPEG stream ends with the end-of-image marker `FF D9` (trailing zero padding
/// allowed). Decoders fill a cut-off stream with gray; the product refuses it instead.
fn has_jpeg_eoi(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    end >= 2 && bytes[end - 2..end] == [0xFF, 0xD9]
}

/// Resizes `img` to the spec's size as RGB8 with the spec's filter.
pub fn resize_rgb(img: &DynamicImage, spec: &InputSpec) -> RgbImage {
    let rgb = img.to_rgb8();
    if rgb.width() == spec.width && rgb.height() == spec.height {
        return rgb;
    }
    image::imageops::resize(&rgb, spec.width, spec.height, FilterType::Triangle)
}

/// Writes `rgb` into `out` as a planar `[3, height, width]` f32 tensor normalized with the
/// spec's mean and std. `out.len()` must be `3 * width * height` and `rgb` must have the spec's
/// size; returns `false` (leaving `out` unspecified) otherwise.
pub fn normalize_into(rgb: &RgbImage, spec: &InputSpec, out: &mut [f32]) -> bool {
    let (w, h) = (spec.width as usize, spec.height as usize);
    let plane = w * h;
    if out.len() != 3 * plane || rgb.width() as usize != w || rgb.height() as usize != h {
        return false;
    }
    let inv = [1.0 / spec.std[0], 1.0 / spec.std[1], 1.0 / spec.std[2]];
    for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) - spec.mean[c]) * inv[c];
        }
    }
    true
}

/// Image-quality flags computed on the resized RGB image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QualityFlags {
    /// Almost no contrast: luminance standard deviation below 3 (0..255 scale).
    pub blank: bool,
    /// More than half of the pixels have a channel at 250 or above.
    pub overexposed: bool,
    /// One channel carries almost all the signal: the other two channels' means are both below
    /// 15% of its mean.
    pub dominant_channel: bool,
}

impl QualityFlags {
    /// Whether any flag is set.
    pub fn any(&self) -> bool {
        self.blank || self.overexposed || self.dominant_channel
    }
}

/// Quality flags of an RGB image (see [`QualityFlags`]).
pub fn quality_flags(rgb: &RgbImage) -> QualityFlags {
    let n = (rgb.width() as usize * rgb.height() as usize).max(1) as f64;
    let (mut sum, mut sum_sq, mut saturated) = (0.0f64, 0.0f64, 0usize);
    let mut ch = [0.0f64; 3];
    for px in rgb.as_raw().chunks_exact(3) {
        let l = 0.299 * f64::from(px[0]) + 0.587 * f64::from(px[1]) + 0.114 * f64::from(px[2]);
        sum += l;
        sum_sq += l * l;
        if px.iter().any(|&v| v >= 250) {
            saturated += 1;
        }
        for c in 0..3 {
            ch[c] += f64::from(px[c]);
        }
    }
    let mean = sum / n;
    let std = (sum_sq / n - mean * mean).max(0.0).sqrt();
    let (imax, max) = ch
        .iter()
        .enumerate()
        .fold((0, 0.0f64), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
    let dominant = max > 0.0 && (0..3).filter(|&i| i != imax).all(|i| ch[i] < 0.15 * max);
    QualityFlags {
        blank: std < 3.0,
        overexposed: saturated as f64 > 0.5 * n,
        dominant_channel: dominant,
    }
}

/// Decoded, resized and normalized tensor for `path`: `[3, height, width]` values.
pub fn load_tensor(path: &Path, spec: &InputSpec) -> Result<Vec<f32>, ImageError> {
    let img = decode_file(path)?;
    let rgb = resize_rgb(&img, spec);
    let mut out = vec![0.0; 3 * spec.width as usize * spec.height as usize];
    normalize_into(&rgb, spec, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32 (IEEE) of PNG chunks, bit by bit.
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    /// A PNG whose header claims `w x h` 8-bit RGB pixels, with an empty data chunk.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, body) in [
            (
                &b"IHDR"[..],
                [&w.to_be_bytes()[..], &h.to_be_bytes(), &[8, 2, 0, 0, 0]].concat(),
            ),
            (&b"IDAT"[..], Vec::new()),
            (&b"IEND"[..], Vec::new()),
        ] {
            out.extend((body.len() as u32).to_be_bytes());
            let chunk = [kind, &body[..]].concat();
            out.extend(&chunk);
            out.extend(crc32(&chunk).to_be_bytes());
        }
        out
    }

    #[test]
    fn a_header_over_the_pixel_budget_is_refused_before_decoding() {
        // 5000 x 5000 = 25 MP: each side is allowed, the product is not.
        let err = decode_bytes(&png_header(5000, 5000)).unwrap_err();
        assert!(
            matches!(err, ImageError::TooManyPixels(5000, 5000)),
            "{err}"
        );
        assert!(err.to_string().contains("24000000 in all"), "{err}");
        let err = decode_bytes(&png_header(9000, 10)).unwrap_err();
        assert!(matches!(err, ImageError::TooManyPixels(9000, 10)), "{err}");
        // Within the budget the header passes and decoding fails on the missing data instead.
        let err = decode_bytes(&png_header(4000, 4000)).unwrap_err();
        assert!(!matches!(err, ImageError::TooManyPixels(..)), "{err}");
    }

    fn spec(w: u32, h: u32) -> InputSpec {
        InputSpec {
            width: w,
            height: h,
            channel_order: "rgb".into(),
            resize: "triangle".into(),
            mean: [127.0; 3],
            std: [128.0; 3],
        }
    }

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 255]));
        let mut buf = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png)
            .unwrap();
        buf
    }

    #[test]
    fn normalizes_planar_rgb() {
        let s = spec(16, 16);
        let img = decode_bytes(&png_bytes(16, 16)).unwrap();
        let rgb = resize_rgb(&img, &s);
        let mut out = vec![0.0; 3 * 16 * 16];
        assert!(normalize_into(&rgb, &s, &mut out));
        assert_eq!(out[0], (0.0 - 127.0) / 128.0);
        assert_eq!(out[16 * 16 + 16 * 3 + 2], (3.0 - 127.0) / 128.0);
        assert_eq!(out[2 * 256], (255.0 - 127.0) / 128.0);
    }

    #[test]
    fn refuses_garbage_empty_and_tiny() {
        assert!(matches!(decode_bytes(b""), Err(ImageError::Empty)));
        assert!(matches!(
            decode_bytes(b"not an image"),
            Err(ImageError::Decode(_))
        ));
        assert!(matches!(
            decode_bytes(&png_bytes(1, 1)),
            Err(ImageError::TooSmall(1, 1))
        ));
        let png = png_bytes(32, 32);
        assert!(decode_bytes(&png[..png.len() / 2]).is_err());
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(RgbImage::new(32, 32))
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(decode_bytes(&jpeg).is_ok());
        jpeg.extend_from_slice(&[0, 0]);
        assert!(decode_bytes(&jpeg).is_ok());
        assert!(matches!(
            decode_bytes(&jpeg[..jpeg.len() - 10]),
            Err(ImageError::TruncatedJpeg)
        ));
    }

    #[test]
    fn quality_flags_by_construction() {
        let flat = RgbImage::from_pixel(16, 16, image::Rgb([90, 60, 40]));
        assert_eq!(
            quality_flags(&flat),
            QualityFlags {
                blank: true,
                overexposed: false,
                dominant_channel: false
            }
        );
        let white = RgbImage::from_fn(16, 16, |x, _| {
            image::Rgb([255, 255, if x % 2 == 0 { 255 } else { 200 }])
        });
        assert!(quality_flags(&white).overexposed);
        let blue = RgbImage::from_fn(16, 16, |x, y| image::Rgb([2, 3, (x * 8 + y) as u8]));
        let q = quality_flags(&blue);
        assert!(q.dominant_channel && !q.blank && !q.overexposed);
        let ok = RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 9) as u8, (y * 9) as u8, 80])
        });
        assert!(!quality_flags(&ok).any());
    }

    #[test]
    fn normalize_checks_lengths() {
        let s = spec(8, 8);
        let rgb = RgbImage::new(8, 8);
        assert!(!normalize_into(&rgb, &s, &mut [0.0; 10]));
    }

    #[test]
    fn reused_buffers_give_the_same_image_or_the_same_error_as_a_fresh_decode() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
        let s = spec(96, 96);
        let mut buffers = DecodeBuffers::default();
        let mut files: Vec<_> = ["pass", "bad"]
            .iter()
            .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() > 20);
        for path in &files {
            let fresh = decode_file(path).map(|img| resize_rgb(&img, &s));
            let reused = buffers.load_resized(path, &s);
            match (fresh, reused) {
                (Ok(a), Ok(b)) => assert!(a == b, "{}: pixels differ", path.display()),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{}", path.display()),
                (a, b) => panic!("{}: {:?} vs {:?}", path.display(), a.err(), b.err()),
            }
        }
    }
}
