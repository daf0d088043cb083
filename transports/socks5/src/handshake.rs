//! RFC 1928 (SOCKS5 CONNECT) and RFC 1929 (username/password) over a blocking TcpStream, every read and write bounded by one deadline.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

use crate::settings::{read_password, Endpoint, Host, Settings};
use crate::Socks5Error;

const VERSION: u8 = 0x05;
const METHOD_NONE: u8 = 0x00;
const METHOD_USERPASS: u8 = 0x02;
const NO_ACCEPTABLE_METHOD: u8 = 0xFF;
const USERPASS_VERSION: u8 = 0x01;
const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_NAME: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// Connects to the proxy and asks it for a stream to the target; on success the stream is
/// the gateway's (timeouts cleared, Nagle off for WebSocket frames).
///
/// The password file is read here, at connect time, so a rotated password needs no restart.
pub fn connect(settings: &Settings) -> Result<TcpStream, Socks5Error> {
    let password = settings
        .credentials
        .as_ref()
        .map(|credentials| read_password(&credentials.password_file))
        .transpose()?;
    let mut io = Io {
        stream: dial(settings)?,
        proxy: settings.proxy.to_string(),
        deadline: Instant::now() + settings.connect_timeout,
        timeout: settings.connect_timeout,
    };
    let use_password = negotiate(&mut io, password.is_some())?;
    if use_password {
        let credentials = settings
            .credentials
            .as_ref()
            .expect("offered only with them");
        let password = password.as_ref().expect("offered only with one");
        authenticate(&mut io, &credentials.username, password, credentials)?;
    }
    request_connect(&mut io, &settings.target)?;
    let stream = io.stream;
    // The host sets what it needs on the fd; ours must not cut its reads short later.
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// TCP to the proxy, trying each resolved address within the one deadline.
///
/// Name resolution is the system's blocking call and cannot be bounded here; the host's
/// own time limit on `connect` covers it.
fn dial(settings: &Settings) -> Result<TcpStream, Socks5Error> {
    let proxy = &settings.proxy;
    let deadline = Instant::now() + settings.connect_timeout;
    let addrs: Vec<_> = match &proxy.host {
        Host::Ip(ip) => vec![(*ip, proxy.port).into()],
        Host::Name(name) => (name.as_str(), proxy.port)
            .to_socket_addrs()
            .map_err(|source| Socks5Error::Resolve {
                host: name.clone(),
                source,
            })?
            .collect(),
    };
    let mut last = None;
    for addr in addrs {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, remaining) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == ErrorKind::ConnectionRefused => Socks5Error::ProxyRefused {
            proxy: proxy.to_string(),
            port: proxy.port,
        },
        Some(e) if !matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            Socks5Error::Io {
                proxy: proxy.to_string(),
                step: "connecting",
                source: e,
            }
        }
        _ => Socks5Error::Timeout {
            proxy: proxy.to_string(),
            step: "connecting",
            ms: millis(settings.connect_timeout),
        },
    })
}

/// The stream to the proxy, with the deadline every step shares.
struct Io {
    stream: TcpStream,
    proxy: String,
    deadline: Instant,
    timeout: Duration,
}

impl Io {
    /// Sets the socket's timeouts to what is left, so a proxy that trickles bytes cannot
    /// stretch the handshake past `connect_timeout_ms`.
    fn arm(&self, step: &'static str) -> Result<(), Socks5Error> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.timed_out(step));
        }
        let set = self
            .stream
            .set_read_timeout(Some(remaining))
            .and_then(|()| self.stream.set_write_timeout(Some(remaining)));
        set.map_err(|e| self.io_error(step, e))
    }

    fn send(&mut self, step: &'static str, bytes: &[u8]) -> Result<(), Socks5Error> {
        self.arm(step)?;
        self.stream
            .write_all(bytes)
            .map_err(|e| self.io_error(step, e))
    }

    fn receive<const N: usize>(&mut self, step: &'static str) -> Result<[u8; N], Socks5Error> {
        let mut buf = [0u8; N];
        self.receive_into(step, &mut buf)?;
        Ok(buf)
    }

    fn receive_into(&mut self, step: &'static str, buf: &mut [u8]) -> Result<(), Socks5Error> {
        let mut filled = 0;
        while filled < buf.len() {
            self.arm(step)?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(Socks5Error::Closed {
                        proxy: self.proxy.clone(),
                        step,
                    })
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(step, e)),
            }
        }
        Ok(())
    }

    fn io_error(&self, step: &'static str, e: io::Error) -> Socks5Error {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => self.timed_out(step),
            _ => Socks5Error::Io {
                proxy: self.proxy.clone(),
                step,
                source: e,
            },
        }
    }

    fn timed_out(&self, step: &'static str) -> Socks5Error {
        Socks5Error::Timeout {
            proxy: self.proxy.clone(),
            step,
            ms: millis(self.timeout),
        }
    }

    fn protocol(&self, problem: String) -> Socks5Error {
        Socks5Error::Protocol {
            proxy: self.proxy.clone(),
            problem,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Method negotiation; returns whether the proxy chose username/password.
fn negotiate(io: &mut Io, have_password: bool) -> Result<bool, Socks5Error> {
    const STEP: &str = "the method negotiation";
    // With credentials we still offer "none": a proxy that needs nothing may pick it.
    let offer: &[u8] = if have_password {
        &[VERSION, 2, METHOD_NONE, METHOD_USERPASS]
    } else {
        &[VERSION, 1, METHOD_NONE]
    };
    io.send(STEP, offer)?;
    let [version, method] = io.receive::<2>(STEP)?;
    if version != VERSION {
        return Err(Socks5Error::NotSocks5 {
            proxy: io.proxy.clone(),
            version,
        });
    }
    match method {
        METHOD_NONE => Ok(false),
        METHOD_USERPASS if have_password => Ok(true),
        NO_ACCEPTABLE_METHOD if have_password => Err(Socks5Error::NoAcceptableMethod {
            proxy: io.proxy.clone(),
            offered: "none, username/password",
            hint: ": it wants a method clawlink does not speak (e.g. GSSAPI)",
        }),
        NO_ACCEPTABLE_METHOD => Err(Socks5Error::NoAcceptableMethod {
            proxy: io.proxy.clone(),
            offered: "none",
            hint: ": it probably requires a login: set `username` and `password_file`",
        }),
        other => Err(io.protocol(format!(
            "it chose authentication method 0x{other:02x}, which was not offered"
        ))),
    }
}

/// RFC 1929: username and password, then one status byte.
fn authenticate(
    io: &mut Io,
    username: &str,
    password: &SecretString,
    credentials: &crate::settings::Credentials,
) -> Result<(), Socks5Error> {
    const STEP: &str = "authentication";
    let password = password.expose_secret().as_bytes();
    // Lengths were checked when the settings and the file were read.
    let mut request = Vec::with_capacity(3 + username.len() + password.len());
    request.push(USERPASS_VERSION);
    request.push(username.len() as u8);
    request.extend_from_slice(username.as_bytes());
    request.push(password.len() as u8);
    request.extend_from_slice(password);
    let sent = io.send(STEP, &request);
    // The buffer held the password: wipe it before anything else can copy it.
    request.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&request);
    sent?;
    let [_version, status] = io.receive::<2>(STEP)?;
    if status != 0 {
        return Err(Socks5Error::AuthRefused {
            proxy: io.proxy.clone(),
            username: username.to_owned(),
            password_file: credentials.password_file.clone(),
            status,
        });
    }
    Ok(())
}

/// The CONNECT request and its reply, read to the end so the stream starts at the
/// gateway's first byte.
fn request_connect(io: &mut Io, target: &Endpoint) -> Result<(), Socks5Error> {
    const STEP: &str = "the CONNECT request";
    let mut request = vec![VERSION, CMD_CONNECT, 0x00];
    match &target.host {
        Host::Ip(IpAddr::V4(ip)) => {
            request.push(ATYP_IPV4);
            request.extend_from_slice(&ip.octets());
        }
        Host::Ip(IpAddr::V6(ip)) => {
            request.push(ATYP_IPV6);
            request.extend_from_slice(&ip.octets());
        }
        Host::Name(name) => {
            // The proxy resolves the name, so names only its network knows work.
            request.push(ATYP_NAME);
            request.push(name.len() as u8);
            request.extend_from_slice(name.as_bytes());
        }
    }
    request.extend_from_slice(&target.port.to_be_bytes());
    io.send(STEP, &request)?;

    let [version, reply, _reserved, atyp] = match io.receive::<4>(STEP) {
        Ok(head) => head,
        Err(Socks5Error::Closed { proxy, .. }) => {
            return Err(Socks5Error::ClosedOnConnect {
                proxy,
                target: target.to_string(),
            })
        }
        Err(e) => return Err(e),
    };
    if version != VERSION {
        return Err(io.protocol(format!(
            "its CONNECT reply has version 0x{version:02x}, not 0x05"
        )));
    }
    if reply != 0x00 {
        let (meaning, explanation) = explain_reply(reply, target);
        return Err(Socks5Error::Reply {
            proxy: io.proxy.clone(),
            target: target.to_string(),
            reply,
            meaning,
            explanation,
        });
    }
    // The bound address: not needed, but it must be consumed.
    let address_len = match atyp {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_NAME => usize::from(io.receive::<1>(STEP)?[0]),
        other => {
            return Err(io.protocol(format!("its CONNECT reply has address type 0x{other:02x}")))
        }
    };
    let mut bound = vec![0u8; address_len + 2];
    io.receive_into(STEP, &mut bound)
}

/// The RFC's name for a CONNECT failure, and what it most likely means for a gateway
/// behind the proxy. The target is named as the proxy sees it: 127.0.0.1 is the proxy
/// host's own loopback.
pub fn explain_reply(reply: u8, target: &Endpoint) -> (&'static str, String) {
    let host = &target.host;
    let port = target.port;
    match reply {
        0x01 => (
            "general SOCKS server failure",
            "the proxy failed on its side: see the proxy's log".to_owned(),
        ),
        0x02 => (
            "connection not allowed by ruleset",
            format!("the proxy's rules forbid {host}:{port}: ask its administrator, or use another proxy"),
        ),
        0x03 => (
            "network unreachable",
            format!("the proxy has no route to {host}: check `target_host` as the proxy host sees it"),
        ),
        0x04 => (
            "host unreachable",
            format!("the proxy cannot reach {host}: is that host up, and is `target_host` right as the proxy host sees it?"),
        ),
        0x05 => (
            "connection refused",
            format!("the proxy reached {host} but nothing listens on port {port}: is the gateway running there?"),
        ),
        0x06 => (
            "TTL expired",
            format!("packets to {host} expired on the way: a routing loop or too many hops behind the proxy"),
        ),
        0x07 => (
            "command not supported",
            "the proxy does not support CONNECT: use a proxy that does (e.g. `ssh -D`)".to_owned(),
        ),
        0x08 => (
            "address type not supported",
            match host {
                Host::Name(_) => "the proxy cannot resolve names: set `target_host` to an IP address".to_owned(),
                Host::Ip(IpAddr::V6(_)) => "the proxy does not take IPv6 addresses: set `target_host` to an IPv4 address or a name".to_owned(),
                Host::Ip(IpAddr::V4(_)) => "the proxy does not take IPv4 addresses: set `target_host` to a name".to_owned(),
            },
        ),
        _ => (
            "unassigned reply code",
            "the proxy answered with a code RFC 1928 does not define: see the proxy's log".to_owned(),
        ),
    }
}
