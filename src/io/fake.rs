//! A test implementation of the I/O seam: every operation is held until
//! the test completes it, with whatever result it chooses (in full, short,
//! failed, cancelled) and in whatever order. Nothing reaches a kernel.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::{Completion, Io, QueueFull, Timespec, Token};

/// What a held operation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum What {
    /// A write of `len` bytes at file offset `offset` (heap or registered).
    Write {
        offset: u64,
        len: usize,
    },
    /// An fdatasync linked to the write before it.
    Sync,
    Read,
    Send {
        len: usize,
    },
    Recv {
        from: usize,
    },
    Splice {
        len: u32,
    },
    SendZc {
        index: usize,
        len: usize,
    },
    /// A send's linked timeout.
    Timeout,
}

/// An operation pushed and not completed yet.
#[derive(Debug)]
pub(crate) struct Op {
    pub token: Token,
    pub what: What,
    buf: Option<Vec<u8>>,
    fixed: Option<usize>,
}

/// Holds every operation until [`FakeIo::complete`].
#[derive(Debug, Default)]
pub(crate) struct FakeIo {
    /// Operations in flight, in the order they were pushed.
    pub ops: Vec<Op>,
    /// Writes made with [`Io::write_now`]: (offset, bytes).
    pub written_now: Vec<(u64, usize)>,
    fixed: Vec<Vec<u8>>,
    fixed_users: Vec<u32>,
}

impl FakeIo {
    /// A fake with registered buffers of `sizes` bytes.
    pub fn with_fixed(sizes: &[usize]) -> FakeIo {
        FakeIo {
            fixed: sizes.iter().map(|&n| vec![0; n]).collect(),
            fixed_users: vec![0; sizes.len()],
            ..FakeIo::default()
        }
    }

    /// The oldest operation in flight with `token`.
    pub fn op(&self, token: Token) -> &Op {
        self.ops
            .iter()
            .find(|o| o.token == token)
            .unwrap_or_else(|| panic!("no operation in flight with {token:?}"))
    }

    /// Ends the oldest operation in flight with `token` with `result`,
    /// handing back its buffer as the ring would.
    pub fn complete(&mut self, token: Token, result: i32) -> Completion {
        let at = self
            .ops
            .iter()
            .position(|o| o.token == token)
            .unwrap_or_else(|| panic!("no operation in flight with {token:?}"));
        let op = self.ops.remove(at);
        if let Some(index) = op.fixed {
            self.fixed_users[index] -= 1;
        }
        Completion {
            token: op.token,
            result,
            buf: op.buf,
            more: false,
            notif: false,
        }
    }

    fn hold(&mut self, token: Token, what: What, buf: Option<Vec<u8>>, fixed: Option<usize>) {
        if let Some(index) = fixed {
            self.fixed_users[index] += 1;
        }
        self.ops.push(Op {
            token,
            what,
            buf,
            fixed,
        });
    }
}

impl Io for FakeIo {
    fn write_then_datasync(
        &mut self,
        _fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        offset: u64,
        write_token: Token,
        sync_token: Option<Token>,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        let what = What::Write {
            offset: offset + from as u64,
            len: buf.len() - from,
        };
        self.hold(write_token, what, Some(buf), None);
        if let Some(token) = sync_token {
            self.hold(token, What::Sync, None, None);
        }
        Ok(())
    }

    fn write_fixed_then_datasync(
        &mut self,
        _fd: &impl AsRawFd,
        index: usize,
        from: usize,
        len: usize,
        offset: u64,
        write_token: Token,
        sync_token: Option<Token>,
    ) -> Result<(), QueueFull> {
        let what = What::Write {
            offset: offset + from as u64,
            len: len - from,
        };
        self.hold(write_token, what, None, Some(index));
        if let Some(token) = sync_token {
            self.hold(token, What::Sync, None, None);
        }
        Ok(())
    }

    fn write_now(&mut self, _file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.written_now.push((offset, bytes.len()));
        Ok(())
    }

    fn read(
        &mut self,
        _fd: &impl AsRawFd,
        buf: Vec<u8>,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        self.hold(token, What::Read, Some(buf), None);
        Ok(())
    }

    fn send(
        &mut self,
        _fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        let len = buf.len() - from;
        self.hold(token, What::Send { len }, Some(buf), None);
        Ok(())
    }

    fn send_with_timeout(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
        _timeout: &'static Timespec,
        timeout_token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        self.send(fd, buf, from, token)?;
        self.hold(timeout_token, What::Timeout, None, None);
        Ok(())
    }

    fn recv_at(
        &mut self,
        _fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        self.hold(token, What::Recv { from }, Some(buf), None);
        Ok(())
    }

    fn splice(
        &mut self,
        _fd_in: &impl AsRawFd,
        _off_in: i64,
        _fd_out: &impl AsRawFd,
        len: u32,
        token: Token,
    ) -> Result<(), QueueFull> {
        self.hold(token, What::Splice { len }, None, None);
        Ok(())
    }

    fn splice_file_to_socket(
        &mut self,
        _file: &impl AsRawFd,
        _offset: i64,
        _pipe_write: &impl AsRawFd,
        _pipe_read: &impl AsRawFd,
        _out: &impl AsRawFd,
        len: u32,
        in_token: Token,
        out_token: Token,
    ) -> Result<(), QueueFull> {
        self.hold(in_token, What::Splice { len }, None, None);
        self.hold(out_token, What::Splice { len }, None, None);
        Ok(())
    }

    fn send_zc_fixed(
        &mut self,
        _fd: &impl AsRawFd,
        index: usize,
        _from: usize,
        len: usize,
        token: Token,
    ) -> Result<(), QueueFull> {
        self.hold(token, What::SendZc { index, len }, None, Some(index));
        Ok(())
    }

    fn fixed_buf_mut(&mut self, index: usize) -> Option<&mut [u8]> {
        (self.fixed_users[index] == 0).then(|| self.fixed[index].as_mut_slice())
    }

    fn fixed_buf(&self, index: usize) -> &[u8] {
        &self.fixed[index]
    }

    fn fixed_in_use(&self, index: usize) -> bool {
        self.fixed_users[index] > 0
    }
}
