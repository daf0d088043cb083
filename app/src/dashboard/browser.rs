//! Handing the dashboard's sign-in to the local browser so that no other user of the machine can redeem it, and saying honestly whether the browser arrived.
//!
//! The browser's argv is readable by every local user (`/proc/PID/cmdline`), so it carries
//! nothing redeemable: it gets the `file://` URL of a page in a fresh 0700 directory
//! (the file 0600). Only that page knows the one-use loopback URL (a random 128-bit path)
//! whose answer redirects to the signed-in Control UI URL; the loopback page closes after
//! its first fetch, so "the browser arrived" means the owner of the file fetched it.
//! When the opener fails (a headless machine: `xdg-open` exits 3) the page's URL is printed
//! for the user to open, and the wait is bounded.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};

use crate::cli::GlobalArgs;
use crate::failure::Failure;

/// Opens the browser on `target` (a URL carrying the sign-in in its fragment) through a
/// private file page and a one-use loopback page; waits up to `wait` for it to arrive.
pub(super) async fn open_signed_in(
    global: &GlobalArgs,
    target: String,
    wait: Duration,
) -> Result<(), Failure> {
    let handoff = Handoff::start(target).await?;
    let page = PrivatePage::write(&redirect_page(&handoff.url))?;
    let url = page.url();
    let opener = Opener::launch(global, &url);
    if !global.quiet {
        eprintln!(
            "waiting up to {} s for the browser to load the sign-in page (Ctrl-C to stop)",
            wait.as_secs()
        );
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut exited = opener.exited;
    let mut opener_done = false;
    let mut served = std::pin::pin!(handoff.served.notified());
    loop {
        tokio::select! {
            _ = &mut served => {
                handoff.task.abort();
                drop(page);
                if !global.quiet {
                    eprintln!("the dashboard is open in your browser");
                }
                return Ok(());
            }
            status = &mut exited, if !opener_done => {
                opener_done = true;
                // Only a failure is news: a browser that keeps running, or an opener that
                // handed over and exited 0, is what we expect.
                if let Ok(Some(why)) = status.map(|s| opener_failure(&opener.program, s)) {
                    eprintln!(
                        "{why}; open this page in a browser on this machine (it is readable only by you): {url}"
                    );
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                handoff.task.abort();
                return Err(Failure::agent(
                    format!(
                        "the browser did not load the sign-in page within {} s; nobody was signed in",
                        wait.as_secs()
                    ),
                    Some(
                        "run `clawlink dashboard --wait SECS` and open the page it names in a browser on \
                         this machine within that time, or print a URL with `clawlink dashboard --print`"
                            .into(),
                    ),
                ));
            }
            stop = crate::signals::shutdown_signal() => {
                handoff.task.abort();
                return Err(Failure::agent(
                    format!("{stop} before the browser loaded the sign-in page; nobody was signed in"),
                    None,
                ));
            }
        }
    }
}

/// Opens the browser on `url` (which carries no secret) and reports an opener that fails
/// within a moment; a browser that keeps running is left running.
pub(super) async fn open_plain(global: &GlobalArgs, url: &str) -> Result<(), Failure> {
    const OPENER_GRACE: Duration = Duration::from_secs(5);
    let opener = Opener::launch(global, url);
    match tokio::time::timeout(OPENER_GRACE, opener.exited).await {
        Ok(Ok(status)) => match opener_failure(&opener.program, status) {
            Some(why) => Err(Failure::agent(
                why,
                Some(format!("open {url} in a browser yourself")),
            )),
            None => Ok(()),
        },
        // Still running (a browser in the foreground): the page is on its way.
        _ => Ok(()),
    }
}

/// Why the opener failed, when it did (`Err` inside: it could not even start).
fn opener_failure(program: &str, status: Result<ExitStatus, String>) -> Option<String> {
    match status {
        Ok(status) if status.success() => None,
        Ok(status) => Some(match status.code() {
            Some(code) => format!("could not open a browser ({program} exited with status {code})"),
            None => format!("could not open a browser ({program} was killed by a signal)"),
        }),
        Err(e) => Some(format!("could not open a browser ({program}: {e})")),
    }
}

/// The browser command: the first entry of `$BROWSER`, else xdg-open (open on macOS).
fn opener_program() -> String {
    std::env::var("BROWSER")
        .ok()
        .and_then(|b| b.split(':').next().map(str::to_owned))
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| {
            if cfg!(target_os = "macos") {
                "open".into()
            } else {
                "xdg-open".into()
            }
        })
}

/// A started opener; `exited` resolves with its exit status once it ends (it is reaped by a
/// thread of its own, so no zombie is left whatever it does), or why it did not start.
struct Opener {
    program: String,
    exited: oneshot::Receiver<Result<ExitStatus, String>>,
}

impl Opener {
    fn launch(global: &GlobalArgs, url: &str) -> Self {
        let program = opener_program();
        if !global.quiet {
            eprintln!("opening {url} with {program}");
        }
        let (report, exited) = oneshot::channel();
        let spawned = Command::new(&program)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // The browser gets no gateway secret through its environment either.
            .env_remove("CLAWLINK_TOKEN")
            .env_remove("CLAWLINK_PASSWORD")
            .spawn();
        match spawned {
            Ok(mut child) => {
                std::thread::spawn(move || {
                    let _ = report.send(child.wait().map_err(|e| e.to_string()));
                });
            }
            Err(e) => {
                let _ = report.send(Err(e.to_string()));
            }
        }
        Self { program, exited }
    }
}

/// A page only this user can read: a file in a fresh 0700 directory under the data
/// directory; both are removed when it is dropped.
struct PrivatePage {
    dir: PathBuf,
    file: PathBuf,
}

impl PrivatePage {
    fn write(html: &str) -> Result<Self, Failure> {
        let base = crate::state::data_dir()?.join("dashboard");
        Self::write_in(&base, html).map_err(|e| {
            Failure::config(
                format!(
                    "cannot write the dashboard's sign-in page under {}: {e}",
                    base.display()
                ),
                Some("check that clawlink's data directory (CLAWLINK_DATA_DIR) is yours and writable".into()),
            )
        })
    }

    fn write_in(base: &Path, html: &str) -> std::io::Result<Self> {
        use std::io::Write;
        crate::state::create_private_dir(base)?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
        // Created here, not reused: a directory that already exists is not ours to trust.
        let dir = base.join(format!("signin-{}", hex::encode(random)));
        let mut builder = std::fs::DirBuilder::new();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            builder.mode(0o700);
            options.mode(0o600);
        }
        builder.create(&dir)?;
        let file = dir.join("dashboard.html");
        let page = Self { dir, file };
        let mut out = options.open(&page.file)?;
        out.write_all(html.as_bytes())?;
        out.sync_all()?;
        Ok(page)
    }

    /// `file://` URL of the page (the path percent-encoded).
    fn url(&self) -> String {
        let path = self.file.to_string_lossy();
        let mut url = String::from("file://");
        for b in path.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                    url.push(b as char)
                }
                _ => url.push_str(&format!("%{b:02X}")),
            }
        }
        url
    }
}

impl Drop for PrivatePage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A one-use page on 127.0.0.1 with a random path: the first GET of that path gets a
/// redirect (by script, so the fragment survives) to the signed-in URL; then it closes.
struct Handoff {
    url: String,
    served: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Handoff {
    async fn start(target: String) -> Result<Self, Failure> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Failure::config(format!("cannot listen on loopback: {e}"), None))?;
        let port = listener
            .local_addr()
            .map_err(|e| Failure::config(format!("cannot listen on loopback: {e}"), None))?
            .port();
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)
            .map_err(|e| Failure::config(format!("no randomness: {e}"), None))?;
        let path = format!("/{}", hex::encode(nonce));
        let url = format!("http://127.0.0.1:{port}{path}");
        let served = Arc::new(Notify::new());
        let notify = served.clone();
        let page = redirect_page(&target);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let Ok(Some(head)) =
                    tokio::time::timeout(Duration::from_secs(5), request_line(&mut socket)).await
                else {
                    continue;
                };
                let wanted = head
                    .lines()
                    .next()
                    .is_some_and(|l| l.starts_with(&format!("GET {path} ")));
                if wanted {
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                    notify.notify_one();
                    return;
                }
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        Ok(Self { url, served, task })
    }
}

/// The request line of an HTTP request, read with all its headers (a client may write
/// them in several pieces; unread bytes would make our close a reset that loses the
/// answer); `None` when the connection ends first or the request is larger than any GET.
async fn request_line(socket: &mut tokio::net::TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    while received.len() < 16 * 1024 {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        received.extend_from_slice(&chunk[..n]);
        if received.windows(4).any(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&received);
            return text.lines().next().map(str::to_owned);
        }
    }
    None
}

/// A page that sends the browser on to `target` at once (by script: a fragment survives).
fn redirect_page(target: &str) -> String {
    // JSON string escaping is valid JavaScript; `</` is broken up so the URL cannot end the
    // script element.
    let literal = serde_json::to_string(target)
        .expect("a string serializes")
        .replace("</", "<\\/");
    format!(
        "<!doctype html><meta name=\"referrer\" content=\"no-referrer\"><title>OpenClaw</title>\
         <script>location.replace({literal});</script>Opening the dashboard…"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_page_cannot_be_broken_out_of() {
        let page = redirect_page("http://x/#token=a\"</script><b>");
        assert!(
            page.contains(r#"location.replace("http://x/#token=a\"<\/script><b>")"#),
            "{page}"
        );
        assert!(!page.contains("</script><b>"));
    }

    #[cfg(unix)]
    #[test]
    fn the_private_page_is_readable_only_by_its_owner_and_removed_after_use() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("clawlink-page-test-{}", std::process::id()));
        let page = PrivatePage::write_in(&base, "<p>secret</p>").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&page.dir), 0o700);
        assert_eq!(mode(&page.file), 0o600);
        assert!(page.url().starts_with("file:///"));
        assert!(page.url().ends_with("/dashboard.html"));
        assert_eq!(
            std::fs::read_to_string(&page.file).unwrap(),
            "<p>secret</p>"
        );
        let (dir, file) = (page.dir.clone(), page.file.clone());
        drop(page);
        assert!(!file.exists() && !dir.exists());
        let _ = std::fs::remove_dir(&base);
    }

    #[cfg(unix)]
    #[test]
    fn a_failing_opener_is_named_with_its_exit_status() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            opener_failure("xdg-open", Ok(ExitStatus::from_raw(3 << 8))).as_deref(),
            Some("could not open a browser (xdg-open exited with status 3)")
        );
        assert_eq!(
            opener_failure("xdg-open", Ok(ExitStatus::from_raw(0))),
            None
        );
        assert!(
            opener_failure("nope", Err("No such file or directory".into()))
                .unwrap()
                .contains("nope: No such file")
        );
    }
}
