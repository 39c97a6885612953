//! Every bound in ringship, in one place, each with the reason for its value.
//!
//! Names put the unit or qualifier last (`SEGMENT_SIZE_BYTES`, `COMMIT_CHAINS_MAX`).
//! Relations between the bounds are checked at compile time at the bottom of this
//! file, so a change that breaks one fails the build rather than a run.

/// Size of the fixed record header: crc32c (4) + payload length (4) + seq (8) +
/// append timestamp (8). See `frame.rs` for the layout.
pub const RECORD_HEADER_BYTES: usize = 24;

/// Largest payload one record may carry. Real log lines (stack traces, JSON
/// documents) run to tens of KiB; 1 MiB leaves room for the odd outlier while
/// keeping every buffer that must hold one record small.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 1 << 20;

/// Largest encoded record.
pub const RECORD_BYTES_MAX: usize = RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX;

/// Page size the I/O path aligns to. Segment headers occupy exactly one page so
/// that record data starts page-aligned, which O_DIRECT shipping will need.
pub const PAGE_SIZE_BYTES: usize = 4096;

/// Size of the segment header block (magic, version, shard, first seq, crc,
/// then zero padding). One page: see [`PAGE_SIZE_BYTES`].
pub const SEGMENT_HEADER_BYTES: usize = PAGE_SIZE_BYTES;

/// Size a segment is preallocated to and rotated at. 64 MiB keeps recovery
/// (which reads one segment at a time) cheap and rotation rare: at the disk's
/// ~800 MB/s a core rotates about 12 times a second at most.
pub const SEGMENT_SIZE_BYTES: u64 = 64 << 20;

/// Bytes one group commit writes at most. Bigger commits amortise the
/// fdatasync (FIGURES.md: a 64 KiB commit costs ~126 µs, 4 KiB ~74 µs), but a
/// commit's bytes are also what its slowest record waits behind; 4 MiB is
/// ~5 ms of disk bandwidth.
pub const COMMIT_BYTES_MAX: usize = 4 << 20;

/// Group-commit chains (write(s) linked to an fdatasync) in flight per WAL.
/// Two lets the next batch's write land in the page cache while the previous
/// fdatasync waits on the disk. Four was measured too (closed-loop 4 KiB
/// records: 435–860 MB/s with four, 535 MB/s with two, on a disk whose own
/// figure swings as much) and showed no clear gain, while each chain costs a
/// COMMIT_BYTES_MAX buffer and widens the window recovery must tolerate
/// ([`RECOVERY_TORN_WINDOW_BYTES`]).
pub const COMMIT_CHAINS_MAX: usize = 2;

/// `--durability none`: a commit of at most this many bytes, staged after
/// the WAL has been idle for [`INLINE_COMMIT_IDLE_US`], is written with a
/// plain pwrite on the core instead of through io_uring. Buffered writes to
/// ext4 go to an io-wq worker, a thread hand-off that costs 20–50 µs on a
/// VM and more when the worker has gone cold; a page-cache copy of a few KiB
/// costs a few µs.
pub const INLINE_COMMIT_BYTES_MAX: usize = 64 << 10;

/// See [`INLINE_COMMIT_BYTES_MAX`]. Under load commits follow each other
/// with no gap and stay asynchronous, so group commit keeps batching (an
/// always-inline write halved 100 B throughput by making every small
/// arrival its own commit, ack and send).
pub const INLINE_COMMIT_IDLE_US: u64 = 50;

/// The most `--spin-us` takes: how long a core may busy-poll its ring for
/// a completion before it sleeps. Off (0) by default; a spin longer than
/// this is a CPU burnt for nothing that a sleep would not also catch.
pub const SPIN_US_MAX: u64 = 10_000;

/// The most `bench --cpu-dma-latency` takes, in µs: above this a limit
/// no longer keeps any idle state out, so it would only look like one.
pub const CPU_DMA_LATENCY_US_MAX: u32 = 10_000;

/// A spinning core yields its CPU this often, so that an io-wq worker woken
/// on the same CPU (a WAL write or fdatasync completing) runs within this
/// long instead of after the spinner's time slice.
pub const SPIN_YIELD_INTERVAL_US: u64 = 5;

/// Commit buffers per WAL: one per chain in flight plus the one being filled.
pub const COMMIT_BUFFERS_COUNT: usize = COMMIT_CHAINS_MAX + 1;

/// O_DIRECT segments (`--send-mode zc`): commit chains in flight per WAL.
/// O_DIRECT writes whole pages, so a commit rewrites the partial page the
/// previous one ended in; two such writes in flight could land in either
/// order and the older could undo the newer. One chain at a time keeps
/// them ordered; the next batch still gathers while it is in flight.
pub const DIRECT_COMMIT_CHAINS_MAX: usize = 1;

/// O_DIRECT segments: registered commit buffers per WAL. One is filled, one
/// is written, and the rest keep recently durable commits for the shipper
/// to send from with SEND_ZC, so the durable tail leaves without being read
/// back. See [`DIRECT_SHIP_PINNED_MAX`].
pub const DIRECT_COMMIT_BUFFERS_COUNT: usize = 4;

/// O_DIRECT segments: commit buffers that zero-copy sends may hold at once.
/// A send holds its buffer until the kernel's notification, which a stalled
/// peer can delay for as long as TCP retransmits; capping them leaves the WAL
/// a buffer to fill and one to write whatever the peer does, so a slow peer
/// never stalls appends (the shipper reads such tails back instead).
pub const DIRECT_SHIP_PINNED_MAX: usize = DIRECT_COMMIT_BUFFERS_COUNT - 2;

/// O_DIRECT segments: size of one registered commit buffer. A commit starts
/// at the page holding the previous commit's end (up to a page of carried
/// bytes) and is padded with zeros to a page boundary.
pub const DIRECT_COMMIT_BUFFER_BYTES: usize = COMMIT_BYTES_MAX + 2 * PAGE_SIZE_BYTES;

/// Size of one inbox batch, the unit in which a producer hands records to a
/// core. It must hold one maximum-size record with its inbox entry header.
pub const INBOX_BATCH_BYTES: usize = 2 << 20;

/// Size of the per-entry header inside an inbox batch: payload length (4) +
/// append timestamp (8).
pub const INBOX_ENTRY_HEADER_BYTES: usize = 12;

/// Inbox batches per core. The producer blocks when all are queued or being
/// drained: this is the backpressure that keeps memory fixed whatever the
/// backlog. 8 × 2 MiB = 16 MiB per core.
pub const INBOX_BATCHES_COUNT: usize = 8;

/// Bytes the stdin producer reads per read(2). Pipes hand over at most 64 KiB
/// at a time; files give the full amount.
pub const INPUT_READ_BYTES: usize = 1 << 20;

/// Submission queue entries per ring. Every operation a core can have in
/// flight fits with room to spare, so a full queue is a programmer error.
pub const RING_ENTRIES: u32 = 64;

/// Completion slots per ring: the most operations one core has in flight.
/// Each commit chain takes two (write + fdatasync); the inbox wake-up, the
/// shipper's ack RECV, its connect wake-up and its send (or two splices)
/// take one each; zero-copy sends take up to [`SEND_ZC_IN_FLIGHT_MAX`].
pub const RING_SLOTS_MAX: usize = 32;

/// Zero-copy sends per shipper whose notification is still due. Each keeps
/// a completion slot (and its buffer) until the kernel lets the buffer go,
/// which on a real NIC is when TCP has it acknowledged; a few in flight
/// cover a round trip without letting them eat the ring.
pub const SEND_ZC_IN_FLIGHT_MAX: usize = 8;

/// io-wq workers per ring, [bounded, unbounded]. Buffered writes and
/// fdatasync run on bounded workers; on a 2-core box more than two only
/// contend with the cores themselves.
pub const IOWQ_WORKERS_MAX: [u32; 2] = [2, 2];

/// io-wq workers of a receiver core's ring, [bounded, unbounded]. One core
/// serves many connections, each with its own WAL: their fdatasyncs block
/// in these workers, and with two a slow file's sync would hold up its
/// neighbours' acks.
pub const RECEIVER_IOWQ_WORKERS_MAX: [u32; 2] = [8, 2];

/// Shards (cores) one WAL directory may hold.
pub const SHARDS_MAX: u32 = 256;

/// Segments one shard directory may hold. Bounds the directory listing that
/// recovery sorts before it reads anything: 65536 × 64 MiB = 4 TiB.
pub const SEGMENTS_PER_SHARD_MAX: usize = 1 << 16;

/// The most bytes that can be written but not yet durable at once: every
/// chain in flight, each a full commit. After a power cut, damage followed by
/// valid-looking records can only be a torn tail if it lies within this many
/// bytes of the end of the written data; deeper damage is corruption of
/// durable records and recovery refuses it.
pub const RECOVERY_TORN_WINDOW_BYTES: usize = COMMIT_CHAINS_MAX * COMMIT_BYTES_MAX;

/// The unit a torn write leaves unwritten: one disk sector. A damaged record
/// that contains an aligned all-zero sector shows the marks of a write that
/// never reached the disk (segments are fallocated, so unwritten space reads
/// as zeros); a damaged record without one shows corruption.
pub const SECTOR_SIZE_BYTES: usize = 512;

/// The shortest run of zeros recovery takes for space an unsynced commit's
/// write never reached (above the recorded durable seq): a crc's worth, so
/// that a damaged record whose payload merely holds a zero byte there is
/// not taken for one. A shorter tear is refused as corruption: loud, not
/// lost.
pub const UNWRITTEN_RUN_BYTES_MIN: usize = 4;

/// Largest seq a segment may start at. Keeps every `seq + n` in recovery far
/// from overflow, whatever a hostile header says.
pub const SEQ_MAX: u64 = u64::MAX >> 1;

/// Read window of a recovery scan (and of `dump` and `verify`): two maximum
/// records, so one whole record is always in view while memory stays small.
pub const SCAN_WINDOW_BYTES: usize = 2 * RECORD_BYTES_MAX;

/// Sequence numbers start here; seq 0 means "nothing yet" in summaries and in
/// the resume handshake.
pub const SEQ_FIRST: u64 = 1;

/// Longest source name a shipper may send; it becomes a directory name on
/// the receiver.
pub const SOURCE_NAME_BYTES_MAX: usize = 64;

/// Bytes the shipper reads from a segment and hands to one send. Chunks end
/// on a record boundary, so one must hold the largest record.
pub const SEND_CHUNK_BYTES: usize = 2 << 20;

/// Records sent but not yet acknowledged, per shipper. Their (seq,
/// timestamp) pairs are kept to measure append → acked; when the table is
/// full the shipper waits for acks (the peer's window, in records).
pub const SEND_INFLIGHT_RECORDS_MAX: usize = 1 << 17;

/// Bytes sent but not yet acknowledged, per shipper: the send window. The
/// rest of the backlog stays on disk, never in RAM.
pub const SEND_INFLIGHT_BYTES_MAX: u64 = 16 << 20;

/// The receiver's per-connection read buffer. It must hold a maximum record
/// plus the start of the next one.
pub const RECV_BUFFER_BYTES: usize = 4 << 20;

/// Connections one receiver serves at once; more are refused.
pub const RECEIVER_CONNECTIONS_MAX: usize = 256;

/// Operations one receiver connection has in flight at most: two per
/// commit chain, its socket RECV, and its ack SEND with that SEND's linked
/// timeout. A receiver core's ring has room for every connection on one
/// core.
pub const RECEIVER_SLOTS_PER_CONNECTION: usize = COMMIT_CHAINS_MAX * 2 + 3;

/// How long a receiver's ack may wait for room in its socket before it is
/// given up (a linked timeout cancels it). A shipper that stops reading
/// then loses its connection instead of holding it, and the receiver's
/// stop, forever; it resumes by seq when it reconnects.
pub const ACK_SEND_TIMEOUT_MS: u64 = HANDSHAKE_TIMEOUT_MS;

/// `ship --ack-timeout` at most: a day. Beyond it a run that waits for a
/// peer is a service, and belongs under a supervisor, not a timeout.
pub const ACK_TIMEOUT_S_MAX: f64 = 86_400.0;

/// How often the watermarks beside a WAL are written out, at most (by a
/// background thread, off the data path). They trail the real ones by up
/// to this; recovery only ever holds a WAL to what they say.
pub const WATERMARKS_PERSIST_INTERVAL_MS: u64 = 1_000;

/// How long either side waits for the other's half of the handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// How long the shipper waits for a TCP connect.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// TCP keepalive on every shipping connection: a peer that vanished without a
/// FIN or RST (a dead host, a partition) is noticed after idle + interval ×
/// count = 25 s instead of never, so its (source, shard) does not stay busy.
pub const TCP_KEEPALIVE_IDLE_S: u32 = 10;
pub const TCP_KEEPALIVE_INTERVAL_S: u32 = 5;
pub const TCP_KEEPALIVE_COUNT: u32 = 3;

/// A connection whose sent bytes stay unacknowledged this long is dropped
/// (TCP_USER_TIMEOUT): keepalive only probes an idle connection, so without
/// it a peer that vanished while records were in flight (a power cut, a
/// partition) would be noticed only after the kernel's retransmissions give
/// up, about 15 minutes. (Noticed while modelling half-open peers for the
/// simulator, which drops such a connection after this long.)
pub const TCP_USER_TIMEOUT_MS: u32 = 30_000;

/// How often a connection taking over a (source, shard) checks whether the
/// older connection has finished (it waits at most HANDSHAKE_TIMEOUT_MS).
pub const TAKEOVER_POLL_MS: u64 = 20;

/// Pause after a failed accept(2), so that EMFILE does not spin.
pub const ACCEPT_BACKOFF_MS: u64 = 50;

/// Reconnect backoff: doubles from the minimum to the cap, with jitter.
pub const RECONNECT_BACKOFF_MIN_MS: u64 = 20;
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 2_000;

/// In splice mode, a durable increment smaller than this is sent by copy:
/// splice costs two io-wq round trips, a copy of a few KiB costs less.
pub const SPLICE_MIN_BYTES: u64 = 64 << 10;

/// Splice units (one per loop turn at most) sent and not yet acknowledged,
/// per shipper. Their seq ranges say which records take their latency from
/// the durable feed; when this many are unacknowledged, the durable tail
/// goes by copy until acks free one.
pub const SPLICE_UNITS_INFLIGHT_MAX: usize = 4096;

/// Latency histograms cover 1 ns .. 1 hour at 3 significant digits.
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// Interval histograms (one per second, for `.hlog`) kept per stage per
/// core; later values fold into the last one.
pub const LATENCY_INTERVALS_MAX: usize = 3_600;

/// `bench --duration` plus `--warmup` at most, in seconds, so the interval
/// log covers the whole run.
pub const BENCH_SECONDS_MAX: f64 = 3_000.0;

/// `bench`: records a load generator may have offered and not yet seen
/// acknowledged. The WAL is the shipper's buffer and may run far ahead of
/// the peer, but a benchmark that let it would report seconds of queueing
/// in the WAL as latency and end with a drain as long; this window keeps
/// the queue, and the drain, to what the pipeline ships in a moment. It is
/// also the most records the splice shipper times from the durable feed
/// ([`SEND_INFLIGHT_RECORDS_MAX`]), so every spliced record is timed.
pub const BENCH_UNACKED_RECORDS_MAX: usize = SEND_INFLIGHT_RECORDS_MAX;

/// `bench`: bytes (encoded records) a load generator may have offered and
/// not yet seen acknowledged; see [`BENCH_UNACKED_RECORDS_MAX`]. 64 MiB is
/// a fraction of a second of this machine's disk and several send windows.
pub const BENCH_UNACKED_BYTES_MAX: u64 = 64 << 20;

/// `--rate` at most, in records per second: far above anything a machine
/// takes, so it only keeps the schedule's arithmetic finite.
pub const RATE_PER_S_MAX: f64 = 1e15;

/// `bench --probe-rounds` at most.
pub const PROBE_ROUNDS_MAX: u32 = 10_000;

/// `bench --probe-burst` records at most per idle-tail round.
pub const PROBE_BURST_MAX: u32 = 100_000;

/// `bench --probe-silence-ms` at most.
pub const PROBE_SILENCE_MS_MAX: u64 = 600_000;

/// How long bench waits for the idle-tail probe's last record to be
/// acknowledged before reporting the round as lost.
pub const PROBE_ACK_WAIT_MS: u64 = 30_000;

/// A bench report read by `compare` is at most this large; anything bigger
/// is not one of ours and is refused before it is read.
pub const REPORT_BYTES_MAX: u64 = 1 << 20;

/// Reports on one side of a `compare` at most.
pub const COMPARE_RUNS_MAX: usize = 1_000;

const _: () = assert!(RECORD_HEADER_BYTES == 4 + 4 + 8 + 8);
const _: () = assert!((BENCH_SECONDS_MAX as usize) < LATENCY_INTERVALS_MAX);
const _: () = assert!(SEND_CHUNK_BYTES >= RECORD_BYTES_MAX);
const _: () = assert!(RECV_BUFFER_BYTES >= 2 * RECORD_BYTES_MAX);
const _: () = assert!(SEND_INFLIGHT_BYTES_MAX >= SEND_CHUNK_BYTES as u64);
// A bench window holds at least one record of any size.
const _: () = assert!(BENCH_UNACKED_BYTES_MAX >= RECORD_BYTES_MAX as u64);
const _: () = assert!(BENCH_UNACKED_RECORDS_MAX <= SEND_INFLIGHT_RECORDS_MAX);
const _: () = assert!(RECONNECT_BACKOFF_MIN_MS <= RECONNECT_BACKOFF_MAX_MS);
const _: () = assert!(PAGE_SIZE_BYTES.is_multiple_of(SECTOR_SIZE_BYTES));
const _: () = assert!((RECOVERY_TORN_WINDOW_BYTES as u64) < SEGMENT_SIZE_BYTES);
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(PAGE_SIZE_BYTES));
const _: () = assert!(SEGMENT_SIZE_BYTES.is_multiple_of(PAGE_SIZE_BYTES as u64));
// A record never spans segments, so the largest record must fit in an empty one.
const _: () = assert!(SEGMENT_HEADER_BYTES as u64 + RECORD_BYTES_MAX as u64 <= SEGMENT_SIZE_BYTES);
// A commit never spans segments either, so it must fit in the data area.
const _: () = assert!(SEGMENT_HEADER_BYTES as u64 + COMMIT_BYTES_MAX as u64 <= SEGMENT_SIZE_BYTES);
// Every record must fit in one commit and one inbox batch.
const _: () = assert!(RECORD_BYTES_MAX <= COMMIT_BYTES_MAX);
const _: () = assert!(INBOX_ENTRY_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX <= INBOX_BATCH_BYTES);
// The group commit needs at least two chains to overlap a write with a sync.
const _: () = assert!(COMMIT_CHAINS_MAX >= 2);
// Two slots per chain, one for the wake-up read, never more than the ring holds.
const _: () = assert!(COMMIT_CHAINS_MAX * 2 < RING_SLOTS_MAX);
// Commit chains, wake-up, ack RECV, connect wake-up, two splices, zc sends.
const _: () = assert!(COMMIT_CHAINS_MAX * 2 + 5 + SEND_ZC_IN_FLIGHT_MAX <= RING_SLOTS_MAX);
const _: () = assert!(RING_SLOTS_MAX <= RING_ENTRIES as usize);
// A receiver core's ring (every connection plus the admission wake-up)
// stays within io_uring's 32768-entry maximum.
const _: () = assert!(RECEIVER_CONNECTIONS_MAX * RECEIVER_SLOTS_PER_CONNECTION < 32768);
// Lengths travel as u32 in the record header and in I/O lengths.
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(COMMIT_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(DIRECT_COMMIT_BUFFER_BYTES <= u32::MAX as usize);
// O_DIRECT mode: one buffer filled, one written, at least one kept for sends.
const _: () = assert!(DIRECT_COMMIT_CHAINS_MAX == 1 && DIRECT_SHIP_PINNED_MAX >= 1);
const _: () = assert!(DIRECT_COMMIT_CHAINS_MAX <= COMMIT_CHAINS_MAX);
