//! Hostile and corrupt bytes sent straight to a receiver. Each bad
//! connection is closed on its own; what was verified before the bad bytes
//! is kept and acknowledged; other connections and the data on disk are
//! untouched.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{dump_lines, line};
use ringship::internals::Stopper;
use ringship::internals::frame;
use ringship::internals::protocol::{self, ACK_BYTES, HELLO_BYTES, Hello, WELCOME_BYTES};
use ringship::internals::wal::Durability;
use ringship::internals::wal::segment::WalId;
use ringship::{Receiver, ReceiverConfig};

fn start(dir: &std::path::Path) -> (SocketAddr, Stopper, std::thread::JoinHandle<()>) {
    let receiver = Receiver::bind(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverConfig {
            dir: dir.to_path_buf(),
            durability: Durability::Fsync,
            // One core: every connection shares its ring, so each test also
            // shows a bad connection leaving its neighbours alone.
            cores: 1,
            pin_first_cpu: None,
            latency_window: None,
            spin: std::time::Duration::ZERO,
        },
    )
    .unwrap();
    let addr = receiver.local_addr().unwrap();
    let stopper = receiver.stopper();
    let handle = std::thread::spawn(move || {
        receiver.run().unwrap();
    });
    (addr, stopper, handle)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// The salt of every segment these shippers send from.
const SALT: u64 = 0x5a17_0000_0000_5a17;

/// A WAL id per source name, the same on every connection.
fn wal_id(source: &str) -> WalId {
    WalId(
        source
            .bytes()
            .fold(1u128, |h, b| h.wrapping_mul(131) ^ b as u128),
    )
}

/// A version-2 hello; once welcomed, the Segment frame that says which
/// salt the records that follow have. Returns the welcome's status and
/// durable seq.
fn hello(s: &mut TcpStream, source: &str, shard: u32) -> (u16, u64) {
    s.write_all(&Hello::new(source.into(), shard, wal_id(source)).encode())
        .unwrap();
    let (status, seq) = read_welcome(s);
    if status == 0 {
        s.write_all(&protocol::encode_segment_frame(SALT, seq + 1))
            .unwrap();
    }
    (status, seq)
}

/// Reads a welcome of either version.
fn read_welcome(s: &mut TcpStream) -> (u16, u64) {
    let mut w = [0u8; WELCOME_BYTES];
    s.read_exact(&mut w).unwrap();
    if u16::from_le_bytes([w[8], w[9]]) == 2 {
        let mut rest = [0u8; protocol::WELCOME_V2_BYTES - WELCOME_BYTES];
        s.read_exact(&mut rest).unwrap();
    }
    (
        u16::from_le_bytes([w[10], w[11]]),
        u64::from_le_bytes(w[16..24].try_into().unwrap()),
    )
}

/// Records as a version-2 shipper sends them: crcs seeded with SALT.
fn records(range: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 << 20);
    for seq in range {
        let stamp = frame::Stamp {
            seed: frame::Seed::of_salt(SALT),
            ..frame::Stamp::data(frame::now_ns())
        };
        frame::encode_stamped_into(&mut buf, seq, stamp, &line(seq));
    }
    buf
}

/// Reads acks until `seq` is acknowledged or the connection closes; returns
/// the highest ack seen.
fn acks_until(s: &mut TcpStream, seq: u64) -> u64 {
    let mut best = 0;
    let mut b = [0u8; ACK_BYTES];
    while best < seq {
        if s.read_exact(&mut b).is_err() {
            break;
        }
        best = protocol::decode_ack(&b).unwrap();
    }
    best
}

fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue, // trailing acks
            Err(_) => return false,
        }
    }
}

#[test]
fn hostile_handshakes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (addr, stopper, handle) = start(tmp.path());

    let mut s = connect(addr);
    s.write_all(&[0xAB; HELLO_BYTES]).unwrap();
    assert_eq!(
        read_welcome(&mut s).0,
        protocol::WelcomeStatus::BadHello as u16
    );
    assert!(closed(&mut s));

    // A source that would escape the data directory.
    let mut bad = Hello::new("ab".into(), 0, wal_id("ab")).encode();
    bad[16] = 2;
    bad[17..19].copy_from_slice(b"..");
    let mut s = connect(addr);
    s.write_all(&bad).unwrap();
    assert_eq!(
        read_welcome(&mut s).0,
        protocol::WelcomeStatus::BadHello as u16
    );

    // A version from the future.
    let mut future = Hello::new("ab".into(), 0, wal_id("ab")).encode();
    future[8] = 99;
    let mut s = connect(addr);
    s.write_all(&future).unwrap();
    assert_eq!(
        read_welcome(&mut s).0,
        protocol::WelcomeStatus::VersionMismatch as u16
    );

    // A half hello, then silence, then close: no welcome, no crash.
    let mut s = connect(addr);
    s.write_all(&[1, 2, 3]).unwrap();
    drop(s);

    // Two connections for one (source, shard): the newer takes over (the
    // older is most likely dead without having said so), and the older is
    // closed after persisting what it verified.
    let mut first = connect(addr);
    assert_eq!(hello(&mut first, "dup", 0), (0, 0));
    first.write_all(&records(1..=3)).unwrap();
    assert_eq!(acks_until(&mut first, 3), 3);
    let mut second = connect(addr);
    assert_eq!(hello(&mut second, "dup", 0), (0, 3));
    assert!(closed(&mut first));
    drop(second);

    stopper.stop();
    handle.join().unwrap();
    let entries: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "ringship.lock")
        .collect();
    assert!(
        entries.iter().all(|n| n == "dup"),
        "only the valid source made a directory: {entries:?}"
    );
}

#[test]
fn corrupt_records_close_only_their_connection_and_keep_what_was_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let (addr, stopper, handle) = start(tmp.path());

    // A good connection that keeps streaming throughout.
    let mut good = connect(addr);
    assert_eq!(hello(&mut good, "good", 0), (0, 0));
    good.write_all(&records(1..=500)).unwrap();
    assert_eq!(acks_until(&mut good, 500), 500);

    // Bad crc in the 11th record.
    let mut bad = connect(addr);
    assert_eq!(hello(&mut bad, "badcrc", 0), (0, 0));
    let mut bytes = records(1..=20);
    let tenth_end: usize = (1..=10)
        .map(|s| frame::encoded_len_bytes(line(s).len()))
        .sum();
    bytes[tenth_end + 26] ^= 0x01;
    bad.write_all(&bytes).unwrap();
    assert_eq!(
        acks_until(&mut bad, 10),
        10,
        "the 10 verified records are acked"
    );
    assert!(closed(&mut bad));

    // A length field far over the maximum: refused before any allocation.
    let mut huge = connect(addr);
    assert_eq!(hello(&mut huge, "huge", 0), (0, 0));
    let mut rec = records(1..=1);
    rec[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    huge.write_all(&rec).unwrap();
    assert!(closed(&mut huge));

    // A seq that skips ahead.
    let mut gap = connect(addr);
    assert_eq!(hello(&mut gap, "gap", 0), (0, 0));
    let mut bytes = records(1..=5);
    bytes.extend(records(7..=8));
    gap.write_all(&bytes).unwrap();
    assert_eq!(acks_until(&mut gap, 5), 5);
    assert!(closed(&mut gap));

    // Random garbage after a valid hello.
    let mut junk = connect(addr);
    assert_eq!(hello(&mut junk, "junk", 0), (0, 0));
    let mut rng = common::Rng::from_env("receiver_hostile");
    let garbage: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    let _ = junk.write_all(&garbage);
    assert!(closed(&mut junk));

    // The good connection never noticed.
    good.write_all(&records(501..=1000)).unwrap();
    assert_eq!(acks_until(&mut good, 1000), 1000);
    drop(good);

    // Reconnecting resumes where the receiver's WAL ends.
    let mut again = connect(addr);
    assert_eq!(hello(&mut again, "badcrc", 0), (0, 10));
    drop(again);

    stopper.stop();
    handle.join().unwrap();
    assert_eq!(
        dump_lines(&tmp.path().join("good")),
        (1..=1000).map(line).collect::<Vec<_>>()
    );
    assert_eq!(
        dump_lines(&tmp.path().join("badcrc")),
        (1..=10).map(line).collect::<Vec<_>>()
    );
    assert_eq!(
        dump_lines(&tmp.path().join("gap")),
        (1..=5).map(line).collect::<Vec<_>>()
    );
    assert!(!tmp.path().join("huge/0").exists() || dump_lines(&tmp.path().join("huge")).is_empty());
}

/// One core's ring serves many connections at once: sixteen shippers, each
/// its own (source, shard), all get exactly their records persisted and
/// acknowledged.
#[test]
fn one_core_serves_many_connections_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (addr, stopper, handle) = start(tmp.path());
    const N: u64 = 20_000;
    let senders: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                assert_eq!(hello(&mut s, &format!("many{i}"), i % 3), (0, 0));
                for chunk in (1..=N).step_by(1000) {
                    s.write_all(&records(chunk..=chunk + 999)).unwrap();
                }
                assert_eq!(acks_until(&mut s, N), N);
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    stopper.stop();
    handle.join().unwrap();
    for i in 0..16u32 {
        let got = dump_lines(&tmp.path().join(format!("many{i}")));
        assert!(
            got == (1..=N).map(line).collect::<Vec<_>>(),
            "source many{i}"
        );
    }
}

/// A version-2 shipper must announce each segment's salt before its
/// records: a record before any Segment frame, or a Segment frame that
/// names another seq than the next, closes the connection and writes
/// nothing.
#[test]
fn records_without_their_segment_frame_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (addr, stopper, handle) = start(tmp.path());

    let mut s = connect(addr);
    s.write_all(&Hello::new("noframe".into(), 0, wal_id("noframe")).encode())
        .unwrap();
    assert_eq!(read_welcome(&mut s), (0, 0));
    s.write_all(&records(1..=5)).unwrap();
    assert!(closed(&mut s));

    let mut s = connect(addr);
    s.write_all(&Hello::new("wrongseq".into(), 0, wal_id("wrongseq")).encode())
        .unwrap();
    assert_eq!(read_welcome(&mut s), (0, 0));
    s.write_all(&protocol::encode_segment_frame(SALT, 7))
        .unwrap();
    s.write_all(&records(1..=5)).unwrap();
    assert!(closed(&mut s));

    // Records under another salt than the frame announced fail their crc.
    let mut s = connect(addr);
    s.write_all(&Hello::new("wrongsalt".into(), 0, wal_id("wrongsalt")).encode())
        .unwrap();
    assert_eq!(read_welcome(&mut s), (0, 0));
    s.write_all(&protocol::encode_segment_frame(SALT ^ 1, 1))
        .unwrap();
    s.write_all(&records(1..=5)).unwrap();
    assert!(closed(&mut s));

    stopper.stop();
    handle.join().unwrap();
    for source in ["noframe", "wrongseq", "wrongsalt"] {
        assert!(
            dump_lines(&tmp.path().join(source)).is_empty(),
            "{source} wrote records"
        );
    }
}

/// A second WAL under a source that a live connection serves is refused
/// before it can take the source over: the live connection goes on.
#[test]
fn another_wal_cannot_take_a_live_source_over() {
    let tmp = tempfile::tempdir().unwrap();
    let (addr, stopper, handle) = start(tmp.path());
    let mut live = connect(addr);
    assert_eq!(hello(&mut live, "owned", 0), (0, 0));
    live.write_all(&records(1..=10)).unwrap();
    assert_eq!(acks_until(&mut live, 10), 10);

    let mut other = connect(addr);
    other
        .write_all(&Hello::new("owned".into(), 0, WalId(0xbad)).encode())
        .unwrap();
    assert_eq!(
        read_welcome(&mut other).0,
        protocol::WelcomeStatus::OtherWal as u16
    );
    assert!(closed(&mut other));

    live.write_all(&records(11..=20)).unwrap();
    assert_eq!(acks_until(&mut live, 20), 20, "the live connection goes on");
    drop(live);
    stopper.stop();
    handle.join().unwrap();
    assert_eq!(
        dump_lines(&tmp.path().join("owned")),
        (1..=20).map(line).collect::<Vec<_>>()
    );
}
