//! The `socks5` settings table: parsed and checked without any network, and the password file read only after its owner and mode pass.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::Socks5Error;

/// Every key the table may hold; anything else is a typo worth refusing.
pub const KNOWN_SETTINGS: [&str; 6] = [
    "proxy",
    "target_host",
    "target_port",
    "username",
    "password_file",
    "connect_timeout_ms",
];

/// Where the gateway is, as the proxy sees it: the seed's gateway on the proxy's host.
pub const DEFAULT_TARGET_HOST: &str = "127.0.0.1";
/// The gateway's default WebSocket port.
pub const DEFAULT_TARGET_PORT: u16 = 18789;
/// The whole connect (proxy TCP connect and handshake) must finish within this by default.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// An upper bound so a typo (an extra digit or three) is caught rather than waited out.
pub const MAX_CONNECT_TIMEOUT_MS: u64 = 600_000;
/// RFC 1929 sends lengths in one byte; RFC 1928 does the same for domain names.
pub const MAX_FIELD_LEN: usize = 255;
/// A password file larger than this is certainly not a password file.
const MAX_PASSWORD_FILE_LEN: u64 = 4096;

/// A host as SOCKS5 sends it: an address literal (ATYP 1 or 4) or a name (ATYP 3) the proxy
/// resolves, so names of the proxy's network work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A domain name, at most 255 bytes.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A host and a port; displays as `host:port`, IPv6 in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host.
    pub host: Host,
    /// The port (never 0).
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// RFC 1929 credentials: the username, and the file the password is read from at connect
/// time (so a changed password needs no restart, and the password is in memory only briefly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The username, 1-255 bytes.
    pub username: String,
    /// A 0600 file of the user's holding the password.
    pub password_file: PathBuf,
}

/// The parsed `transports.socks5` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The SOCKS5 proxy.
    pub proxy: Endpoint,
    /// The gateway's WebSocket port as the proxy reaches it.
    pub target: Endpoint,
    /// Username/password authentication, if configured.
    pub credentials: Option<Credentials>,
    /// The limit on connecting to the proxy and the whole handshake.
    pub connect_timeout: Duration,
}

impl Settings {
    /// Parses the settings JSON object; unknown keys, missing `proxy` and bad values are
    /// refused with the key named. Touches neither the network nor the password file.
    pub fn from_json(settings: &Value) -> Result<Settings, Socks5Error> {
        let empty = Map::new();
        let table = settings.as_object().unwrap_or(&empty);
        if let Some(key) = table
            .keys()
            .find(|key| !KNOWN_SETTINGS.contains(&key.as_str()))
        {
            return Err(Socks5Error::UnknownSetting {
                key: key.clone(),
                known: KNOWN_SETTINGS.join(", "),
            });
        }
        let proxy = match table.get("proxy") {
            None => {
                return Err(bad(
                    "proxy",
                    "missing: set it to the proxy's \"host:port\", e.g. \"127.0.0.1:1080\" for `ssh -D 1080`",
                ))
            }
            Some(value) => parse_endpoint("proxy", string("proxy", value)?)?,
        };
        let target_host = match table.get("target_host") {
            None => Host::Ip(DEFAULT_TARGET_HOST.parse().expect("a valid literal")),
            Some(value) => parse_host("target_host", string("target_host", value)?)?,
        };
        let target_port = match table.get("target_port") {
            None => DEFAULT_TARGET_PORT,
            Some(value) => port("target_port", value)?,
        };
        let username = table
            .get("username")
            .map(|value| string("username", value))
            .transpose()?;
        let password_file = table
            .get("password_file")
            .map(|value| string("password_file", value))
            .transpose()?;
        let credentials =
            match (username, password_file) {
                (None, None) => None,
                (Some(_), None) => return Err(bad(
                    "password_file",
                    "missing: `username` is set, so give the file holding the password (mode 0600)",
                )),
                (None, Some(_)) => {
                    return Err(bad(
                        "username",
                        "missing: `password_file` is set, so give the username it belongs to",
                    ))
                }
                (Some(username), Some(file)) => {
                    if username.is_empty() || username.len() > MAX_FIELD_LEN {
                        return Err(bad(
                            "username",
                            format!("must be 1-{MAX_FIELD_LEN} bytes (RFC 1929)"),
                        ));
                    }
                    if file.is_empty() {
                        return Err(bad("password_file", "is empty: give a file path"));
                    }
                    Some(Credentials {
                        username: username.to_owned(),
                        password_file: PathBuf::from(file),
                    })
                }
            };
        let timeout_ms = match table.get("connect_timeout_ms") {
            None => DEFAULT_CONNECT_TIMEOUT_MS,
            Some(value) => match value.as_u64() {
                Some(ms) if (1..=MAX_CONNECT_TIMEOUT_MS).contains(&ms) => ms,
                _ => {
                    return Err(bad(
                        "connect_timeout_ms",
                        format!(
                            "must be a whole number of milliseconds from 1 to {MAX_CONNECT_TIMEOUT_MS}, not {value}"
                        ),
                    ))
                }
            },
        };
        Ok(Settings {
            proxy,
            target: Endpoint {
                host: target_host,
                port: target_port,
            },
            credentials,
            connect_timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// Everything that can be checked without the network: the table, and the password
    /// file's type, owner, mode and content.
    pub fn check(&self) -> Result<(), Socks5Error> {
        if let Some(credentials) = &self.credentials {
            read_password(&credentials.password_file)?;
        }
        Ok(())
    }

    /// One line for status output, without secrets: "socks5 <proxy> → <target>".
    pub fn describe(&self) -> String {
        format!("socks5 {} → {}", self.proxy, self.target)
    }
}

fn bad(key: &'static str, problem: impl Into<String>) -> Socks5Error {
    Socks5Error::BadSetting {
        key,
        problem: problem.into(),
    }
}

fn string<'a>(key: &'static str, value: &'a Value) -> Result<&'a str, Socks5Error> {
    value
        .as_str()
        .ok_or_else(|| bad(key, format!("must be a string, not {value}")))
}

fn port(key: &'static str, value: &Value) -> Result<u16, Socks5Error> {
    value
        .as_u64()
        .and_then(|port| u16::try_from(port).ok())
        .filter(|&port| port != 0)
        .ok_or_else(|| {
            bad(
                key,
                format!("must be a port number from 1 to 65535, not {value}"),
            )
        })
}

/// `host:port`, `[v6]:port`; an unbracketed IPv6 literal is ambiguous and refused.
fn parse_endpoint(key: &'static str, text: &str) -> Result<Endpoint, Socks5Error> {
    let example = "write \"host:port\", e.g. \"127.0.0.1:1080\" or \"[::1]:1080\"";
    let (host, port_text) = if let Some(rest) = text.strip_prefix('[') {
        rest.split_once("]:")
            .ok_or_else(|| bad(key, format!("`{text}` has no port: {example}")))?
    } else {
        let (host, port_text) = text
            .rsplit_once(':')
            .ok_or_else(|| bad(key, format!("`{text}` has no port: {example}")))?;
        if host.contains(':') {
            return Err(bad(
                key,
                format!("`{text}`: put an IPv6 address in brackets: \"[{host}]:{port_text}\""),
            ));
        }
        (host, port_text)
    };
    let port = port_text
        .parse::<u16>()
        .ok()
        .filter(|&port| port != 0)
        .ok_or_else(|| {
            bad(
                key,
                format!("`{port_text}` is not a port from 1 to 65535: {example}"),
            )
        })?;
    Ok(Endpoint {
        host: parse_host(key, host)?,
        port,
    })
}

/// An address literal (brackets allowed around IPv6) or a plausible name.
fn parse_host(key: &'static str, text: &str) -> Result<Host, Socks5Error> {
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    if text.is_empty() || text.len() > MAX_FIELD_LEN {
        return Err(bad(
            key,
            format!("a host name must be 1-{MAX_FIELD_LEN} bytes"),
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | ':' | '@' | '[' | ']'))
    {
        return Err(bad(
            key,
            format!(
                "`{}` is not a host name or address (it contains {c:?})",
                text.escape_debug()
            ),
        ));
    }
    Ok(Host::Name(text.to_owned()))
}

/// Reads the password after checking, on the opened descriptor (no swap between check and
/// read), that the file is a regular file of ours that group and others cannot access.
/// One trailing newline (LF or CRLF), as editors and `echo` leave, is not part of it.
pub fn read_password(path: &Path) -> Result<SecretString, Socks5Error> {
    let problem = |problem: String| Socks5Error::PasswordFile {
        path: path.to_owned(),
        problem,
    };
    // O_NONBLOCK: a FIFO in its place must not hang the open; it is refused just below.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| problem(format!("cannot open it: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| problem(format!("cannot stat it: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(problem("is not a regular file".to_owned()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(problem(format!(
            "is owned by uid {}, not by you (uid {me}): use a file of your own, mode 0600",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Socks5Error::PasswordFileMode {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > MAX_PASSWORD_FILE_LEN {
        return Err(problem(format!(
            "is {} bytes, too large for a password file",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_PASSWORD_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| problem(format!("cannot read it: {e}")))?;
    let mut text = String::from_utf8(bytes).map_err(|_| problem("is not UTF-8 text".to_owned()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(problem("is empty: put the password in it".to_owned()));
    }
    if text.len() > MAX_FIELD_LEN {
        return Err(problem(format!(
            "holds a password longer than {MAX_FIELD_LEN} bytes, which SOCKS5 (RFC 1929) cannot send"
        )));
    }
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;
    use crate::EXAMPLE_CONFIG;

    fn error(settings: Value) -> String {
        Settings::from_json(&settings).unwrap_err().to_string()
    }

    #[test]
    fn defaults_fill_everything_but_the_proxy() {
        let settings = Settings::from_json(&json!({"proxy": "127.0.0.1:1080"})).unwrap();
        assert_eq!(settings.proxy.to_string(), "127.0.0.1:1080");
        assert_eq!(settings.target.to_string(), "127.0.0.1:18789");
        assert_eq!(settings.credentials, None);
        assert_eq!(settings.connect_timeout, Duration::from_secs(10));
        assert_eq!(
            settings.describe(),
            "socks5 127.0.0.1:1080 → 127.0.0.1:18789"
        );
    }

    #[test]
    fn hosts_are_literals_or_names() {
        let settings = Settings::from_json(&json!({
            "proxy": "[::1]:9050", "target_host": "gw.internal", "target_port": 443
        }))
        .unwrap();
        assert_eq!(settings.proxy.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(settings.target.host, Host::Name("gw.internal".into()));
        assert_eq!(settings.describe(), "socks5 [::1]:9050 → gw.internal:443");
        let settings =
            Settings::from_json(&json!({"proxy": "proxy.lan:1080", "target_host": "[fd00::1]"}))
                .unwrap();
        assert_eq!(settings.target.to_string(), "[fd00::1]:18789");
    }

    #[test]
    fn mistakes_name_the_key() {
        assert!(error(json!({})).contains("`proxy`"));
        let e = error(json!({"proxy": "h:1", "targt_host": "x"}));
        assert!(e.starts_with("unknown setting `targt_host`"), "{e}");
        assert!(e.contains("target_host"), "{e}");
        assert!(error(json!({"proxy": "h"})).contains("has no port"));
        assert!(error(json!({"proxy": "h:0"})).contains("not a port"));
        assert!(error(json!({"proxy": "::1:1080"})).contains("\"[::1]:1080\""));
        assert!(error(json!({"proxy": 1080})).contains("must be a string"));
        assert!(error(json!({"proxy": "h:1", "target_port": 70000})).contains("`target_port`"));
        assert!(error(json!({"proxy": "h:1", "target_host": "a b"})).contains("`target_host`"));
        assert!(
            error(json!({"proxy": "h:1", "connect_timeout_ms": 0})).contains("connect_timeout_ms")
        );
        assert!(error(json!({"proxy": "h:1", "username": "u"})).contains("`password_file`"));
        assert!(error(json!({"proxy": "h:1", "password_file": "/p"})).contains("`username`"));
        let long = "u".repeat(256);
        assert!(
            error(json!({"proxy": "h:1", "username": long, "password_file": "/p"}))
                .contains("1-255 bytes")
        );
    }

    #[test]
    fn the_example_config_lists_every_setting() {
        let text = EXAMPLE_CONFIG.to_str().unwrap();
        let mut keys: Vec<&str> = text
            .lines()
            .map(|line| line.trim_start_matches(['#', ' ']))
            .filter_map(|line| line.split_once(" = ").map(|(key, _)| key))
            .collect();
        keys.sort_unstable();
        // `local_port` is clawlink's own (its forwards' preferred port), never passed on.
        let mut known = KNOWN_SETTINGS.to_vec();
        known.push("local_port");
        known.sort_unstable();
        assert_eq!(keys, known);
    }

    fn password_file(contents: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socks.pass");
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn the_password_file_must_be_private() {
        let (_dir, path) = password_file("s3cret\n", 0o600);
        assert_eq!(read_password(&path).unwrap().expose_secret(), "s3cret");
        let (_dir, path) = password_file("s3cret\r\n", 0o400);
        assert_eq!(read_password(&path).unwrap().expose_secret(), "s3cret");
        for mode in [0o644, 0o640, 0o604, 0o660, 0o606] {
            let (_dir, path) = password_file("s3cret", mode);
            let e = read_password(&path).unwrap_err();
            assert_eq!(e.code(), clawlink_plugin_sdk::ErrorCode::Config);
            let e = e.to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(&format!("chmod 600 {}", path.display())), "{e}");
            assert!(e.contains(&format!("{mode:04o}")), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn the_password_file_must_hold_a_password() {
        let (_dir, path) = password_file("\n", 0o600);
        assert!(read_password(&path)
            .unwrap_err()
            .to_string()
            .contains("is empty"));
        let (_dir, path) = password_file(&"x".repeat(256), 0o600);
        assert!(read_password(&path)
            .unwrap_err()
            .to_string()
            .contains("255 bytes"));
        let dir = tempfile::tempdir().unwrap();
        assert!(read_password(dir.path())
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        let missing = dir.path().join("missing");
        let e = read_password(&missing).unwrap_err().to_string();
        assert!(e.contains("cannot open it"), "{e}");
    }

    #[test]
    fn check_reads_the_password_file_but_not_the_network() {
        let (_dir, path) = password_file("pw", 0o644);
        let settings = Settings::from_json(&json!({
            // A port nothing listens on: check must not care.
            "proxy": "127.0.0.1:1", "username": "me", "password_file": path
        }))
        .unwrap();
        assert!(matches!(
            settings.check(),
            Err(Socks5Error::PasswordFileMode { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        settings.check().unwrap();
    }
}
