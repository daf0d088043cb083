//! Where notifications show: the desktop notification service (org.freedesktop.Notifications over D-Bus; the macOS notification centre) and the agent's console overlay.
//!
//! Linux and the BSDs: the `Notify` method of `org.freedesktop.Notifications` on the session
//! bus (zbus, pure Rust), with the `urgency` hint and, when a sound was asked for, the
//! `sound-name` and `sound-file` hints (plus `suppress-sound` when clawlink plays the sound
//! itself, so it is not heard twice). A service is "there" when it owns the name or is
//! D-Bus-activatable; every bus call is bounded by the delivery timeout, so a missing or
//! wedged service answers `NOTIFICATIONS_UNAVAILABLE` instead of a hang.
//!
//! macOS: the notification centre through `osascript` (`display notification … sound name
//! "Glass"`), the one way to post there without an app bundle of our own; macOS keeps its
//! permission state private to the posting app, so the `notifications` permission is not
//! reported there (the app omits what it cannot know, too).
//!
//! The session bus address comes from the environment (`DBUS_SESSION_BUS_ADDRESS`, else
//! `$XDG_RUNTIME_DIR/bus`), as for every D-Bus client.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::text::terminal_safe;
use serde_json::{json, Value};

use crate::request::Urgency;

/// One notification, ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub title: String,
    pub body: String,
    pub urgency: Urgency,
    /// The `sound-name` hint (a freedesktop sound name; the system sound name on macOS).
    pub sound_name: Option<String>,
    /// The `sound-file` hint.
    pub sound_file: Option<PathBuf>,
    /// clawlink plays the sound itself: the service should stay silent.
    pub suppress_sound: bool,
}

/// Whether a notification service is there to show notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available {
        /// `name version (vendor)` from the service, when it says.
        server: Option<String>,
        /// Whether the service plays sounds itself (its `sound` capability), when known.
        plays_sounds: Option<bool>,
    },
    Unavailable {
        reason: String,
    },
    /// The platform does not tell (macOS without an app bundle).
    Unknown,
}

impl Availability {
    /// The node's `notifications` permission: granted, denied, or not reported.
    pub fn permission(&self) -> Option<bool> {
        match self {
            Self::Available { .. } => Some(true),
            Self::Unavailable { .. } => Some(false),
            Self::Unknown => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Self::Available {
                server,
                plays_sounds,
            } => json!({"available": true, "server": server, "playsSounds": plays_sounds}),
            Self::Unavailable { reason } => json!({"available": false, "reason": reason}),
            Self::Unknown => json!({"available": null}),
        }
    }
}

/// Why a notification could not be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// No service (no session bus, nobody owns the name, a timeout).
    #[error("{0}")]
    Unavailable(String),
    /// The service refused us.
    #[error("{0}")]
    NotAuthorized(String),
}

/// A notification service.
#[async_trait]
pub trait DesktopNotifier: Send + Sync {
    /// `freedesktop` or `macos`.
    fn name(&self) -> &'static str;

    /// Whether notifications can be shown now.
    async fn probe(&self) -> Availability;

    /// Shows `notification`; answers the service's notification id when it gives one.
    async fn show(&self, notification: &Notification) -> Result<Option<u32>, DeliveryError>;
}

/// This platform's notification service, each call bounded by `timeout`.
pub fn native(timeout: Duration) -> Arc<dyn DesktopNotifier> {
    #[cfg(target_os = "macos")]
    {
        Arc::new(NotificationCenter::new(timeout))
    }
    #[cfg(not(target_os = "macos"))]
    {
        Arc::new(freedesktop::FreedesktopNotifications::new(timeout))
    }
}

/// Prints the notification on the agent's console (the `overlay` delivery) and returns the
/// line.
pub fn show_overlay(notification: &Notification) -> String {
    let text = match (notification.title.is_empty(), notification.body.is_empty()) {
        (false, false) => format!("{} — {}", notification.title, notification.body),
        (false, true) => notification.title.clone(),
        _ => notification.body.clone(),
    };
    // Text from the network must not drive the terminal.
    let text = terminal_safe(&text);
    let line = format!(
        "clawlink notification [{}]: {text}",
        notification.urgency.as_str()
    );
    eprintln!("{line}");
    line
}

/// `body` as plain text for a server that reads the body as markup (the `body-markup`
/// capability: a subset of HTML with `<b>`, `<a href>`, `<img>`…): the sender's `<`, `>` and
/// `&` are shown, not obeyed. Servers without the capability show the body as it is.
#[cfg_attr(target_os = "macos", allow(dead_code))]
fn markup_escaped(body: &str) -> Cow<'_, str> {
    if !body.contains(['&', '<', '>']) {
        return Cow::Borrowed(body);
    }
    let mut out = String::with_capacity(body.len() + 16);
    for c in body.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The freedesktop summary/body pair: a notification without a title shows its body as the
/// summary (servers render an empty summary as a blank line, or refuse it).
fn summary_and_body(notification: &Notification) -> (&str, &str) {
    if notification.title.is_empty() {
        (&notification.body, "")
    } else {
        (&notification.title, &notification.body)
    }
}

#[cfg(not(target_os = "macos"))]
mod freedesktop {
    //! org.freedesktop.Notifications over the session bus.

    use std::collections::HashMap;
    use std::time::Duration;

    use async_trait::async_trait;
    use zbus::zvariant::Value;

    use super::{
        markup_escaped, summary_and_body, Availability, DeliveryError, DesktopNotifier,
        Notification,
    };

    const SERVICE: &str = "org.freedesktop.Notifications";
    const PATH: &str = "/org/freedesktop/Notifications";
    const APP_NAME: &str = "clawlink";

    pub struct FreedesktopNotifications {
        timeout: Duration,
    }

    impl FreedesktopNotifications {
        pub fn new(timeout: Duration) -> Self {
            Self { timeout }
        }

        /// Runs `work` within the timeout; a timeout or a bus error means unavailable.
        async fn bounded<T>(
            &self,
            what: &str,
            work: impl std::future::Future<Output = Result<T, DeliveryError>>,
        ) -> Result<T, DeliveryError> {
            match tokio::time::timeout(self.timeout, work).await {
                Ok(result) => result,
                Err(_) => Err(DeliveryError::Unavailable(format!(
                    "{what}: no answer from the session bus within {} ms",
                    self.timeout.as_millis()
                ))),
            }
        }

        async fn connect(&self) -> Result<zbus::Connection, DeliveryError> {
            zbus::Connection::session().await.map_err(|e| {
                DeliveryError::Unavailable(format!(
                    "no D-Bus session bus ({e}); notifications need a desktop session"
                ))
            })
        }

        /// Whether a notification server owns the name or can be activated.
        async fn server_present(connection: &zbus::Connection) -> Result<bool, DeliveryError> {
            let bus_error = |e: zbus::fdo::Error| {
                DeliveryError::Unavailable(format!("the session bus failed: {e}"))
            };
            let dbus = zbus::fdo::DBusProxy::new(connection)
                .await
                .map_err(|e| DeliveryError::Unavailable(format!("the session bus failed: {e}")))?;
            let name = zbus::names::BusName::try_from(SERVICE)
                .map_err(|e| DeliveryError::Unavailable(e.to_string()))?;
            if dbus.name_has_owner(name).await.map_err(bus_error)? {
                return Ok(true);
            }
            let activatable = dbus.list_activatable_names().await.map_err(bus_error)?;
            Ok(activatable.iter().any(|n| n.as_str() == SERVICE))
        }

        async fn proxy(
            connection: &zbus::Connection,
        ) -> Result<zbus::Proxy<'static>, DeliveryError> {
            zbus::Proxy::new(connection, SERVICE, PATH, SERVICE)
                .await
                .map_err(|e| DeliveryError::Unavailable(format!("the session bus failed: {e}")))
        }
    }

    fn no_server() -> DeliveryError {
        DeliveryError::Unavailable(format!(
            "no notification server on the session bus (nothing owns or activates {SERVICE}); \
             run a notification daemon (GNOME Shell, KDE Plasma, dunst, mako, xfce4-notifyd, …)"
        ))
    }

    /// A refused call: permission problems are NOT_AUTHORIZED, anything else unavailable.
    fn call_error(error: zbus::Error) -> DeliveryError {
        let name = match &error {
            zbus::Error::MethodError(name, _, _) => name.as_str().to_owned(),
            zbus::Error::FDO(fdo) => match fdo.as_ref() {
                zbus::fdo::Error::AccessDenied(_) => {
                    "org.freedesktop.DBus.Error.AccessDenied".into()
                }
                _ => String::new(),
            },
            _ => String::new(),
        };
        if name.ends_with(".AccessDenied") || name.ends_with(".AuthFailed") {
            DeliveryError::NotAuthorized(format!("the notification server refused: {error}"))
        } else {
            DeliveryError::Unavailable(format!("the notification server failed: {error}"))
        }
    }

    #[async_trait]
    impl DesktopNotifier for FreedesktopNotifications {
        fn name(&self) -> &'static str {
            "freedesktop"
        }

        async fn probe(&self) -> Availability {
            let probed = self
                .bounded("probing notifications", async {
                    let connection = self.connect().await?;
                    if !Self::server_present(&connection).await? {
                        return Err(no_server());
                    }
                    let proxy = Self::proxy(&connection).await?;
                    // Both answers are optional niceties; a server may not implement them.
                    let info: Option<(String, String, String, String)> =
                        proxy.call("GetServerInformation", &()).await.ok();
                    let capabilities: Option<Vec<String>> =
                        proxy.call("GetCapabilities", &()).await.ok();
                    Ok((info, capabilities))
                })
                .await;
            match probed {
                Ok((info, capabilities)) => Availability::Available {
                    server: info.map(|(name, vendor, version, _spec)| {
                        format!("{name} {version} ({vendor})")
                    }),
                    plays_sounds: capabilities.map(|c| c.iter().any(|c| c == "sound")),
                },
                Err(DeliveryError::Unavailable(reason) | DeliveryError::NotAuthorized(reason)) => {
                    Availability::Unavailable { reason }
                }
            }
        }

        async fn show(&self, notification: &Notification) -> Result<Option<u32>, DeliveryError> {
            self.bounded("showing the notification", async {
                let connection = self.connect().await?;
                if !Self::server_present(&connection).await? {
                    return Err(no_server());
                }
                let proxy = Self::proxy(&connection).await?;
                let (summary, body) = summary_and_body(notification);
                // The summary is plain text by the specification; the body is markup when
                // the server says so, and the sender's text must not become markup.
                let capabilities: Vec<String> =
                    proxy.call("GetCapabilities", &()).await.unwrap_or_default();
                let body = if capabilities.iter().any(|c| c == "body-markup") {
                    markup_escaped(body)
                } else {
                    body.into()
                };
                let body: &str = &body;
                let sound_file = notification
                    .sound_file
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned());
                let mut hints: HashMap<&str, Value<'_>> = HashMap::new();
                hints.insert("urgency", Value::U8(notification.urgency.level()));
                if let Some(name) = &notification.sound_name {
                    hints.insert("sound-name", Value::from(name.as_str()));
                }
                if let Some(file) = &sound_file {
                    hints.insert("sound-file", Value::from(file.as_str()));
                }
                if notification.suppress_sound {
                    hints.insert("suppress-sound", Value::Bool(true));
                }
                let actions: Vec<&str> = Vec::new();
                // -1: the server's default expiry.
                let id: u32 = proxy
                    .call(
                        "Notify",
                        &(APP_NAME, 0u32, "", summary, body, actions, hints, -1i32),
                    )
                    .await
                    .map_err(call_error)?;
                Ok(Some(id))
            })
            .await
        }
    }
}

/// The macOS notification centre, posted to through `osascript`.
pub struct NotificationCenter {
    timeout: Duration,
}

impl NotificationCenter {
    pub const OSASCRIPT: &'static str = "/usr/bin/osascript";

    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// The AppleScript that posts `notification` (strings quoted for AppleScript).
    pub fn script(notification: &Notification) -> String {
        let quote = |s: &str| {
            let escaped: String = terminal_safe(s).replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\"")
        };
        let mut script = format!(
            "display notification {} with title {}",
            quote(&notification.body),
            quote(&notification.title)
        );
        if let (Some(name), false) = (&notification.sound_name, notification.suppress_sound) {
            script.push_str(&format!(" sound name {}", quote(name)));
        }
        script
    }

    /// Runs osascript, killing it when it outlives the timeout.
    fn run(script: String, timeout: Duration) -> Result<(), DeliveryError> {
        use std::process::{Command, Stdio};
        let mut child = Command::new(Self::OSASCRIPT)
            .arg("-e")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                DeliveryError::Unavailable(format!("cannot run {}: {e}", Self::OSASCRIPT))
            })?;
        let started = std::time::Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() >= timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(DeliveryError::Unavailable(format!(
                        "the notification centre did not answer within {} ms",
                        timeout.as_millis()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(DeliveryError::Unavailable(e.to_string())),
            }
        };
        if status.success() {
            return Ok(());
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        let stderr = stderr.trim();
        // -1743: "Not authorized to send Apple events"; notifications off for Script Editor.
        if stderr.contains("-1743") || stderr.to_ascii_lowercase().contains("not allowed") {
            Err(DeliveryError::NotAuthorized(format!(
                "the notification centre refused: {stderr}"
            )))
        } else {
            Err(DeliveryError::Unavailable(format!(
                "osascript failed ({status}): {stderr}"
            )))
        }
    }
}

#[async_trait]
impl DesktopNotifier for NotificationCenter {
    fn name(&self) -> &'static str {
        "macos"
    }

    async fn probe(&self) -> Availability {
        if std::path::Path::new(Self::OSASCRIPT).exists() {
            Availability::Unknown
        } else {
            Availability::Unavailable {
                reason: format!("{} is missing", Self::OSASCRIPT),
            }
        }
    }

    async fn show(&self, notification: &Notification) -> Result<Option<u32>, DeliveryError> {
        let script = Self::script(notification);
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || Self::run(script, timeout))
            .await
            .map_err(|e| DeliveryError::Unavailable(format!("osascript task failed: {e}")))??;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(title: &str, body: &str) -> Notification {
        Notification {
            title: title.into(),
            body: body.into(),
            urgency: Urgency::Normal,
            sound_name: Some("Glass".into()),
            sound_file: None,
            suppress_sound: false,
        }
    }

    #[test]
    fn applescript_strings_are_quoted() {
        let script = NotificationCenter::script(&note("say \"hi\"", "a\\b\nc"));
        assert_eq!(
            script,
            r#"display notification "a\\b c" with title "say \"hi\"" sound name "Glass""#
        );
        let mut silent = note("t", "b");
        silent.suppress_sound = true;
        assert!(!NotificationCenter::script(&silent).contains("sound name"));
    }

    #[test]
    fn overlay_lines_and_summaries() {
        let line = show_overlay(&note("Ping", "body\x1b[31m"));
        assert_eq!(
            line,
            "clawlink notification [normal]: Ping — body\u{fffd}[31m"
        );
        assert!(show_overlay(&note("", "only body")).ends_with(": only body"));
        assert_eq!(summary_and_body(&note("", "b")), ("b", ""));
        assert_eq!(summary_and_body(&note("t", "b")), ("t", "b"));
    }

    #[test]
    fn markup_in_a_body_is_escaped_for_markup_servers() {
        assert_eq!(
            markup_escaped(r#"<a href="https://evil">bank</a> & <img src="x">"#),
            r#"&lt;a href="https://evil"&gt;bank&lt;/a&gt; &amp; &lt;img src="x"&gt;"#
        );
        assert!(matches!(
            markup_escaped("plain text"),
            Cow::Borrowed("plain text")
        ));
        // Already-escaped text stays literal: the user sees "&amp;", as it was sent.
        assert_eq!(markup_escaped("&amp;"), "&amp;amp;");
    }

    #[test]
    fn overlay_and_script_text_lose_escapes_and_bidi_overrides() {
        let line = show_overlay(&note("\u{202e}gnp.exe", "\x1b]0;pwned\x07\u{9b}2J"));
        assert!(
            !line.contains(['\x1b', '\x07', '\u{9b}', '\u{202e}']),
            "{line:?}"
        );
        let script = NotificationCenter::script(&note("\u{202e}t", "\x1b[31m"));
        assert!(!script.contains(['\x1b', '\u{202e}']), "{script:?}");
    }

    #[test]
    fn availability_reports_the_permission() {
        assert_eq!(
            Availability::Available {
                server: None,
                plays_sounds: None
            }
            .permission(),
            Some(true)
        );
        assert_eq!(
            Availability::Unavailable { reason: "x".into() }.permission(),
            Some(false)
        );
        assert_eq!(Availability::Unknown.permission(), None);
    }
}
