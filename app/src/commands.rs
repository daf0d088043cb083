//! The one-shot commands of this release: status, call, config show|check, transports, features.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::Result;
use clawlink_core::config::table_key;
use clawlink_core::gateway::RequestOptions;
use clawlink_core::registry;
use clawlink_core::registry::FeatureDescriptor;
use serde_json::{json, Value};

use crate::agent;
use crate::cli::{CallArgs, GlobalArgs};
use crate::connect;
use crate::failure::Failure;
use crate::keyring_store::{self, SecretKind};
use crate::settings::{self, Settings};
use crate::terminal::println_safe;

/// `clawlink status`: the running agent's live state when an agent for this profile runs;
/// otherwise connect, then `status` and `health` side by side.
pub async fn status(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    if let Some(live) = agent::live_status(settings).await? {
        if global.json {
            println!("{live}");
        } else {
            print_agent_status(&live);
        }
        return Ok(());
    }
    let started = Instant::now();
    let waited_before = crate::prompt::time_waited();
    let client = connect::connect(settings).await?;
    // A trust prompt on the way is the user's time, not the connection's.
    let at_prompt = crate::prompt::time_waited().saturating_sub(waited_before);
    let connect_ms = started.elapsed().saturating_sub(at_prompt).as_millis() as u64;
    let hello = client.hello().expect("connected clients have a hello");
    let health_started = Instant::now();
    let (status, health) = tokio::join!(client.request("status", Value::Null), async {
        let result = client.request("health", Value::Null).await;
        (result, health_started.elapsed().as_millis() as u64)
    });
    let (health, health_ms) = health;
    let health = health.map_err(Failure::from)?;
    // `status` needs operator.read; a device without it still gets health.
    let status = status.unwrap_or_else(|e| json!({"error": e.to_json()}));
    let transport = client.transport();
    if global.json {
        let out = json!({
            "ok": true,
            "source": "one-shot",
            "gateway": {
                "url": transport.describe(),
                "transport": transport.name(),
                "connectMs": connect_ms,
                "localEndpoints": transport.local_endpoints(),
            },
            "server": hello.server,
            "protocol": hello.protocol,
            "auth": {
                "method": hello.auth.method,
                "role": hello.auth.role,
                "scopes": hello.auth.scopes,
            },
            "healthMs": health_ms,
            "health": health,
            "status": status,
        });
        println!("{out}");
    } else {
        let uptime = hello
            .snapshot
            .get("uptimeMs")
            .and_then(Value::as_u64)
            .map(|ms| format!(", up {}", human_duration(Duration::from_millis(ms))))
            .unwrap_or_default();
        println_safe!(
            "Gateway   {} ({}) — connected in {connect_ms} ms",
            transport.describe(),
            transport.name()
        );
        println_safe!(
            "Agent     none running for profile {:?}: this is a one-shot connection",
            settings.profile_name
        );
        println_safe!(
            "Server    openclaw {}, protocol {}{uptime}",
            hello.server.version,
            hello.protocol
        );
        println_safe!(
            "Auth      {} · {}",
            hello.auth.method.as_deref().unwrap_or("unknown"),
            hello.auth.scopes.join(", ")
        );
        println_safe!("Health    {}", health_line(&health, health_ms));
        println_safe!("Agents    {}", agents_line(&health));
        if let Some(err) = status.get("error") {
            println_safe!(
                "Status    unavailable: {}",
                err["message"].as_str().unwrap_or("?")
            );
        }
    }
    connect::finish(&client).await;
    Ok(())
}

/// The text form of an agent's status (see `agent::Agent::snapshot` for the fields).
fn print_agent_status(live: &Value) {
    let text = |pointer: &str| live.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let uptime = live
        .get("uptimeMs")
        .and_then(Value::as_u64)
        .map(|ms| human_duration(Duration::from_millis(ms)))
        .unwrap_or_default();
    println_safe!(
        "Agent     running (pid {}, up {uptime}) · profile {} · {}",
        live.get("pid").and_then(Value::as_u64).unwrap_or(0),
        text("/profile"),
        text("/socket"),
    );
    let phase = text("/connection/phase");
    let mut connection = phase.to_owned();
    if let Some(reason) = live.pointer("/connection/reason").and_then(Value::as_str) {
        connection.push_str(&format!(": {reason}"));
    }
    if let Some(error) = live
        .pointer("/connection/lastError/message")
        .and_then(Value::as_str)
    {
        if phase != "connected" {
            connection.push_str(&format!(" (last error: {error})"));
        }
    }
    println_safe!(
        "Gateway   {} ({}) — {connection}",
        text("/transport/describe"),
        text("/transport/name")
    );
    if let Some(endpoints) = live
        .pointer("/transport/localEndpoints")
        .and_then(Value::as_array)
    {
        let list: Vec<String> = endpoints
            .iter()
            .map(|e| {
                format!(
                    "{} ({})",
                    e["url"].as_str().unwrap_or("?"),
                    e["purpose"].as_str().unwrap_or("?")
                )
            })
            .collect();
        if !list.is_empty() {
            println_safe!("Local     {}", list.join(", "));
        }
    }
    if let Some(version) = live.pointer("/server/version").and_then(Value::as_str) {
        println_safe!(
            "Server    openclaw {version}, protocol {}",
            live.get("protocol").and_then(Value::as_u64).unwrap_or(0)
        );
    }
    if let Some(health) = live.get("health").filter(|h| !h.is_null()) {
        let field = |k: &str| health.get(k).and_then(Value::as_str).unwrap_or("");
        let ping = health
            .get("pingMs")
            .and_then(Value::as_u64)
            .map(|p| format!(" · ping {p} ms"))
            .unwrap_or_default();
        println_safe!("Health    {} — {}{ping}", field("state"), field("summary"));
        if !field("detail").is_empty() {
            println_safe!("          {}", field("detail"));
        }
        if !field("authSource").is_empty() {
            println_safe!("Auth      {}", field("authSource"));
        }
        let heartbeat = health.get("heartbeat").filter(|h| !h.is_null());
        println_safe!(
            "Heartbeat {}",
            match heartbeat {
                None => "none yet".to_owned(),
                Some(h) => format!(
                    "{} · {} ago",
                    h.get("status").and_then(Value::as_str).unwrap_or("?"),
                    human_duration(Duration::from_millis(
                        h.get("ageMs").and_then(Value::as_u64).unwrap_or(0)
                    ))
                ),
            }
        );
    }
    for feature in live
        .get("features")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println_safe!(
            "Feature   {:<10} {} — {}",
            feature["name"].as_str().unwrap_or("?"),
            feature["state"].as_str().unwrap_or("?"),
            feature["summary"].as_str().unwrap_or("")
        );
    }
}

fn health_line(health: &Value, ms: u64) -> String {
    let ok = health.get("ok").and_then(Value::as_bool) == Some(true);
    let plugins = health
        .pointer("/plugins/loaded")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let channels = health
        .get("channels")
        .and_then(Value::as_object)
        .map_or(0, |c| c.len());
    let event_loop = match health
        .pointer("/eventLoop/degraded")
        .and_then(Value::as_bool)
    {
        Some(true) => "event loop degraded",
        _ => "event loop ok",
    };
    let channels = match channels {
        0 => "no channels".to_owned(),
        1 => "1 channel".to_owned(),
        n => format!("{n} channels"),
    };
    format!(
        "{} (ping {ms} ms) · {plugins} plugins · {channels} · {event_loop}",
        if ok { "ok" } else { "NOT ok" }
    )
}

fn agents_line(health: &Value) -> String {
    let agents = health
        .get("agents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if agents.is_empty() {
        return "none".into();
    }
    agents
        .iter()
        .map(|a| {
            let id = a.get("agentId").and_then(Value::as_str).unwrap_or("?");
            let default = if a.get("isDefault").and_then(Value::as_bool) == Some(true) {
                " (default)"
            } else {
                ""
            };
            let sessions = a
                .pointer("/sessions/count")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let heartbeat = a
                .pointer("/heartbeat/every")
                .and_then(Value::as_str)
                .unwrap_or("?");
            format!(
                "{id}{default} · {} · heartbeat {heartbeat}",
                crate::human::count(sessions, "session")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `clawlink call METHOD [PARAMS]`.
pub async fn call(global: &GlobalArgs, settings: &Settings, args: &CallArgs) -> Result<()> {
    let params = parse_params(args.params.as_deref())?;
    let client = connect::connect(settings).await?;
    let options = RequestOptions {
        timeout: args.timeout.map(Duration::from_millis),
        expect_final: args.expect_final,
    };
    let result = client.request_with(&args.method, params, options).await;
    connect::finish(&client).await;
    let payload = result.map_err(Failure::from)?;
    if global.json {
        println!("{payload}");
    } else {
        println!("{}", serde_json::to_string_pretty(&payload)?);
    }
    Ok(())
}

fn parse_params(raw: Option<&str>) -> Result<Value, Failure> {
    let text = match raw {
        None => return Ok(Value::Null),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| {
                Failure::config(
                    format!("cannot read parameters from standard input: {e}"),
                    None,
                )
            })?;
            text
        }
        Some(text) => text.to_owned(),
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        Failure::config(
            format!("the parameters are not valid JSON: {e}"),
            Some(r#"pass a JSON object, e.g. '{"probe": true}', or - to read it from standard input"#.into()),
        )
    })?;
    if !value.is_object() {
        return Err(Failure::config(
            "the parameters must be a JSON object",
            Some(r#"wrap them in an object, e.g. '{"sessionKey": "main"}'"#.into()),
        ));
    }
    Ok(value)
}

/// `clawlink config show`.
pub async fn config_show(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let rows = settings::provenance(settings);
    let (_, secrets) = connect::credentials(settings).await.unwrap_or_default();
    if global.json {
        let values: Vec<Value> = rows
            .iter()
            .map(|(k, v, o)| json!({"key": k, "value": v, "from": o}))
            .collect();
        println!(
            "{}",
            json!({
                "profile": settings.profile_name,
                "files": settings.files,
                "transport": settings.profile.transport_name(),
                "values": values,
                "secrets": {"token": secrets.token.as_ref().map(|s| json!({"value": "***", "from": s})),
                            "password": secrets.password.as_ref().map(|s| json!({"value": "***", "from": s}))},
            })
        );
        return Ok(());
    }
    println!("profile   {}", settings.profile_name);
    if settings.files.is_empty() {
        println!("files     (none; built-in defaults, environment and flags only)");
    } else {
        for file in &settings.files {
            println!("file      {}", file.display());
        }
    }
    println!("transport {}", settings.profile.transport_name());
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (key, value, origin) in rows {
        let shown = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        println!("  {key:<width$} = {shown}    # {origin}");
    }
    for (name, source) in [("token", secrets.token), ("password", secrets.password)] {
        if let Some(source) = source {
            println!("  {name:<width$} = ***    # {source}");
        }
    }
    Ok(())
}

/// `clawlink config check`: everything short of connecting. The tables of every plugin
/// were validated when the profile was loaded (`settings::load`); this builds the selected
/// transport, resolves the credentials and warns about settings the profile ignores.
pub async fn config_check(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let transport = connect::build_transport(settings)?;
    connect::credentials(settings).await?;
    let warnings = unused_transport_tables(settings);
    if global.json {
        println!(
            "{}",
            json!({"ok": true, "profile": settings.profile_name, "transport": transport.name(), "gateway": transport.describe(), "warnings": warnings})
        );
    } else {
        for warning in &warnings {
            eprintln!("clawlink: warning: {warning}");
        }
        println!(
            "config ok: profile {} connects to {} through {}",
            settings.profile_name,
            transport.describe(),
            transport.name()
        );
    }
    Ok(())
}

/// The transport tables the profile's own table sets for a transport it does not select:
/// settings that look active but are not (a pin or URL left behind while the profile goes
/// through SSH, say).
fn unused_transport_tables(settings: &Settings) -> Vec<String> {
    let selected = settings.profile.transport_name();
    let profile = &settings.profile_name;
    settings
        .profile
        .transports
        .keys()
        .filter(|key| {
            registry::transports()
                .iter()
                .find(|d| d.name == key.as_str() || table_key(d.name) == **key)
                .is_some_and(|d| d.name != selected)
        })
        .filter(|key| {
            settings
                .profile
                .transport_settings(key)
                .as_object()
                .into_iter()
                .flat_map(|table| table.keys())
                .any(|leaf| {
                    settings::defined_by_profile(
                        &settings.figment,
                        profile,
                        &format!("transports.{key}.{leaf}"),
                    )
                })
        })
        .map(|key| {
            format!(
                "profile {profile} connects through {selected}, so its [{profile}.transports.{key}] settings are unused \
                 (remove them, or set `transport = \"{}\"` to use them)",
                key.replace('_', "-")
            )
        })
        .collect()
}

/// `clawlink transports`: every transport this clawlink can use, built in or from a plugin
/// library (all candidates are loaded for the listing), with where each comes from, and the
/// libraries that were refused.
pub fn transports(global: &GlobalArgs) -> Result<()> {
    // The configured plugin list, when the config reads; a broken config must not hide the
    // listing (the plugin directory still counts).
    let configured = crate::settings::load(&crate::overrides(global))
        .map(|s| s.profile.plugins.transports)
        .unwrap_or_default();
    let outcomes = crate::runtime_plugins::load_everything(&configured);
    let refused: Vec<(&std::path::Path, &str)> = outcomes
        .iter()
        .filter_map(|o| Some((o.path.as_path(), o.result.as_ref().err()?.as_str())))
        .collect();
    let all = registry::transports();
    let origin_of = |name: &str| -> Value {
        match registry::origin(name) {
            Some(registry::Origin::Loaded(from)) => json!({
                "kind": "plugin",
                "path": from.path,
                "version": from.version,
                "abiVersion": from.abi_version,
            }),
            Some(registry::Origin::Registered) => json!({"kind": "registered"}),
            _ => json!({"kind": "built-in", "version": env!("CARGO_PKG_VERSION")}),
        }
    };
    if global.json {
        let list: Vec<Value> = all
            .iter()
            .map(|d| {
                let capabilities: Vec<&str> = d.capabilities.iter().map(|c| c.name()).collect();
                json!({
                    "name": d.name,
                    "summary": d.summary,
                    "origin": origin_of(d.name),
                    "capabilities": capabilities,
                    "example": d.example_config,
                })
            })
            .collect();
        println!("{}", Value::Array(list));
        // The array stays what it always was; refused libraries are reported on stderr.
        for (path, why) in refused {
            crate::terminal::eprintln_safe!("plugin {} refused: {why}", path.display());
        }
        return Ok(());
    }
    for d in all {
        let capabilities: Vec<&str> = d.capabilities.iter().map(|c| c.name()).collect();
        let origin = match registry::origin(d.name) {
            Some(registry::Origin::Loaded(from)) => format!(
                "plugin {} (version {}, ABI {})",
                from.path.display(),
                from.version,
                from.abi_version
            ),
            Some(registry::Origin::Registered) => "registered at run time".to_owned(),
            _ => format!("built in (clawlink {})", env!("CARGO_PKG_VERSION")),
        };
        let offers = if capabilities.is_empty() {
            "the gateway connection only".to_owned()
        } else {
            capabilities.join("; ")
        };
        // A plugin's texts are someone else's bytes: each line is made terminal-safe.
        crate::terminal::println_safe!("{}", d.name);
        crate::terminal::println_safe!("  {}", d.summary);
        crate::terminal::println_safe!("  from: {origin}");
        crate::terminal::println_safe!("  offers: {offers}");
        crate::terminal::println_safe!(
            "  example [PROFILE.transports.{}]:",
            clawlink_core::config::table_key(d.name)
        );
        for line in d.example_config.lines() {
            crate::terminal::println_safe!("    {line}");
        }
    }
    for (path, why) in refused {
        crate::terminal::eprintln_safe!("plugin {} refused: {why}", path.display());
    }
    Ok(())
}

/// `clawlink features`: each feature, whether this profile runs it, and its settings with
/// their defaults (what the settings errors point at).
pub fn features(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let all = registry::features();
    let enabled = |d: &FeatureDescriptor| {
        settings
            .profile
            .feature_enabled(d.name, d.enabled_by_default)
    };
    if global.json {
        let list: Vec<Value> = all
            .iter()
            .map(|d| {
                json!({
                    "name": d.name,
                    "summary": d.summary,
                    "enabled": enabled(d),
                    "enabledByDefault": d.enabled_by_default,
                    "example": d.example_config,
                })
            })
            .collect();
        println!("{}", Value::Array(list));
        return Ok(());
    }
    if all.is_empty() {
        println!("this build has no feature plugins");
    }
    let profile = &settings.profile_name;
    for d in all {
        let table = format!(
            "[{profile}.features.{}]",
            clawlink_core::config::table_key(d.name)
        );
        let state = if enabled(d) {
            format!("enabled (`enabled = false` in {table} turns it off)")
        } else {
            format!("disabled (`enabled = true` in {table} turns it on)")
        };
        println!(
            "{}
  {}
  {state}
  settings and defaults:",
            d.name, d.summary
        );
        for line in d.example_config.lines() {
            println!("    {line}");
        }
    }
    Ok(())
}

/// `clawlink auth set [--password]`: the secret comes from standard input when it is not a
/// terminal (scripts: `pass show gw | clawlink auth set`), else from a no-echo prompt.
pub async fn auth_set(global: &GlobalArgs, settings: &Settings, kind: SecretKind) -> Result<()> {
    use std::io::IsTerminal;
    let what = format!(
        "gateway {} for profile {}",
        kind.name(),
        settings.profile_name
    );
    // Before asking for the secret: a keyring that cannot store it must not cost a paste.
    keyring_store::check_available(&settings.profile_name, kind).await?;
    let raw = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("{what}: "))
            .map_err(|e| Failure::config(format!("cannot read the {what}: {e}"), None))?
    } else {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| {
            Failure::config(
                format!("cannot read the {what} from standard input: {e}"),
                None,
            )
        })?;
        text
    };
    let secret = raw.trim_end_matches(['\n', '\r']).to_owned();
    if secret.trim().is_empty() {
        return Err(Failure::config(
            format!("the {what} is empty"),
            Some(
                "pipe it in (`printf %s \"$TOKEN\" | clawlink auth set`) or type it at the prompt"
                    .into(),
            ),
        )
        .into());
    }
    keyring_store::set(&settings.profile_name, kind, secret.into()).await?;
    if global.json {
        println!(
            "{}",
            json!({"ok": true, "stored": kind.name(), "profile": settings.profile_name})
        );
    } else {
        println!("stored the {what} in the OS keyring");
    }
    Ok(())
}

/// `clawlink auth status`: where each secret would come from, never the value.
pub async fn auth_status(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let (_, sources) = connect::credentials(settings).await?;
    if global.json {
        println!(
            "{}",
            json!({"profile": settings.profile_name, "token": sources.token, "password": sources.password})
        );
    } else {
        for (name, source) in [("token", &sources.token), ("password", &sources.password)] {
            println!("{name:<9} {}", source.as_deref().unwrap_or("not set"));
        }
    }
    Ok(())
}

/// `clawlink auth clear [--password]`.
pub async fn auth_clear(global: &GlobalArgs, settings: &Settings, kind: SecretKind) -> Result<()> {
    let removed = keyring_store::clear(&settings.profile_name, kind).await?;
    if global.json {
        println!("{}", json!({"ok": true, "removed": removed}));
    } else if removed {
        println!(
            "removed the {} of profile {} from the OS keyring",
            kind.name(),
            settings.profile_name
        );
    } else {
        println!(
            "the OS keyring held no {} for profile {}",
            kind.name(),
            settings.profile_name
        );
    }
    Ok(())
}
