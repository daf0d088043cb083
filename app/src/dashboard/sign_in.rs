//! `clawlink dashboard`'s one-time sign-in: a bootstrap token minted by the openclaw CLI on the gateway host, through any transport that runs commands there.

use std::time::Duration;

use clawlink_core::transport::HostCommands;
use serde_json::Value;

use super::{parse_fragment, SignIn};

/// How long `openclaw dashboard --json` may take on the host (it probes the gateway).
const REMOTE_CLI_LIMIT: Duration = Duration::from_secs(120);

/// Runs `openclaw dashboard --json` on the gateway host and keeps only the one-time
/// bootstrap token of its `browserUrl` (the JSON also carries the gateway token, which is
/// dropped unread).
pub(super) async fn mint_bootstrap(commands: &dyn HostCommands) -> Result<SignIn, String> {
    let output = commands
        .run_cli(&["dashboard", "--json"], REMOTE_CLI_LIMIT)
        .await
        .map_err(|e| format!("the remote openclaw CLI could not run: {}", e.message))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed = stdout
        .find('{')
        .and_then(|i| {
            serde_json::Deserializer::from_str(&stdout[i..])
                .into_iter::<Value>()
                .next()
        })
        .and_then(Result::ok);
    let Some(answer) = parsed else {
        return Err(match commands.explain_failure(&output) {
            Some(explained) => format!("{} (see `clawlink test`)", explained.message),
            None => format!(
                "`openclaw dashboard --json` printed no JSON (exit {})",
                output
                    .exit_code
                    .map_or_else(|| "by signal".into(), |c| c.to_string())
            ),
        });
    };
    if answer.get("ok").and_then(Value::as_bool) != Some(true) {
        return Err(format!(
            "`openclaw dashboard` on the host: {}",
            answer
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("not ready")
        ));
    }
    let browser_url = answer
        .get("browserUrl")
        .and_then(Value::as_str)
        .ok_or("`openclaw dashboard --json` gave no browserUrl")?;
    let fragment = browser_url
        .split_once('#')
        .map(|(_, f)| f)
        .ok_or("the browserUrl has no sign-in fragment")?;
    let params = parse_fragment(fragment);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let token = get("bootstrapToken").ok_or("the browserUrl carries no bootstrapToken")?;
    let profile = get("bootstrapProfile").unwrap_or_else(|| "owner".into());
    Ok(SignIn::Bootstrap { token, profile })
}
