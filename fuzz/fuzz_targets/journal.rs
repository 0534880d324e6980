//! Any bytes as a journal: parsed into records (a torn last line left out) or an error naming a
//! line, never a panic; the good prefix re-parses to the same records, and the records written
//! back re-parse to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onboard::journal::parse_records;

fuzz_target!(|data: &[u8]| {
    match parse_records(data) {
        Ok(p) => {
            let good = usize::try_from(p.good_len).expect("fits");
            assert!(good <= data.len());
            let again = parse_records(&data[..good]).expect("the good prefix parses");
            assert_eq!(again.records, p.records);
            let mut text = Vec::new();
            for r in &p.records {
                text.extend(serde_json::to_vec(r).expect("a parsed record serializes"));
                text.push(b'\n');
            }
            assert_eq!(parse_records(&text).expect("written records parse").records, p.records);
        }
        Err((line, _)) => assert!(line >= 1),
    }
});
