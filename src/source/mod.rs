//! Sources: what turns input into records in a shard's inbox.
//!
//! - [`lines`]: each line of a stream (stdin, a file, a pipe) is a record.

pub mod lines;
