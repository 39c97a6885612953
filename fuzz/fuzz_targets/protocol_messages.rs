//! Every other message on the wire: acks and Stop notices, Segment frames,
//! and the frames of the data stream (records, and seq-0 control frames
//! under an unsalted crc). Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringship::internals::frame::{self, Seed};
use ringship::internals::protocol::{ACK_BYTES, decode_ack, decode_segment_frame};

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks(ACK_BYTES) {
        let _ = decode_ack(chunk);
    }
    let _ = decode_segment_frame(data);
    let mut at = 0;
    while at < data.len() {
        match frame::decode_seeded(&data[at..], Seed::NONE) {
            Ok((_, used)) => at += used,
            Err(_) => break,
        }
    }
});
