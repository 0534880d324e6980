//! Any bytes as a bundle manifest: parsed and validated into a manifest, or an error, never a
//! panic; an accepted manifest survives a serialize -> parse round trip.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use onboard::bundle::Manifest;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("manifest.json");
    if let Ok(m) = Manifest::parse(path, data) {
        let again = serde_json::to_vec(&m).expect("an accepted manifest serializes");
        assert_eq!(Manifest::parse(path, &again).ok(), Some(m));
    }
});
