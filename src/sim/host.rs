//! One simulated host's I/O: its own disk ([`SimDisk`]) and its end of the
//! network ([`Net`]), behind the same seam as the real ring. The disk run
//! uses it too, with a network nothing is sent on.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::disk::SimDisk;
use super::net::{Net, Side};
use crate::io::{Io, QueueFull, Timespec, Token};

pub(crate) struct Host<'a> {
    pub side: Side,
    pub disk: &'a mut SimDisk,
    pub net: &'a mut Net,
}

impl Io for Host<'_> {
    fn write_then_datasync(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        offset: u64,
        write_token: Token,
        sync_token: Option<Token>,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        self.disk.now_ns = self.net.now_ns;
        self.disk
            .write_then_datasync(fd, buf, from, offset, write_token, sync_token)
    }

    fn write_fixed_then_datasync(
        &mut self,
        _fd: &impl AsRawFd,
        _index: usize,
        _from: usize,
        _len: usize,
        _offset: u64,
        _write_token: Token,
        _sync_token: Option<Token>,
    ) -> Result<(), QueueFull> {
        unimplemented!("the simulator runs buffered WALs: O_DIRECT is not modelled")
    }

    fn write_now(&mut self, file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.disk.write_now(file, bytes, offset)
    }

    fn read(
        &mut self,
        _fd: &impl AsRawFd,
        buf: Vec<u8>,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        // The one read the state machines make is the sink's connect
        // wake-up: the simulator completes it when it answers the attempt.
        self.net.push_wake(self.side, buf, token);
        Ok(())
    }

    fn send(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        self.net.push_send(self.side, fd, buf, from, token, None);
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
        self.net
            .push_send(self.side, fd, buf, from, token, Some(timeout_token));
        Ok(())
    }

    fn recv_at(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        self.net.push_recv(self.side, fd, buf, from, token);
        Ok(())
    }

    fn splice(
        &mut self,
        _fd_in: &impl AsRawFd,
        _off_in: i64,
        _fd_out: &impl AsRawFd,
        _len: u32,
        _token: Token,
    ) -> Result<(), QueueFull> {
        unimplemented!("the simulated sink sends by copy: splice is not modelled")
    }

    fn splice_file_to_socket(
        &mut self,
        _file: &impl AsRawFd,
        _offset: i64,
        _pipe_write: &impl AsRawFd,
        _pipe_read: &impl AsRawFd,
        _out: &impl AsRawFd,
        _len: u32,
        _in_token: Token,
        _out_token: Token,
    ) -> Result<(), QueueFull> {
        unimplemented!("the simulated sink sends by copy: splice is not modelled")
    }

    fn send_zc_fixed(
        &mut self,
        _fd: &impl AsRawFd,
        _index: usize,
        _from: usize,
        _len: usize,
        _token: Token,
    ) -> Result<(), QueueFull> {
        unimplemented!("the simulated sink sends by copy: SEND_ZC is not modelled")
    }

    fn fixed_buf_mut(&mut self, _index: usize) -> Option<&mut [u8]> {
        unimplemented!("the simulator runs buffered WALs: no registered buffers")
    }

    fn fixed_buf(&self, _index: usize) -> &[u8] {
        unimplemented!("the simulator runs buffered WALs: no registered buffers")
    }

    fn fixed_in_use(&self, _index: usize) -> bool {
        false
    }
}
