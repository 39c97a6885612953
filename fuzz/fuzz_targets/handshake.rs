//! The handshake: hello and welcome decoding of any bytes. Never panics;
//! a hello that decodes has a valid source name and shard, and re-encodes
//! to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringship::internals::protocol::{
    HELLO_BYTES, Hello, WELCOME_BYTES, decode_welcome, welcome_rest_bytes,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = Hello::decode(data) {
        assert_eq!(hello.encode(), data);
    }
    if let Some(prefix) = data.first_chunk::<HELLO_BYTES>() {
        let _ = Hello::rest_bytes(prefix);
    }
    let _ = decode_welcome(data);
    if let Some(prefix) = data.first_chunk::<WELCOME_BYTES>() {
        let _ = welcome_rest_bytes(prefix);
    }
});
