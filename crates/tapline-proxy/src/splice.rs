//! Moving a direction's bytes from one TCP socket to another inside the kernel: `splice(2)`
//! from the socket into a pipe, then from the pipe into the other socket. The bytes never
//! enter the process, which saves the two copies of a read/write loop.

use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{
    fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags,
};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for (the kernel may give less); also the most moved per call.
const PIPE_SIZE: usize = 1024 * 1024;

/// A pipe holding one direction's bytes in flight.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

impl Pipe {
    /// A new pipe, or `None` when the system has none to give (out of descriptors): the
    /// caller copies instead.
    pub(crate) fn new() -> Option<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?;
        // A bigger pipe means fewer calls; the default (64 KiB) still works.
        let _ = fcntl_setpipe_size(&write, PIPE_SIZE);
        let size = fcntl_getpipe_size(&write).ok()?;
        Some(Pipe { read, write, size })
    }

    /// Moves everything `from` sends to `to` until `from` reaches end of stream; `moved` is
    /// told the size of every batch.
    pub(crate) async fn relay(
        &self,
        from: &TcpStream,
        to: &TcpStream,
        mut moved: impl FnMut(usize),
    ) -> io::Result<()> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        loop {
            // The pipe is empty here, so "would block" can only mean `from` has nothing yet.
            let n = loop {
                from.readable().await?;
                match from.try_io(Interest::READABLE, || {
                    splice(from, None, &self.write, None, self.size, flags).map_err(io::Error::from)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Ok(());
            }
            moved(n);
            // Now the pipe holds `left` bytes, so "would block" means `to` is full.
            let mut left = n;
            while left > 0 {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || {
                    splice(&self.read, None, to, None, left, flags).map_err(io::Error::from)
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn moves_every_byte_in_order_until_end_of_stream() {
        let (mut sender, from) = pair().await;
        let (to, mut receiver) = pair().await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            sender.write_all(&data).await.unwrap();
            sender.shutdown().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).await.unwrap();
            got
        });
        let pipe = Pipe::new().expect("a pipe");
        let mut total = 0;
        pipe.relay(&from, &to, |n| total += n).await.unwrap();
        drop(to);
        writer.await.unwrap();
        assert_eq!(total, expected.len());
        assert!(reader.await.unwrap() == expected, "bytes differ");
    }
}
