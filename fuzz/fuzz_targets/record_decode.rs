//! Record decoding: any bytes, any salt. Decoding never panics, never
//! reads past the input, and a record it returns re-encodes to the same
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringship::internals::frame::{self, Records, Seed, Stamp};

fuzz_target!(|data: &[u8]| {
    let (salt, bytes) = match data.split_first_chunk::<8>() {
        Some((salt, rest)) => (u64::from_le_bytes(*salt), rest),
        None => (0, data),
    };
    let seed = if salt == 0 {
        Seed::NONE
    } else {
        Seed::of_salt(salt)
    };
    if let Ok((record, used)) = frame::decode_seeded(bytes, seed) {
        assert!(used <= bytes.len());
        // encode_into never allocates: it asserts the room is there.
        let mut again = Vec::with_capacity(used);
        let stamp = Stamp {
            append_ts_ns: record.append_ts_ns,
            kind: record.kind,
            continued: record.continued,
            seed,
        };
        frame::encode_stamped_into(&mut again, record.seq, stamp, record.payload);
        assert_eq!(&again[..], &bytes[..used]);
    }
    let mut walk = Records::verified_seeded(bytes, seed);
    while let Some(Ok(_)) = walk.next() {}
    assert!(walk.offset() <= bytes.len());
});
