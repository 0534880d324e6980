//! Deterministic generator of the project's image fixtures.
//!
//! `testdata-gen pass DIR` writes synthetic rover-like scenes (ground texture, horizon, sky,
//! calibration-target disks, hardware-like bars) as JPEG files; `testdata-gen bad DIR` writes
//! malformed and unusual files; `testdata-gen hostile DIR` hostile journals and science-value
//! files. The same build always writes
//! the same bytes, so the committed `testdata/pass/` can be checked against a fresh run.

use std::path::{Path, PathBuf};

mod hostile;

use anyhow::Context;
use clap::{Parser, Subcommand};
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Number of images in the pass set.
pub const PASS_COUNT: usize = 36;
/// Side of the pass-set images in pixels.
pub const PASS_SIDE: u32 = 128;

#[derive(Debug, Parser)]
#[command(
    name = "testdata-gen",
    about = "Generate the project's image fixtures deterministically"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Synthetic scenes that every stage of the pipeline accepts.
    Pass {
        /// Output folder (created; existing files of the same names are replaced).
        dir: PathBuf,
    },
    /// Malformed and unusual files that must be skipped or handled without a crash.
    Bad {
        /// Output folder (created; existing files of the same names are replaced).
        dir: PathBuf,
    },
    /// Hostile journals and science-value files (`journals/`, `values/`).
    Hostile {
        /// Output folder (created; existing files of the same names are replaced).
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy)]
enum Scene {
    Ground,
    Horizon,
    Target,
    Hardware,
}

fn noise(rng: &mut ChaCha8Rng, amp: f32) -> f32 {
    (rng.random::<f32>() - 0.5) * 2.0 * amp
}

fn clamp(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

fn ground(img: &mut RgbImage, rng: &mut ChaCha8Rng, y0: u32) {
    let base = [
        150.0 + noise(rng, 30.0),
        95.0 + noise(rng, 20.0),
        60.0 + noise(rng, 15.0),
    ];
    let pebbles: Vec<(f32, f32, f32)> = (0..rng.random_range(10..40))
        .map(|_| {
            (
                rng.random_range(0.0..PASS_SIDE as f32),
                rng.random_range(y0 as f32..PASS_SIDE as f32),
                rng.random_range(1.5..6.0),
            )
        })
        .collect();
    for y in y0..img.height() {
        for x in 0..img.width() {
            let mut shade = 1.0 + noise(rng, 0.12);
            for &(px, py, r) in &pebbles {
                let d = ((x as f32 - px).powi(2) + (y as f32 - py).powi(2)).sqrt();
                if d < r {
                    shade *= 0.6 + 0.3 * d / r;
                }
            }
            img.put_pixel(
                x,
                y,
                Rgb([
                    clamp(base[0] * shade),
                    clamp(base[1] * shade),
                    clamp(base[2] * shade),
                ]),
            );
        }
    }
}

fn sky(img: &mut RgbImage, rng: &mut ChaCha8Rng, y1: u32) {
    let tint = noise(rng, 15.0);
    for y in 0..y1 {
        let t = y as f32 / y1.max(1) as f32;
        for x in 0..img.width() {
            img.put_pixel(
                x,
                y,
                Rgb([
                    clamp(200.0 + tint - 40.0 * t),
                    clamp(160.0 + tint - 30.0 * t),
                    clamp(120.0 - 20.0 * t),
                ]),
            );
        }
    }
}

fn draw(scene: Scene, rng: &mut ChaCha8Rng) -> RgbImage {
    let s = PASS_SIDE;
    let mut img = RgbImage::new(s, s);
    match scene {
        Scene::Ground => ground(&mut img, rng, 0),
        Scene::Horizon => {
            let h = rng.random_range(s / 4..s / 2);
            sky(&mut img, rng, h);
            ground(&mut img, rng, h);
        }
        Scene::Target => {
            ground(&mut img, rng, 0);
            let (cx, cy) = (rng.random_range(40.0..88.0), rng.random_range(40.0..88.0));
            let r = rng.random_range(18.0..34.0f32);
            for y in 0..s {
                for x in 0..s {
                    let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                    if d < r {
                        let ring = ((d / r * 4.0) as u32) % 2;
                        let v = if ring == 0 { 230 } else { 40 };
                        img.put_pixel(x, y, Rgb([v, v, v]));
                    }
                }
            }
        }
        Scene::Hardware => {
            ground(&mut img, rng, 0);
            let bars = rng.random_range(2..5);
            for _ in 0..bars {
                let (x0, y0) = (rng.random_range(0..s - 20), rng.random_range(0..s - 20));
                let (w, h) = (
                    rng.random_range(10..60).min(s - x0),
                    rng.random_range(6..40).min(s - y0),
                );
                let v = rng.random_range(150..220) as u8;
                for y in y0..y0 + h {
                    for x in x0..x0 + w {
                        img.put_pixel(x, y, Rgb([v, v, v.saturating_sub(10)]));
                    }
                }
            }
        }
    }
    img
}

fn write_jpeg(path: &Path, img: &RgbImage) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(img)
        .with_context(|| format!("{}: cannot encode", path.display()))?;
    std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

/// Writes the pass set into `dir`; returns the file paths.
pub fn write_pass(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let scenes = [
        Scene::Ground,
        Scene::Horizon,
        Scene::Target,
        Scene::Hardware,
    ];
    let mut out = Vec::new();
    for i in 0..PASS_COUNT {
        let scene = scenes[i % scenes.len()];
        let mut rng = ChaCha8Rng::seed_from_u64(1000 + i as u64);
        let img = draw(scene, &mut rng);
        let name = format!("{:03}_{}.jpg", i, format!("{scene:?}").to_lowercase());
        let path = dir.join(name);
        write_jpeg(&path, &img)?;
        out.push(path);
    }
    Ok(out)
}

fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), format)?;
    Ok(bytes)
}

/// Sets the frame size in the first SOF0 segment of a baseline JPEG.
fn patch_jpeg_size(jpeg: &mut [u8], width: u16, height: u16) -> anyhow::Result<()> {
    let pos = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .context("no SOF0 marker in the generated JPEG")?;
    jpeg[pos + 5..pos + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[pos + 7..pos + 9].copy_from_slice(&width.to_be_bytes());
    Ok(())
}

/// `img` as a 4-component (CMYK, as Adobe writes it) baseline JPEG.
fn cmyk_jpeg(img: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let cmyk: Vec<u8> = img
        .pixels()
        .flat_map(|p| {
            // R = (1 - C)(1 - K), as decoders invert it: K = 1 - max, C = 1 - R / max.
            let [r, g, b] = p.0.map(f32::from);
            let max = r.max(g).max(b).max(1.0);
            let ink = |v: f32| (255.0 * (1.0 - v / max)).round() as u8;
            [ink(r), ink(g), ink(b), (255.0 - max).round() as u8]
        })
        .collect();
    let mut out = Vec::new();
    let (w, h) = (u16::try_from(img.width())?, u16::try_from(img.height())?);
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(&cmyk, w, h, jpeg_encoder::ColorType::Cmyk)
        .context("encoding the CMYK JPEG")?;
    Ok(out)
}

/// Writes the bad-input corpus into `dir`; returns the file names. Each name says what the file
/// is; `testdata/bad/README.md` lists the expected outcome of each.
pub fn write_bad(dir: &Path) -> anyhow::Result<Vec<String>> {
    use image::{DynamicImage, ImageFormat};
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let scene = DynamicImage::ImageRgb8(draw(Scene::Horizon, &mut rng));
    let jpeg = encode(&scene, ImageFormat::Jpeg)?;
    let mut huge = jpeg.clone();
    patch_jpeg_size(&mut huge, 20000, 20000)?;
    let gray = DynamicImage::ImageLuma8(scene.to_luma8());
    let sixteen = DynamicImage::ImageRgb16(scene.to_rgb16());
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("zero_bytes.JPG", Vec::new()),
        ("truncated.JPG", jpeg[..jpeg.len() / 2].to_vec()),
        ("png_named.JPG", encode(&scene, ImageFormat::Png)?),
        (
            "gif_named.JPG",
            encode(
                &DynamicImage::ImageRgba8(scene.to_rgba8()),
                ImageFormat::Gif,
            )?,
        ),
        (
            "text_named.JPG",
            b"SOL 0123 downlink log: not an image\n".to_vec(),
        ),
        (
            "one_pixel.JPG",
            encode(
                &DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([120, 80, 60]))),
                ImageFormat::Jpeg,
            )?,
        ),
        ("huge_header.JPG", huge),
        ("grayscale.JPG", encode(&gray, ImageFormat::Jpeg)?),
        ("sixteen_bit.png", encode(&sixteen, ImageFormat::Png)?),
        ("cmyk.JPG", cmyk_jpeg(&scene.to_rgb8())?),
    ];
    let mut names = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        names.push(name.to_string());
    }
    Ok(names)
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Pass { dir } => write_pass(&dir)
            .map(|files| println!("wrote {} images to {}", files.len(), dir.display())),
        Command::Bad { dir } => write_bad(&dir)
            .map(|files| println!("wrote {} files to {}", files.len(), dir.display())),
        Command::Hostile { dir } => hostile::write_hostile(&dir)
            .map(|files| println!("wrote {} files to {}", files.len(), dir.display())),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_jpeg_decodes_to_the_scene_colors() {
        let mut rng = ChaCha8Rng::seed_from_u64(77);
        let scene = draw(Scene::Horizon, &mut rng);
        let decoded = image::load_from_memory(&cmyk_jpeg(&scene).unwrap())
            .unwrap()
            .to_rgb8();
        assert_eq!(decoded.dimensions(), scene.dimensions());
        let diff: f64 = decoded
            .as_raw()
            .iter()
            .zip(scene.as_raw())
            .map(|(&a, &b)| f64::from(a.abs_diff(b)))
            .sum::<f64>()
            / scene.as_raw().len() as f64;
        assert!(diff < 8.0, "mean |decoded - scene| = {diff}");
    }

    #[test]
    fn committed_bad_set_matches_the_generator() {
        let tmp = std::env::temp_dir().join(format!("testdata-gen-bad-{}", std::process::id()));
        let names = write_bad(&tmp).unwrap();
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/bad");
        for name in &names {
            let fresh = std::fs::read(tmp.join(name)).unwrap();
            let old = std::fs::read(committed.join(name)).unwrap_or_else(|e| {
                panic!(
                    "testdata/bad/{name}: {e}; run `cargo run -p testdata-gen -- bad testdata/bad`"
                )
            });
            assert!(
                fresh == old,
                "testdata/bad/{name} differs from the generator's output"
            );
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn committed_hostile_set_matches_the_generator() {
        let tmp = std::env::temp_dir().join(format!("testdata-gen-hostile-{}", std::process::id()));
        let names = hostile::write_hostile(&tmp).unwrap();
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/hostile");
        for name in &names {
            let fresh = std::fs::read(tmp.join(name)).unwrap();
            let old = std::fs::read(committed.join(name)).unwrap_or_else(|e| {
                panic!("testdata/hostile/{name}: {e}; run `cargo run -p testdata-gen -- hostile testdata/hostile`")
            });
            assert!(
                fresh == old,
                "testdata/hostile/{name} differs from the generator's output"
            );
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn committed_pass_set_matches_the_generator() {
        let tmp = std::env::temp_dir().join(format!("testdata-gen-{}", std::process::id()));
        let files = write_pass(&tmp).unwrap();
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/pass");
        let mut names: Vec<_> = std::fs::read_dir(&committed)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names.len(), files.len(), "testdata/pass has extra or missing files; run `cargo run -p testdata-gen -- pass testdata/pass`");
        for f in &files {
            let name = f.file_name().unwrap();
            let fresh = std::fs::read(f).unwrap();
            let old = std::fs::read(committed.join(name)).unwrap();
            assert!(fresh == old, "{name:?} differs from the generator's output");
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
