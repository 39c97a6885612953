//! WAL append through the library API and the real shard loop (io_uring,
//! group commit), for 100 B and 4 KiB records, with `--durability fsync`
//! and `none`.
//!
//! Each iteration appends RECORDS_PER_ITER records to a running shard and
//! waits until the last one is durable, so the figure includes the
//! fdatasync. Commit latency percentiles come from `ringship wal-bench`
//! (see README); criterion reports records/s and bytes/s here.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringship::{Durability, Shard, ShardConfig};

const RECORDS_PER_ITER: u64 = 20_000;

fn wal_bench(c: &mut Criterion) {
    for durability in [Durability::None, Durability::Fsync] {
        for payload_bytes in [100usize, 4096] {
            let tmp = tempfile::tempdir().unwrap();
            let mut config = ShardConfig::new(tmp.path(), 0);
            config.cpu = Some(0);
            config.durability = durability;
            let mut shard = Shard::spawn(config).unwrap();
            let payload = vec![b'x'; payload_bytes];
            let mut group = c.benchmark_group(format!("wal_append/{durability}/{payload_bytes}B"));
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(3));
            group.throughput(Throughput::Elements(RECORDS_PER_ITER));
            group.bench_function("records", |b| {
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let ticket = shard
                            .append_all((0..RECORDS_PER_ITER).map(|_| payload.as_slice()))
                            .unwrap()
                            .expect("records were appended");
                        ticket.wait_durable().unwrap();
                    }
                    started.elapsed()
                })
            });
            group.finish();
            shard.close().unwrap();
        }
    }
}

criterion_group!(benches, wal_bench);
criterion_main!(benches);
