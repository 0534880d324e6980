//! Any bytes through decode, resize, normalize and quality flags: an error or a tensor of
//! finite values, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onboard::bundle::InputSpec;
use onboard::preprocess;

fuzz_target!(|data: &[u8]| {
    let Ok(img) = preprocess::decode_bytes(data) else {
        return;
    };
    let spec = InputSpec {
        width: 32,
        height: 24,
        channel_order: "rgb".into(),
        resize: "triangle".into(),
        mean: [127.0; 3],
        std: [128.0; 3],
    };
    let rgb = preprocess::resize_rgb(&img, &spec);
    let mut out = vec![0f32; 3 * 32 * 24];
    assert!(preprocess::normalize_into(&rgb, &spec, &mut out));
    assert!(out.iter().all(|v| v.is_finite()));
    let _ = preprocess::quality_flags(&rgb);
});
