//! A TCP connect that keeps sending fresh SYNs while the path is dead, so a path that comes back is used within half a second instead of at the kernel's next SYN retransmission (1 s, 3 s, 7 s, 15 s after the first).
//!
//! The kernel retransmits an unanswered SYN with exponential backoff; a connect started
//! during a black hole or with the link down therefore notices a restored path only at
//! its next retransmission, seconds later. Here a new attempt starts every
//! [`RESEND_EVERY`] while earlier ones are still waiting (at most [`MAX_IN_FLIGHT`]), and
//! the first to connect wins; the others are dropped. A refusal (something answered: the
//! path works, nothing listens) ends the connect at once, as a plain connect would.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How often a fresh attempt starts while none has connected.
pub const RESEND_EVERY: Duration = Duration::from_millis(500);
/// The most attempts waiting at once (a 10 s limit starts 20 over its course).
pub const MAX_IN_FLIGHT: usize = 8;

/// Connects to `addr` within `limit`, starting a fresh attempt every [`RESEND_EVERY`]
/// until one connects; `ConnectionRefused` ends it at once, a path that stays dead ends in
/// `TimedOut` ("no answer within …").
pub async fn connect(addr: SocketAddr, limit: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + limit;
    let mut attempts = FuturesUnordered::new();
    let mut next_start = Instant::now();
    let mut last_error: Option<io::Error> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                match last_error {
                    Some(error) => {
                        format!("no connection within {} ms ({error})", limit.as_millis())
                    }
                    None => format!("no answer within {} ms", limit.as_millis()),
                },
            ));
        }
        if now >= next_start && attempts.len() < MAX_IN_FLIGHT {
            attempts.push(TcpStream::connect(addr));
            next_start = now + RESEND_EVERY;
        }
        let wake = next_start.min(deadline);
        tokio::select! {
            Some(result) = attempts.next() => match result {
                Ok(stream) => return Ok(stream),
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => return Err(error),
                // Unreachable network or host (a link that is down, no route yet): the next
                // attempt may find it back.
                Err(error) => last_error = Some(error),
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_to_a_listener_and_refusal_is_immediate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = connect(addr, Duration::from_secs(5)).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), addr);
        drop(listener);
        let started = std::time::Instant::now();
        let error = connect(addr, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
