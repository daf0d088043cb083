//! A stream fd for a connection that is not one: a socketpair whose far end two std threads pump to and from the plugin's own reader and writer.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::thread;

/// How much one read moves at most; a WebSocket frame of the gateway fits in a few of these.
const CHUNK: usize = 16 * 1024;

/// Turns a connection that has no file descriptor of its own (a child's stdin/stdout, a TLS
/// session, an SSH channel of a blocking library) into the connected stream fd `connect`
/// must return.
///
/// Creates a `socketpair(2)` and returns one end for the host; two threads copy between the
/// other end and the plugin's connection:
/// - `upstream_read` → host: at upstream EOF (or an error) the host sees EOF;
/// - host → `upstream_write`, flushed after every chunk: when the host closes its fd,
///   `upstream_write` is dropped, which is how the upstream learns the stream is over.
///
/// A blocking read on `upstream_read` cannot be interrupted, so the first thread ends only
/// when the upstream ends (or its next data finds the host gone): make dropping
/// `upstream_write` end the upstream connection. For a socket, whose clones share one
/// connection, that means a writer whose `Drop` calls `shutdown(Shutdown::Write)`.
pub fn socketpair_pump<R, W>(upstream_read: R, upstream_write: W) -> io::Result<OwnedFd>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    let (host_end, pump_end) = UnixStream::pair()?;
    let pump_read = pump_end.try_clone()?;
    let pump_write = pump_end;

    thread::Builder::new()
        .name("clawlink-pump-down".to_owned())
        .spawn(move || {
            let _ = copy_flushing(upstream_read, &pump_write);
            // The host reads EOF; ignore errors: it may have closed already.
            let _ = pump_write.shutdown(Shutdown::Write);
        })?;
    thread::Builder::new()
        .name("clawlink-pump-up".to_owned())
        .spawn(move || {
            let mut upstream_write = upstream_write;
            let _ = copy_flushing(&pump_read, &mut upstream_write);
            // Dropping `upstream_write` here tells the upstream the host is done.
            drop(upstream_write);
            let _ = pump_read.shutdown(Shutdown::Read);
        })?;
    Ok(OwnedFd::from(host_end))
}

/// Copies until EOF, flushing after every chunk: a buffered writer must not sit on a request
/// the other side is waiting for.
fn copy_flushing(mut from: impl Read, mut to: impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// A clone of a socket closes nothing when dropped; this is what the doc asks for.
    struct ShutdownOnDrop(TcpStream);

    impl Write for ShutdownOnDrop {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }

    impl Drop for ShutdownOnDrop {
        fn drop(&mut self) {
            let _ = self.0.shutdown(Shutdown::Write);
        }
    }

    #[test]
    fn bytes_flow_both_ways_and_eof_propagates() {
        // Upstream: a line-echo server over TCP, reached through the pump.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 {
                writer.write_all(line.to_uppercase().as_bytes()).unwrap();
                line.clear();
            }
            // The host closed its end, so the pump dropped our peer's writer: EOF here.
        });

        let upstream = TcpStream::connect(addr).unwrap();
        let writer = ShutdownOnDrop(upstream.try_clone().unwrap());
        let fd = socketpair_pump(upstream, writer).unwrap();
        let host = UnixStream::from(fd);
        let mut reader = BufReader::new(host.try_clone().unwrap());
        (&host).write_all(b"hello\n").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "HELLO\n");

        // The host is done: the upstream sees EOF once its writer is gone...
        host.shutdown(Shutdown::Write).unwrap();
        // ...and the server ending closes its socket, so the host reads EOF too.
        server.join().unwrap();
        line.clear();
        assert_eq!(reader.read_line(&mut line).unwrap(), 0);
    }
}
