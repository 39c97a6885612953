//! The library API on real io_uring and files: what a program built on
//! ringship can count on.

use std::time::Duration;

use ringship::{
    Error, Receiver, ReceiverConfig, SendMode, Shard, ShardConfig, SinkConfig, TcpConfig,
};

const MAX: usize = ringship::constants::RECORD_PAYLOAD_BYTES_MAX;

fn tcp(peer: std::net::SocketAddr, source: &str) -> Option<SinkConfig> {
    Some(SinkConfig::Tcp(TcpConfig {
        peer,
        source: source.into(),
        send_mode: SendMode::Splice,
    }))
}

#[test]
fn tickets_count_seqs_across_append_and_append_all_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut shard = Shard::spawn(ShardConfig::new(tmp.path(), 0)).unwrap();
    assert_eq!(shard.base_seq(), 0);
    assert_eq!(shard.append(b"one").unwrap().seq(), 1);
    let parts: Vec<&[u8]> = vec![b"two", b"three", b""];
    let last = shard.append_all(parts).unwrap().unwrap();
    assert_eq!(last.seq(), 4);
    last.wait_durable().unwrap();
    assert!(shard.durable_seq() >= 4);
    assert!(matches!(last.wait_acked(), Err(Error::NoSink)));
    assert_eq!(shard.close().unwrap().durable_seq, 4);

    // A restart continues the sequence.
    let mut shard = Shard::spawn(ShardConfig::new(tmp.path(), 0)).unwrap();
    assert_eq!(shard.base_seq(), 4);
    assert_eq!(shard.append(b"five").unwrap().seq(), 5);
    shard.close().unwrap();
}

#[test]
fn an_oversized_record_fails_its_call_and_leaks_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut shard = Shard::spawn(ShardConfig::new(tmp.path(), 0)).unwrap();
    let big = vec![b'x'; MAX + 1];
    assert!(matches!(shard.append(&big), Err(Error::TooLarge(_))));
    // More failures than the inbox has batches: none may be lost.
    for _ in 0..20 {
        let parts: Vec<&[u8]> = vec![b"before", &big, b"after"];
        assert!(matches!(shard.append_all(parts), Err(Error::TooLarge(_))));
    }
    // The records before each oversized one were appended.
    let ticket = shard.append(b"last").unwrap();
    assert_eq!(ticket.seq(), 21);
    ticket.wait_durable().unwrap();
    shard.close().unwrap();
}

#[test]
fn a_waiter_wakes_when_the_shard_gives_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = ShardConfig::new(tmp.path(), 0);
    // Nobody listens there: nothing is ever acknowledged.
    config.sink = tcp("127.0.0.1:9".parse().unwrap(), "api");
    config.ack_timeout = Duration::from_millis(300);
    let mut shard = Shard::spawn(config).unwrap();
    let ticket = shard.append(b"never acked").unwrap();
    ticket.wait_durable().unwrap();
    let waiter = std::thread::spawn(move || ticket.wait_acked());
    // Closing runs the shard to its ack timeout; the waiter must not hang.
    assert!(matches!(shard.close(), Err(Error::Shard(_))));
    assert!(matches!(waiter.join().unwrap(), Err(Error::Stopped)));
}

#[test]
fn a_bad_source_name_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = ShardConfig::new(tmp.path(), 0);
    config.sink = tcp("127.0.0.1:9".parse().unwrap(), "../etc");
    match Shard::spawn(config) {
        Err(Error::Shard(e)) => assert!(e.to_string().contains("source"), "{e}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn records_are_acknowledged_by_a_receiver_in_the_same_process() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::spawn(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverConfig::new(tmp.path().join("recv")),
    )
    .unwrap();
    let mut config = ShardConfig::new(tmp.path().join("wal"), 0);
    config.sink = tcp(receiver.local_addr(), "api");
    let mut shard = Shard::spawn(config).unwrap();
    let lines: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("line {i}").into_bytes())
        .collect();
    let ticket = shard
        .append_all(lines.iter().map(Vec::as_slice))
        .unwrap()
        .unwrap();
    ticket.wait_acked_timeout(Duration::from_secs(30)).unwrap();
    assert!(shard.acked_seq() >= 10_000);
    let report = shard.close().unwrap();
    assert_eq!(report.acked_seq, Some(10_000));
    assert_eq!(receiver.stop().unwrap().records, 10_000);
}
