//! `clawlink dashboard` through `clawlink tunnel` over SSH: headless Chromium loads the gateway's Control UI from the tunnel's local port with the one-time sign-in, the page reports a connected gateway and shows our message, a screenshot is saved under `target/dashboard/`, and the widget sandbox answers on port + 1.
//!
//! Chromium is driven over the DevTools protocol (not `--dump-dom` on the command line), so
//! the one-time sign-in never reaches a process's argv, and the test waits in real time
//! for the page to connect instead of guessing a virtual-time budget.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clawlink_tests::forwards::{free_port_pair, http_get, Reaped};
use clawlink_tests::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A DevTools protocol connection to the browser, with one page attached (flat sessions).
struct DevTools {
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    next_id: u64,
    session: Option<String>,
}

impl DevTools {
    /// Connects to the browser whose profile is `profile` (it writes its port there).
    async fn connect(profile: &Path) -> Self {
        let file = profile.join("DevToolsActivePort");
        let until = Instant::now() + Duration::from_secs(30);
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.trim().to_owned(), path.trim().to_owned());
                }
            }
            assert!(
                Instant::now() < until,
                "chromium wrote no DevToolsActivePort"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}{path}"), tcp)
            .await
            .expect("DevTools websocket");
        Self {
            ws,
            next_id: 0,
            session: None,
        }
    }

    /// One command (on the attached page, once there is one); its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let answer = self.answer(method, params).await;
        assert!(answer["error"].is_null(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// One command's whole answer, error included.
    async fn answer(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            command["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::Text(command.to_string().into()))
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(message) = self.ws.next().await {
                let Ok(Message::Text(text)) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["id"] == id {
                    return value;
                }
            }
            panic!("the DevTools connection closed");
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"));
        answer
    }

    /// Opens a blank page and attaches to it.
    async fn open_page(&mut self) {
        self.open_page_in(None).await
    }

    /// Opens a blank page in a fresh browser context (no storage shared with the pages
    /// before: it must sign in on its own) and attaches to it.
    async fn open_private_page(&mut self) {
        self.session = None;
        let context = self.call("Target.createBrowserContext", json!({})).await;
        self.open_page_in(Some(context["browserContextId"].clone()))
            .await
    }

    async fn open_page_in(&mut self, context: Option<Value>) {
        let mut params = json!({"url": "about:blank"});
        if let Some(context) = context {
            params["browserContextId"] = context;
        }
        let target = self.call("Target.createTarget", params).await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        self.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
    }

    /// Evaluates `expression` in the page; its value, or null while the page is navigating
    /// (the sign-in page redirects: an evaluation can land between two documents, and the
    /// callers poll until the page settles).
    async fn eval(&mut self, expression: &str) -> Value {
        let answer = self
            .answer(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        let error = answer["error"]["message"].as_str().unwrap_or_default();
        if error.contains("navigated or closed") || error.contains("context was destroyed") {
            return Value::Null;
        }
        assert!(answer["error"].is_null(), "Runtime.evaluate: {answer}");
        answer["result"]["result"]["value"].clone()
    }
}

/// What the page shows about its connection: the sidebar's live status line (the Control
/// UI writes `Connected` there once the gateway accepted it), the connect screen's heading
/// when it is shown instead, and whether `mark` is on the page.
const PAGE_STATE: &str = r#"(() => {
  const status = document.querySelector('.sidebar-footer-bar [role=status]');
  const splash = document.querySelector('.connect-splash, .connect-card, main[aria-label]');
  const heading = document.querySelector('h1, h2');
  return {
    status: status ? status.textContent.trim() : null,
    loading: !!document.querySelector('.connect-splash--skeleton'),
    splash: splash ? splash.getAttribute('aria-label') : null,
    heading: heading ? heading.textContent.trim() : null,
    title: document.title,
    body: document.body ? document.body.innerText : '',
  };
})()"#;

fn workspace_target(path: &str) -> PathBuf {
    let file = workspace_root().join("target").join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_ui_connects_through_the_ssh_tunnel() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: `cargo xtask peer install` installs the Debian package chromium"
    );
    let peers = Peers::get();
    let home = ssh_home("dashboard");
    let token = secret_file(&home, "token", peers.var("OCPEER_GATEWAY_TOKEN"));
    let token = token.display().to_string();
    let port = free_port_pair();
    let local = port.to_string();
    let mut ssh = ssh_args(peers.var("OCPEER_SSH_USER"));
    ssh.extend([
        "--token-file".into(),
        token.clone(),
        "--local-port".into(),
        local.clone(),
    ]);

    // `clawlink tunnel` in the background: the gateway port and the sandbox (port + 1).
    let tunnel_out = home.join("tunnel.out");
    let tunnel = Reaped(
        clawlink_command(&home)
            .args(&ssh)
            .arg("tunnel")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&tunnel_out).unwrap())
            .stderr(std::fs::File::create(home.join("tunnel.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let until = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&tunnel_out)
        .unwrap_or_default()
        .contains("forwarding until")
    {
        assert!(
            Instant::now() < until,
            "the tunnel did not come up: {}",
            std::fs::read_to_string(home.join("tunnel.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let forwarded = std::fs::read_to_string(&tunnel_out).unwrap();
    assert!(
        forwarded.contains(&format!("ws://127.0.0.1:{port}"))
            && forwarded.contains(&format!("http://127.0.0.1:{}", port + 1)),
        "{forwarded}"
    );

    // Something of ours in the main session (the page opens it), sent through the tunnel.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mark = format!("dashboard-{}-{nanos:x}", std::process::id());
    let through_tunnel = format!("ws://127.0.0.1:{port}");
    let out = clawlink(
        &home,
        &[
            "--url",
            &through_tunnel,
            "--token-file",
            &token,
            "chat",
            "-m",
            &mark,
        ],
    );
    assert!(
        out.status.success(),
        "chat through the tunnel: {:?}",
        text(&out)
    );

    // The Control UI is served on the same port.
    let (code, page) = http_get(port, "/");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<title>OpenClaw Control</title>"), "{page}");

    // The dashboard URL: the tunnel's port, a one-time sign-in minted on the host.
    let mut args: Vec<&str> = ssh.iter().map(String::as_str).collect();
    args.extend(["dashboard", "--print"]);
    let out = clawlink(&home, &args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "dashboard --print: {stderr}");
    let url = stdout.trim().to_owned();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/#bootstrapToken=")),
        "the URL goes through the tunnel, signed in: {}",
        url.split('#').next().unwrap()
    );
    assert!(url.contains("&bootstrapProfile=owner"));
    assert!(
        url.ends_with(&format!("&gatewayUrl=ws%3A%2F%2F127.0.0.1%3A{port}")),
        "the page is told to use the forward: {}",
        url.split('#').next().unwrap()
    );
    assert!(stderr.contains("openclaw dashboard"), "{stderr}");
    let gateway_token = peers.var("OCPEER_GATEWAY_TOKEN");
    assert!(
        !stdout.contains(gateway_token) && !stderr.contains(gateway_token),
        "the gateway token was printed"
    );

    // Headless Chromium loads it.
    let profile = scratch_dir("dashboard-chromium");
    let chromium = Reaped(
        Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(profile.join("chromium.err")).unwrap())
            .spawn()
            .expect("start chromium"),
    );
    let mut devtools = DevTools::connect(&profile).await;
    devtools.open_page().await;
    devtools.call("Page.enable", json!({})).await;
    devtools.call("Page.navigate", json!({"url": url})).await;
    let loaded_at = Instant::now();
    let (connected, state) = loop {
        let state = devtools.eval(PAGE_STATE).await;
        let body = state["body"].as_str().unwrap_or_default();
        if state["status"] == "Connected" && body.contains(&mark) {
            break (true, state);
        }
        if loaded_at.elapsed() > Duration::from_secs(90) {
            break (false, state);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let took = loaded_at.elapsed();
    let shot = devtools
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let screenshot = workspace_target("dashboard/control-ui.png");
    std::fs::write(&screenshot, &png).unwrap();
    let shown: String = state["body"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(1500)
        .collect();
    assert!(
        connected,
        "the Control UI did not report a connected gateway showing {mark} within 90 s \
         (screenshot: {}): status {}, splash {}, heading {}, title {}\n{shown}",
        screenshot.display(),
        state["status"],
        state["splash"],
        state["heading"],
        state["title"],
    );
    assert_eq!(state["loading"], false);
    eprintln!(
        "Control UI connected through 127.0.0.1:{port} in {:.1} s; screenshot {} ({} bytes); title {}",
        took.as_secs_f64(),
        screenshot.display(),
        png.len(),
        state["title"]
    );

    // `clawlink dashboard` itself: the browser is handed a private file page, which leads
    // through the one-use loopback page to the Control UI, signed in with a new one-time
    // token (a fresh browser context: nothing stored from the sign-in above).
    let record = home.join("browser-argv");
    let browser = recording_browser(&home, &record, 0);
    let mut args: Vec<&str> = ssh.iter().map(String::as_str).collect();
    args.extend(["dashboard", "--wait", "90"]);
    let opened_err = home.join("dashboard-open.err");
    let mut opened = Reaped(
        clawlink_command(&home)
            .args(&args)
            .env("BROWSER", &browser)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&opened_err).unwrap())
            .spawn()
            .unwrap(),
    );
    let page_url = wait_for_file(&record, Duration::from_secs(90));
    let page_url = page_url.trim().to_owned();
    assert!(page_url.starts_with("file:///"), "{page_url}");
    devtools.open_private_page().await;
    devtools.call("Page.enable", json!({})).await;
    devtools
        .call("Page.navigate", json!({"url": page_url}))
        .await;
    let loaded_at = Instant::now();
    let (connected, state) = loop {
        let state = devtools.eval(PAGE_STATE).await;
        if state["status"] == "Connected" {
            break (true, state);
        }
        if loaded_at.elapsed() > Duration::from_secs(90) {
            break (false, state);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let location = devtools.eval("location.origin").await;
    assert!(
        connected,
        "the Control UI opened by `clawlink dashboard` did not connect: status {}, heading {}, at {location}",
        state["status"], state["heading"]
    );
    assert_eq!(location, json!(format!("http://127.0.0.1:{port}")));
    let status = exit_within(&mut opened, Duration::from_secs(30));
    let said = std::fs::read_to_string(&opened_err).unwrap();
    assert!(status.success(), "{status:?}: {said}");
    assert!(
        said.contains("the dashboard is open in your browser"),
        "{said}"
    );
    eprintln!(
        "`clawlink dashboard` through a private file page: connected in {:.1} s",
        loaded_at.elapsed().as_secs_f64()
    );
    let _ = devtools.call("Browser.close", json!({})).await;
    drop(chromium);

    // The widget sandbox (port + 1): the gateway starts it on demand for a canvas preview
    // and names the path; the tunnel's port + 1 must serve it.
    let out = clawlink(
        &home,
        &[
            "--url",
            &through_tunnel,
            "--token-file",
            &token,
            "call",
            "canvas.document.preview",
            r#"{"html": "<p>sandbox check</p>"}"#,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "canvas.document.preview: {stderr}");
    let preview: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        preview["sandboxPort"].as_u64(),
        Some(peers.var("OCPEER_GATEWAY_PORT").parse::<u64>().unwrap() + 1),
        "{preview:#}"
    );
    let sandbox_path = preview["sandboxUrl"].as_str().unwrap();
    let (code, sandbox) = http_get(port + 1, sandbox_path);
    assert_eq!(code, 200, "sandbox through the tunnel: {sandbox}");
    assert!(
        sandbox.contains("<title>MCP App sandbox</title>"),
        "{sandbox}"
    );
    let (code, _) = http_get(port + 1, "/");
    assert_eq!(code, 404, "the sandbox serves only its own paths");

    // Ctrl-C ends the tunnel cleanly.
    let mut tunnel = tunnel;
    let status = Command::new("kill")
        .args(["-INT", &tunnel.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let until = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = tunnel.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < until, "the tunnel did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "tunnel exit: {exit:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the forward is closed"
    );
}

/// A `$BROWSER` that records its arguments in `record` (one per line) and exits `code`.
fn recording_browser(dir: &Path, record: &Path, code: i32) -> String {
    let script = dir.join(format!("browser-{code}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > '{}.tmp'\nmv '{0}.tmp' '{0}'\nexit {code}\n",
            record.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

/// Waits (at most `limit`) for `path` to exist; its text.
fn wait_for_file(path: &Path, limit: Duration) -> String {
    let until = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            Instant::now() < until,
            "{} did not appear within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most `limit`) until the file at `path` contains `wanted`; its text.
fn wait_for_text(path: &Path, wanted: &str, limit: Duration) -> String {
    let until = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(wanted) {
            return text;
        }
        assert!(
            Instant::now() < until,
            "{wanted:?} did not appear in {} within {limit:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `args` run as the harness's second local user; (exit success, stdout + stderr).
fn as_other_user(args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=noclaw", "--regid=noclaw", "--clear-groups"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv");
    let (stdout, stderr) = text(&out);
    (out.status.success(), format!("{stdout}{stderr}"))
}

/// The process's exit status within `limit` (killed and failed otherwise).
fn exit_within(child: &mut Reaped, limit: Duration) -> std::process::ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < until, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The loopback one-use URL inside the private sign-in page.
fn handoff_url(page: &str) -> String {
    let start = page
        .find("location.replace(\"")
        .unwrap_or_else(|| panic!("no redirect in the sign-in page: {page}"))
        + "location.replace(\"".len();
    let end = start + page[start..].find('"').unwrap();
    page[start..end].to_owned()
}

#[test]
fn a_second_local_user_cannot_redeem_what_the_browser_is_given() {
    let peers = Peers::get();
    let dir = scratch_dir("dashboard-bystander");
    let token = token_file(&dir);
    let record = dir.join("argv");
    let browser = recording_browser(&dir, &record, 0);
    let stderr_file = dir.join("dashboard.err");
    let mut dashboard = Reaped(
        clawlink_command(&dir)
            .args(["--url", peers.gateway_url(), "--token-file", &token])
            .args(["dashboard", "--wait", "60"])
            .env("BROWSER", &browser)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .unwrap(),
    );
    let argv = wait_for_file(&record, Duration::from_secs(30));
    let gateway_token = peers.var("OCPEER_GATEWAY_TOKEN");
    assert!(
        !argv.contains(gateway_token) && !argv.contains("token="),
        "a secret in the browser's argv: {argv}"
    );

    // The other user tries whatever the argv names: a file to read, a URL to fetch.
    let mut page_file = None;
    for word in argv.lines() {
        let (ok, got) = if let Some(path) = word.strip_prefix("file://") {
            page_file = Some(PathBuf::from(path));
            as_other_user(&["cat", path])
        } else if word.starts_with("http") {
            as_other_user(&["curl", "-s", "-m", "10", word])
        } else {
            continue;
        };
        assert!(
            !got.contains(gateway_token)
                && !got.contains("token=")
                && !got.contains("bootstrapToken"),
            "the other user redeemed {word} (ok {ok}): {got}"
        );
    }
    let page_file = page_file.unwrap_or_else(|| panic!("the browser got no page: {argv}"));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&page_file), 0o600, "{}", page_file.display());
    assert_eq!(mode(page_file.parent().unwrap()), 0o700);

    // Its owner's browser follows the page to the signed-in Control UI URL.
    let page = std::fs::read_to_string(&page_file).unwrap();
    assert!(
        !page.contains(gateway_token),
        "the page itself holds no token"
    );
    let handoff = handoff_url(&page);
    let rest = handoff.strip_prefix("http://127.0.0.1:").unwrap();
    let (port, path) = rest.split_at(rest.find('/').unwrap());
    // Finding the loopback port (by scanning) does not help without the page's random path.
    let (_, scanned) = as_other_user(&[
        "curl",
        "-s",
        "-m",
        "10",
        &format!("http://127.0.0.1:{port}/"),
    ]);
    assert!(!scanned.contains("token="), "{scanned}");
    let (code, redirect) = http_get(port.parse().unwrap(), path);
    assert_eq!(code, 200, "{redirect}");
    assert!(
        redirect.contains(&format!("#token={gateway_token}&gatewayUrl=")),
        "the owner is signed in: {}",
        redirect.replace(gateway_token, "<token>")
    );
    let status = exit_within(&mut dashboard, Duration::from_secs(30));
    let stderr = std::fs::read_to_string(&stderr_file).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(
        stderr.contains("the dashboard is open in your browser"),
        "{stderr}"
    );
    assert!(!stderr.contains(gateway_token));
    assert!(!page_file.exists(), "the sign-in page is removed after use");
}

#[test]
fn a_headless_machine_gets_the_page_to_open_and_a_bounded_wait() {
    let peers = Peers::get();
    let dir = scratch_dir("dashboard-headless");
    let token = token_file(&dir);
    let record = dir.join("argv");
    // xdg-open on a machine without a desktop exits 3.
    let browser = recording_browser(&dir, &record, 3);
    let stderr_file = dir.join("dashboard.err");
    let mut dashboard = Reaped(
        clawlink_command(&dir)
            .args(["--url", peers.gateway_url(), "--token-file", &token])
            .args(["dashboard", "--wait", "10"])
            .env("BROWSER", &browser)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .unwrap(),
    );
    let said = wait_for_text(
        &stderr_file,
        "exited with status 3",
        Duration::from_secs(10),
    );
    let page_url = std::fs::read_to_string(&record).unwrap();
    let page_url = page_url.trim();
    assert!(
        said.contains(&format!(
            "open this page in a browser on this machine (it is readable only by you): {page_url}"
        )),
        "{said}"
    );
    assert!(said.contains("waiting up to 10 s"), "{said}");
    // The opener was reaped: no zombie child.
    let pid = dashboard.0.id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.get(1) == Some(&pid.as_str()) {
            assert_ne!(fields.first(), Some(&"Z"), "a zombie child: {stat}");
        }
    }
    let status = exit_within(&mut dashboard, Duration::from_secs(30));
    let stderr = std::fs::read_to_string(&stderr_file).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "the browser did not load the sign-in page within 10 s; nobody was signed in"
        ),
        "{stderr}"
    );
}

#[test]
fn a_listener_of_another_user_on_the_forward_port_gets_no_byte() {
    let peers = Peers::get();
    let home = ssh_home("dashboard-squatter");
    let token = token_file(&home);
    let port = free_port_pair();
    // The other user listens on the port the dashboard prefers and records what comes.
    let squatter_script = format!(
        "import socket,sys\n\
         s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('127.0.0.1',{port})); s.listen(8); print('listening',flush=True)\n\
         while True:\n\
         \x20   c,_=s.accept(); c.settimeout(3)\n\
         \x20   try:\n\
         \x20       while True:\n\
         \x20           d=c.recv(4096)\n\
         \x20           if not d: break\n\
         \x20           print('received',repr(d),flush=True)\n\
         \x20   except Exception: pass\n\
         \x20   c.close()\n"
    );
    let squatter_out = home.join("squatter.out");
    // Its output file belongs to the test (root); the squatter only writes to its stdout.
    let mut squatter = Reaped(
        Command::new("setpriv")
            .args(["--reuid=noclaw", "--regid=noclaw", "--clear-groups"])
            .args(["/usr/bin/python3", "-c", &squatter_script])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&squatter_out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_text(&squatter_out, "listening", Duration::from_secs(20));

    let mut args = ssh_args(peers.var("OCPEER_SSH_USER"));
    args.extend([
        "--token-file".into(),
        token,
        "--local-port".into(),
        port.to_string(),
        "dashboard".into(),
        "--print".into(),
    ]);
    let stdout_file = home.join("dashboard.out");
    let stderr_file = home.join("dashboard.err");
    let mut dashboard = Reaped(
        clawlink_command(&home)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_file).unwrap())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .unwrap(),
    );
    let said = wait_for_text(
        &stderr_file,
        "while the page is open",
        Duration::from_secs(90),
    );
    let url = std::fs::read_to_string(&stdout_file).unwrap();
    let own_port: u16 = url
        .trim()
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no forward URL: {url:?}\n{said}"));
    assert_ne!(own_port, port, "{said}");

    // The dashboard's own forward turns the other user away, and serves its owner.
    let (_, other) = as_other_user(&[
        "curl",
        "-s",
        "-m",
        "10",
        &format!("http://127.0.0.1:{own_port}/"),
    ]);
    assert!(
        !other.contains("OpenClaw"),
        "the other user got the Control UI through our forward: {other}"
    );
    let (code, page) = http_get(own_port, "/");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<title>OpenClaw Control</title>"), "{page}");

    let status = Command::new("kill")
        .args(["-INT", &dashboard.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    exit_within(&mut dashboard, Duration::from_secs(20));
    let _ = squatter.0.kill();
    let _ = squatter.0.wait();
    let recorded = std::fs::read_to_string(&squatter_out).unwrap();
    assert!(
        !recorded.contains("received"),
        "the dashboard sent something to the other user's listener:\n{recorded}"
    );
    assert!(
        said.contains(&format!(
            "listens on 127.0.0.1:{port}; nothing is sent there"
        )),
        "{said}"
    );
}
