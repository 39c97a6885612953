//! Frame encode and decode+verify, 100 B and 4 KiB payloads.
//!
//! `cargo bench --bench frame` prints records/s (elements) and bytes/s.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringship::internals::frame;
use std::hint::black_box;

const RECORDS_PER_ITER: usize = 1000;

fn frame_bench(c: &mut Criterion) {
    for payload_bytes in [100usize, 4096] {
        let payload = vec![b'x'; payload_bytes];
        let encoded = frame::encoded_len_bytes(payload_bytes);
        let mut group = c.benchmark_group(format!("frame/{payload_bytes}B"));
        group.throughput(Throughput::Elements(RECORDS_PER_ITER as u64));
        let mut buf = Vec::with_capacity(encoded * RECORDS_PER_ITER);
        group.bench_function("encode", |b| {
            b.iter(|| {
                buf.clear();
                for seq in 1..=RECORDS_PER_ITER as u64 {
                    frame::encode_into(&mut buf, seq, seq, black_box(&payload));
                }
                black_box(buf.len())
            })
        });
        let mut bytes = Vec::with_capacity(encoded * RECORDS_PER_ITER);
        for seq in 1..=RECORDS_PER_ITER as u64 {
            frame::encode_into(&mut bytes, seq, seq, &payload);
        }
        group.bench_function("decode_verify", |b| {
            b.iter(|| {
                let mut at = 0;
                let mut sum = 0u64;
                while at < bytes.len() {
                    let (rec, used) = frame::decode(black_box(&bytes[at..])).unwrap();
                    sum += rec.seq;
                    at += used;
                }
                black_box(sum)
            })
        });
        group.finish();
        let mut group = c.benchmark_group(format!("frame_bytes/{payload_bytes}B"));
        group.throughput(Throughput::Bytes((encoded * RECORDS_PER_ITER) as u64));
        group.bench_function("decode_verify", |b| {
            b.iter(|| {
                let mut at = 0;
                while at < bytes.len() {
                    at += frame::decode(black_box(&bytes[at..])).unwrap().1;
                }
                black_box(at)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, frame_bench);
criterion_main!(benches);
