//! Transport plugin `socks5`: the gateway's WebSocket port through a SOCKS5 proxy (RFC 1928, with RFC 1929 username/password), as a cdylib clawlink loads at run time.
//!
//! Typical proxies: `ssh -D 1080 -N gateway-host` (then the default target, 127.0.0.1:18789,
//! is the gateway on that host), Tor, a corporate SOCKS proxy. Names in `target_host` are
//! sent to the proxy unresolved (ATYP domain name), so names only the proxy's network knows
//! work; address literals go as IPv4/IPv6. The connected TCP socket is handed to clawlink
//! as it is: no pump thread. Built on `clawlink-plugin-sdk`: std threads and blocking
//! sockets only, no tokio.
//!
//! `ssh -D` sends no failure reply when it cannot reach the target: it hangs up. That is
//! reported as the gateway not running at the target, as the proxy host sees it.
//!
//! It offers ports too (`clawlink tunnel`, `up`'s forwards, `dashboard`): a local client's
//! connection to port P is a SOCKS5 CONNECT to `target_host:P`, so `target_port` and the
//! Control UI sandbox after it are both reachable.

#![warn(missing_docs)]

mod error;
mod handshake;
mod settings;

use std::ffi::CStr;
use std::os::fd::OwnedFd;

use clawlink_plugin_sdk::serde_json::Value;
use clawlink_plugin_sdk::{
    export_transport, plugin_version, CheckSettings, Describe, PluginError, Ports, TransportPlugin,
};

pub use error::Socks5Error;
pub use handshake::{connect, explain_reply};
pub use settings::{
    read_password, Credentials, Endpoint, Host, Settings, DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_TARGET_HOST, DEFAULT_TARGET_PORT, KNOWN_SETTINGS, MAX_CONNECT_TIMEOUT_MS,
};

/// The example settings table `clawlink transports` shows; lists every setting (tested).
pub const EXAMPLE_CONFIG: &CStr = c"proxy = \"127.0.0.1:1080\"          # required: the SOCKS5 proxy, e.g. `ssh -D 1080 -N gateway-host`
target_host = \"127.0.0.1\"         # the gateway as the proxy's host sees it (a name is resolved by the proxy)
target_port = 18789
# username = \"me\"                 # RFC 1929 login: both username and password_file, or neither
# password_file = \"/home/me/.config/clawlink/socks5.password\"   # yours, mode 0600
connect_timeout_ms = 10000         # the proxy connection and the whole handshake
# local_port = 18789               # clawlink tunnel's preferred local port (read by clawlink itself)
";

/// The `socks5` transport plugin.
pub struct Socks5;

impl TransportPlugin for Socks5 {
    const NAME: &'static CStr = c"socks5";
    const VERSION: &'static CStr = plugin_version!();
    const SUMMARY: &'static CStr =
        c"the gateway through a SOCKS5 proxy (ssh -D, Tor, a corporate proxy), optional username/password";
    const EXAMPLE_CONFIG: &'static CStr = EXAMPLE_CONFIG;
    const CHECK_SETTINGS: Option<CheckSettings> = Some(check_settings);
    const DESCRIBE: Option<Describe> = Some(describe);
    const PORTS: Option<Ports> = Some(Ports {
        gateway_port,
        connect_port,
    });

    fn connect(settings: &Value) -> Result<OwnedFd, PluginError> {
        let settings = Settings::from_json(settings)?;
        Ok(OwnedFd::from(connect(&settings)?))
    }
}

fn gateway_port(settings: &Value) -> Result<u16, PluginError> {
    Ok(Settings::from_json(settings)?.target.port)
}

/// The same proxy and target host, another port on it.
fn connect_port(settings: &Value, port: u16) -> Result<OwnedFd, PluginError> {
    let mut settings = Settings::from_json(settings)?;
    settings.target.port = port;
    Ok(OwnedFd::from(connect(&settings)?))
}

fn check_settings(settings: &Value) -> Result<(), PluginError> {
    Ok(Settings::from_json(settings)?.check()?)
}

fn describe(settings: &Value) -> Result<String, PluginError> {
    Ok(Settings::from_json(settings)?.describe())
}

export_transport!(Socks5);
