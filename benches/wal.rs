//! WAL append through the real core loop (io_uring, group commit), for
//! 100 B and 4 KiB records, with `--durability fsync` and `none`.
//!
//! Each iteration hands RECORDS_PER_ITER records to a running core and waits
//! until the durable watermark covers the last one, so the figure includes
//! the fdatasync. Commit latency percentiles come from `ringship wal-bench`
//! (see README); criterion reports records/s and bytes/s here.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringship::core::{self, CoreConfig, DurableListener};
use ringship::inbox;
use ringship::wal::Durability;

const RECORDS_PER_ITER: u64 = 20_000;

struct Notify(mpsc::Sender<u64>);
impl DurableListener for Notify {
    fn on_durable(&mut self, seq: u64) {
        let _ = self.0.send(seq);
    }
}

fn wal_bench(c: &mut Criterion) {
    for durability in [Durability::None, Durability::Fsync] {
        for payload_bytes in [100usize, 4096] {
            let tmp = tempfile::tempdir().unwrap();
            let (sender, receiver) = inbox::inbox().unwrap();
            let (tx, rx) = mpsc::channel();
            let config = CoreConfig {
                dir: tmp.path().to_path_buf(),
                shard: 0,
                cpu: Some(0),
                durability,
                wal_io: ringship::wal::WalIo::Buffered,
                sink: None,
                retain_segments: None,
                ack_timeout: Duration::ZERO,
                latency_window: None,
                spin: Duration::ZERO,
            };
            let core = std::thread::spawn(move || core::run(&config, receiver, &mut Notify(tx)));
            let payload = vec![b'x'; payload_bytes];
            let mut appended = 0u64;
            let mut group = c.benchmark_group(format!("wal_append/{durability}/{payload_bytes}B"));
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(3));
            group.throughput(Throughput::Elements(RECORDS_PER_ITER));
            group.bench_function("records", |b| {
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let mut left = RECORDS_PER_ITER;
                        while left > 0 {
                            let mut batch = sender.take().unwrap();
                            while left > 0 && batch.has_room(payload.len()) {
                                batch.push(ringship::frame::now_ns(), &payload).unwrap();
                                left -= 1;
                            }
                            sender.send(batch).unwrap();
                        }
                        appended += RECORDS_PER_ITER;
                        while rx.recv().unwrap() < appended {}
                    }
                    started.elapsed()
                })
            });
            group.finish();
            sender.close();
            core.join().unwrap().unwrap();
        }
    }
}

criterion_group!(benches, wal_bench);
criterion_main!(benches);
