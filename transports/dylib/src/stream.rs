//! Turns the file descriptor a plugin's `connect` returned into a tokio stream, after checking that it is a connected stream socket.
//!
//! The fd crosses a C boundary as a bare integer, so nothing vouches for it: it could be
//! negative, closed, one of our standard streams, a pipe or a datagram socket. Each case is
//! refused with the plugin named, and only a socket we have checked is adopted (and then
//! closed by us, as the ABI says ownership passes on success).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use clawlink_core::transport::DuplexStream;

/// Adopts `raw` as a non-blocking tokio stream (Unix or TCP socket); the error says what
/// the fd was instead. Must run inside a tokio runtime.
pub fn adopt(raw: RawFd) -> Result<Box<dyn DuplexStream>, String> {
    if raw < 0 {
        return Err(format!(
            "returned success with no file descriptor (fd {raw})"
        ));
    }
    if raw <= 2 {
        // Never close these: they are clawlink's stdin/stdout/stderr.
        return Err(format!(
            "returned fd {raw}, one of clawlink's standard streams, not a socket of its own"
        ));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; an invalid fd yields -1/EBADF.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } == -1 {
        return Err(format!("returned fd {raw}, which is not open"));
    }
    // SAFETY: the fd is open and the ABI hands its ownership to us on CLAWLINK_OK.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    let kind = socket_kind(&owned).map_err(|what| format!("returned fd {raw}, which is {what}"))?;
    let stream: Box<dyn DuplexStream> = match kind {
        Family::Unix => {
            let std = std::os::unix::net::UnixStream::from(owned);
            std.set_nonblocking(true)
                .map_err(|e| format!("fd {raw}: {e}"))?;
            Box::new(tokio::net::UnixStream::from_std(std).map_err(|e| format!("fd {raw}: {e}"))?)
        }
        Family::Inet => {
            let std = std::net::TcpStream::from(owned);
            std.set_nonblocking(true)
                .map_err(|e| format!("fd {raw}: {e}"))?;
            let _ = std.set_nodelay(true);
            Box::new(tokio::net::TcpStream::from_std(std).map_err(|e| format!("fd {raw}: {e}"))?)
        }
    };
    Ok(stream)
}

#[derive(Debug, PartialEq, Eq)]
enum Family {
    Unix,
    Inet,
}

/// What kind of socket `fd` is, or what it is instead (for the error).
fn socket_kind(fd: &OwnedFd) -> Result<Family, &'static str> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    // SAFETY: fstat/getsockopt/getsockname write only into the buffers we pass, sized for them.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(raw, &mut stat) != 0 {
            return Err("not inspectable (fstat failed)");
        }
        if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err("not a socket (a file, pipe or device)");
        }
        let mut kind: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        if libc::getsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        ) != 0
        {
            return Err("a socket whose type cannot be read");
        }
        if kind != libc::SOCK_STREAM {
            return Err("a socket that is not a stream (SOCK_STREAM) socket");
        }
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(
            raw,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return Err("a socket whose address cannot be read");
        }
        match i32::from(addr.ss_family) {
            libc::AF_UNIX => Ok(Family::Unix),
            libc::AF_INET | libc::AF_INET6 => Ok(Family::Inet),
            _ => Err("a socket of a family clawlink does not stream over (not Unix, IPv4 or IPv6)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[tokio::test]
    async fn socketpair_ends_and_tcp_sockets_are_adopted() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut stream = adopt(ours.into_raw_fd()).unwrap();
        stream.write_all(b"ping").await.unwrap();
        let mut theirs = tokio::net::UnixStream::from_std({
            theirs.set_nonblocking(true).unwrap();
            theirs
        })
        .unwrap();
        let mut buf = [0u8; 4];
        theirs.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(adopt(tcp.into_raw_fd()).is_ok());
    }

    fn refusal(raw: RawFd) -> String {
        match adopt(raw) {
            Ok(_) => panic!("fd {raw} was adopted"),
            Err(why) => why,
        }
    }

    #[tokio::test]
    async fn anything_else_is_refused_saying_what_it_was() {
        assert!(refusal(-1).contains("no file descriptor"));
        assert!(refusal(1).contains("standard streams"));
        let file = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
        assert!(refusal(file.into_raw_fd()).contains("not a socket"));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(refusal(udp.into_raw_fd()).contains("not a stream"));
        // A number no descriptor has (closing a freshly closed one could race with another
        // test's new fd of the same number).
        let raw = 999_999;
        assert!(refusal(raw).contains("not open"));
    }
}
