//! Admission: the handshake of one connection, on its own short-lived
//! thread, before the connection moves to a core.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::reactor::{Admitted, CORE_GONE, CoreHandle};
use super::{ReceiverConfig, Registration};
use crate::constants::{HANDSHAKE_TIMEOUT_MS, TAKEOVER_POLL_MS};
use crate::protocol::{self, CAPABILITIES, HELLO_BYTES, Hello, Welcome, WelcomeStatus};
use crate::wal::segment::WalId;
use crate::wal::{WalError, WalWriter};

/// A welcome in the hello's `version`.
fn welcome(version: u16, status: WelcomeStatus, durable_seq: u64, wal_id: WalId) -> Vec<u8> {
    protocol::encode_welcome(&Welcome {
        version,
        status,
        capabilities: CAPABILITIES,
        durable_seq,
        wal_id,
    })
}

/// The handshake of one connection, on its own short-lived thread: read
/// the hello, take over its (source, shard) from an older connection if
/// need be, open (recover) the WAL, send the welcome with the durable seq,
/// then hand the connection to a core. Everything here may block, bounded
/// by HANDSHAKE_TIMEOUT_MS, so none of it runs on a core.
pub(super) fn admit(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: &ReceiverConfig,
    mut registration: Registration,
    cores: &[CoreHandle],
) {
    let shared = registration.shared.clone();
    let _ = stream.set_nodelay(true);
    protocol::set_keepalive(&stream);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)));
    // The fixed prefix every version shares, then as many bytes as its
    // version says: a bounded read either way.
    let mut prefix = [0u8; HELLO_BYTES];
    if let Err(e) = stream.read_exact(&mut prefix) {
        tracing::warn!(%peer, "closing connection: no hello: {e}");
        return;
    }
    let decoded = Hello::rest_bytes(&prefix).and_then(|rest| {
        let mut hello = prefix.to_vec();
        hello.resize(HELLO_BYTES + rest, 0);
        stream
            .read_exact(&mut hello[HELLO_BYTES..])
            .map_err(|_| (WelcomeStatus::BadHello, protocol::ProtocolError::Padding))?;
        Hello::decode(&hello)
    });
    let hello = match decoded {
        Ok(h) => h,
        Err((status, e)) => {
            tracing::warn!(%peer, "closing connection: {e}");
            // Answer in a version the shipper reads: a version-1 welcome
            // says VersionMismatch to any version.
            let _ = stream.write_all(&welcome(1, status, 0, WalId::NONE));
            return;
        }
    };
    let version = hello.version;
    // A WAL that the replica is not held under is refused before it can
    // take the (source, shard) over from a connection of the right one.
    // (The replica records its id beside its segments; `open_as` checks
    // again with the segments themselves.)
    let shard_dir = crate::wal::segment::shard_dir(&config.dir.join(&hello.source), hello.shard);
    if let Ok(Some(recorded)) = crate::wal::watermarks::read(&shard_dir)
        && version >= 2
        && !recorded.wal_id.is_none()
        && recorded.wal_id != hello.wal_id
    {
        tracing::warn!(%peer, source = %hello.source, shard = hello.shard,
            "closing connection: this receiver holds the source and shard under WAL {}, \
             the shipper's WAL is {}: two WALs claim one source", recorded.wal_id, hello.wal_id);
        let _ = stream.write_all(&welcome(
            version,
            WelcomeStatus::OtherWal,
            0,
            recorded.wal_id,
        ));
        return;
    }
    let key = (hello.source.clone(), hello.shard);
    // A new connection for a (source, shard) that is still being served takes
    // over: the old one is most likely dead without having said so (its
    // shipper restarted, or a partition). Its socket is shut down, its core
    // persists and acks what it verified, and it unregisters.
    let mut waited_ms = 0;
    loop {
        let mut active = shared.active.lock().expect("not poisoned");
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match active.serving.get(&key) {
            None => {
                active.serving.insert(key.clone(), stream.try_clone().ok());
                registration.key = Some(key.clone());
                break;
            }
            Some(old) => {
                if waited_ms == 0 {
                    tracing::warn!(%peer, source = %hello.source, shard = hello.shard,
                        "a new connection takes over this source and shard from an older one");
                    if let Some(old) = old {
                        let _ = old.shutdown(Shutdown::Both);
                    }
                }
            }
        }
        drop(active);
        if waited_ms >= HANDSHAKE_TIMEOUT_MS {
            tracing::warn!(%peer, source = %hello.source, shard = hello.shard,
                "closing connection: the older connection for this source and shard did not finish");
            let _ = stream.write_all(&welcome(version, WelcomeStatus::Busy, 0, WalId::NONE));
            return;
        }
        // Waiting here is part of the handshake, never of the data path.
        std::thread::sleep(Duration::from_millis(TAKEOVER_POLL_MS));
        waited_ms += TAKEOVER_POLL_MS;
    }
    // The replica takes its source's WAL id (a version-1 shipper has none
    // to give): a replica held under another id is refused, naming it, and
    // nothing is written.
    let opened = WalWriter::open_as(
        &config.dir.join(&hello.source),
        hello.shard,
        config.durability,
        crate::io::Owner::Connection(0),
        // A version-1 hello has no id (NONE): see `open_as`.
        Some(hello.wal_id),
    );
    let mut wal = match opened {
        Ok((wal, _)) => wal,
        Err(WalError::OtherWal { found, wanted, .. }) => {
            tracing::warn!(%peer, source = %hello.source, shard = hello.shard,
                "closing connection: this receiver holds the source and shard under WAL {found}, \
                 the shipper's WAL is {wanted}: two WALs claim one source");
            let _ = stream.write_all(&welcome(version, WelcomeStatus::OtherWal, 0, found));
            return;
        }
        Err(e) => {
            tracing::warn!(%peer, source = %hello.source, shard = hello.shard,
                "closing connection: storage: {e}");
            let _ = stream.write_all(&welcome(
                version,
                WelcomeStatus::StorageError,
                0,
                WalId::NONE,
            ));
            return;
        }
    };
    if version < 2 {
        // Version-1 records have no salt: they go to an unsalted segment.
        wal.follow_salt(0);
    }
    wal.set_latency_window(config.latency_window.clone());
    // The least loaded running core; among equals, the one counted from the
    // last CPU for this shard (shard 0 → the last core), so that on a host
    // that also ships, the receiver's core avoids the CPU the shipper pins
    // the same shard to. Chosen before the welcome, so a shipper is never
    // welcomed into nothing.
    let n = cores.len();
    let preferred = n - 1 - hello.shard as usize % n;
    let Some(core) = (0..n)
        .map(|k| (preferred + k) % n)
        .filter(|&k| cores[k].load.load(Ordering::SeqCst) < CORE_GONE)
        .min_by_key(|&k| cores[k].load.load(Ordering::SeqCst))
    else {
        tracing::warn!(%peer, "closing connection: every receiver core has stopped");
        let _ = stream.write_all(&welcome(
            version,
            WelcomeStatus::StorageError,
            0,
            WalId::NONE,
        ));
        return;
    };
    let reader = match stream.try_clone() {
        Ok(reader) => reader,
        Err(e) => {
            tracing::warn!(%peer, "closing connection: {e}");
            return;
        }
    };
    if let Err(e) = stream
        .write_all(&welcome(
            version,
            WelcomeStatus::Ok,
            wal.durable_seq(),
            wal.wal_id(),
        ))
        .and_then(|()| stream.set_read_timeout(None))
    {
        tracing::warn!(%peer, source = %hello.source, shard = hello.shard,
            "closing connection: sending the welcome: {e}");
        return;
    }
    let admitted = Admitted {
        stream,
        reader,
        peer,
        hello,
        wal,
        registration,
    };
    if cores[core].admit(admitted).is_err() {
        // The core stopped since it was chosen; the shipper reconnects.
        tracing::warn!(%peer, "closing connection: its receiver core has stopped");
    }
}
