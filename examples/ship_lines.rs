//! A complete program on ringship's library API: every line of stdin is
//! appended to a WAL, made durable, shipped to a receiver and acknowledged
//! once the receiver's own fdatasync covers it. The receiver runs in this
//! process on loopback; point `TcpConfig::peer` at a `ringship receive` on
//! another machine to ship for real.
//!
//! ```sh
//! seq 100000 | cargo run --release --example ship_lines -- /tmp/ship-lines
//! ```

use std::io::BufRead;
use std::time::Duration;

use ringship::{
    Durability, Receiver, ReceiverConfig, SendMode, Shard, ShardConfig, SinkConfig, TcpConfig,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: ship_lines DIR < lines")?;
    let dir = std::path::PathBuf::from(dir);

    let receiver = Receiver::spawn(
        "127.0.0.1:0".parse()?,
        ReceiverConfig::new(dir.join("received")),
    )?;

    let mut config = ShardConfig::new(dir.join("wal"), 0);
    config.durability = Durability::Fsync;
    config.sink = Some(SinkConfig::Tcp(TcpConfig {
        peer: receiver.local_addr(),
        source: "example".into(),
        send_mode: SendMode::Splice,
    }));
    let mut shard = Shard::spawn(config)?;
    println!(
        "the WAL in {} holds {} records from earlier runs",
        dir.join("wal").display(),
        shard.base_seq()
    );

    // Hand the lines over a thousand at a time; each batch's ticket is its
    // last record's. A line is bytes: no UTF-8 is required.
    const BATCH: usize = 1000;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let mut last = None;
    for line in std::io::stdin().lock().split(b'\n') {
        batch.push(line?);
        if batch.len() == BATCH {
            last = shard.append_all(batch.iter().map(Vec::as_slice))?.or(last);
            batch.clear();
        }
    }
    last = shard.append_all(batch.iter().map(Vec::as_slice))?.or(last);

    if let Some(ticket) = last {
        ticket.wait_durable()?;
        println!("durable through seq {}", ticket.seq());
        ticket.wait_acked_timeout(Duration::from_secs(30))?;
        println!("acknowledged through seq {}", ticket.seq());
    }
    let report = shard.close()?;
    let totals = receiver.stop()?;
    println!(
        "{} records in {} commits; the receiver stored {} records",
        report.wal.records, report.wal.commits, totals.records
    );
    Ok(())
}
