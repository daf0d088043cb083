//! `clawlink voicewake …`: the gateway's trigger phrases and routes, one-shot forwarding, and the recognizer in the foreground.
//!
//! - `triggers [--set a,b,c | --add X | --remove X]`: `voicewake.get`, or `voicewake.set`
//!   with the edited list; what is shown is what the gateway returns (it trims, keeps at most
//!   32 triggers of at most 64 characters, and falls back to its defaults on an empty list).
//! - `routes`: `voicewake.routing.get`.
//! - `send TEXT`: forwards one transcript now (push-to-talk), through the running agent's
//!   voicewake feature when there is one, else on a connection of its own.
//! - `listen`: runs only the voicewake feature in the foreground (its source from the profile
//!   or the flags) and prints each detection and its outcome; with `--stdin` it ends once
//!   standard input is closed and every forward has finished.
//! - `recent`: the running agent's last detections.

use anyhow::Result;

use crate::cli::GlobalArgs;
pub use crate::cli::VoicewakeCommand;
use crate::settings::Settings;

/// `clawlink voicewake …`.
#[cfg(feature = "feature-voicewake")]
pub async fn run(
    global: &GlobalArgs,
    settings: &Settings,
    command: &VoicewakeCommand,
) -> Result<()> {
    match command {
        VoicewakeCommand::Triggers(args) => imp::triggers(global, settings, args).await,
        VoicewakeCommand::Routes => imp::routes(global, settings).await,
        VoicewakeCommand::Send(args) => imp::send(global, settings, args).await,
        VoicewakeCommand::Listen(args) => imp::listen(global, settings, args).await,
        VoicewakeCommand::Recent => imp::recent(global, settings).await,
    }
}

/// `clawlink voicewake …` in a build without the feature.
#[cfg(not(feature = "feature-voicewake"))]
pub async fn run(
    _global: &GlobalArgs,
    _settings: &Settings,
    _command: &VoicewakeCommand,
) -> Result<()> {
    Err(crate::failure::Failure::config(
        "this build has no voicewake feature",
        Some("build clawlink with the `feature-voicewake` cargo feature".into()),
    )
    .into())
}

#[cfg(feature = "feature-voicewake")]
mod imp {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use anyhow::Result;
    use clawlink_core::feature::FeatureHost;
    use clawlink_core::gateway::{GatewayClient, RequestOptions};
    use clawlink_feature_voicewake::journal::{Detection, Stage};
    use clawlink_feature_voicewake::trigger::same_trigger;
    use clawlink_feature_voicewake::{self as voicewake, VoicewakeSettings};
    use serde_json::{json, Value};

    use crate::agent;
    use crate::cli::GlobalArgs;
    use crate::cli::{ListenArgs, SendArgs, TriggersArgs};
    use crate::connect;
    use crate::control::Request;
    use crate::failure::Failure;
    use crate::settings::Settings;
    use crate::terminal::{eprintln_safe, println_safe};

    /// The app's timeout for trigger edits.
    const RPC_TIMEOUT: Duration = Duration::from_secs(10);
    /// The gateway's caps (`normalizeVoiceWakeTriggers`).
    const MAX_TRIGGERS: usize = 32;
    const MAX_TRIGGER_UTF16: usize = 64;

    fn options() -> RequestOptions {
        RequestOptions {
            timeout: Some(RPC_TIMEOUT),
            expect_final: false,
        }
    }

    /// The profile's voicewake settings (a bad table is a configuration error).
    fn feature_settings(settings: &Settings) -> Result<VoicewakeSettings, Failure> {
        VoicewakeSettings::from_json(&settings.profile.feature_config(voicewake::NAME))
            .map_err(|e| Failure::config(e.message, e.fix))
    }

    async fn get_triggers(client: &GatewayClient) -> Result<Vec<String>, Failure> {
        let payload = client
            .request_with("voicewake.get", Value::Null, options())
            .await?;
        Ok(voicewake::triggers_of(&payload).unwrap_or_default())
    }

    /// `voicewake triggers`.
    pub async fn triggers(
        global: &GlobalArgs,
        settings: &Settings,
        args: &TriggersArgs,
    ) -> Result<()> {
        let client = connect::connect(settings).await?;
        let result = edit_triggers(&client, args).await;
        connect::finish(&client).await;
        let (triggers, notes) = result?;
        if global.json {
            println!("{}", json!({"triggers": triggers, "notes": notes}));
        } else {
            for trigger in &triggers {
                println_safe!("{trigger}");
            }
            for note in &notes {
                eprintln_safe!("note: {note}");
            }
        }
        Ok(())
    }

    /// Shows or edits the list; returns what the gateway answered and notes on how it
    /// differs from what was asked.
    async fn edit_triggers(
        client: &GatewayClient,
        args: &TriggersArgs,
    ) -> Result<(Vec<String>, Vec<String>), Failure> {
        let mut notes = Vec::new();
        let wanted: Vec<String> = if let Some(list) = &args.set {
            list.iter().map(|t| t.trim().to_owned()).collect()
        } else if let Some(phrase) = &args.add {
            let current = get_triggers(client).await?;
            let phrase = phrase.trim();
            if phrase.is_empty() {
                return Err(Failure::config(
                    "--add needs a phrase",
                    Some("e.g. `clawlink voicewake triggers --add jarvis`".into()),
                ));
            }
            if current.iter().any(|t| same_trigger(t, phrase)) {
                notes.push(format!("{phrase:?} is already a trigger"));
                return Ok((current, notes));
            }
            current.into_iter().chain([phrase.to_owned()]).collect()
        } else if let Some(phrase) = &args.remove {
            let current = get_triggers(client).await?;
            if !current.iter().any(|t| same_trigger(t, phrase)) {
                return Err(Failure::config(
                    format!(
                        "{:?} is not one of the gateway's triggers ({})",
                        phrase.trim(),
                        current.join(", ")
                    ),
                    Some("`clawlink voicewake triggers` lists them".into()),
                ));
            }
            current
                .into_iter()
                .filter(|t| !same_trigger(t, phrase))
                .collect()
        } else {
            return Ok((get_triggers(client).await?, notes));
        };
        let kept: Vec<&String> = wanted.iter().filter(|t| !t.is_empty()).collect();
        if kept.len() > MAX_TRIGGERS {
            notes.push(format!(
                "the gateway keeps at most {MAX_TRIGGERS} triggers; {} were given",
                kept.len()
            ));
        }
        if kept
            .iter()
            .any(|t| t.encode_utf16().count() > MAX_TRIGGER_UTF16)
        {
            notes.push(format!(
                "the gateway cuts triggers to {MAX_TRIGGER_UTF16} characters"
            ));
        }
        if kept.is_empty() {
            notes.push("the list was empty: the gateway restored its defaults".into());
        }
        let payload = client
            .request_with("voicewake.set", json!({"triggers": wanted}), options())
            .await?;
        Ok((voicewake::triggers_of(&payload).unwrap_or_default(), notes))
    }

    /// `voicewake routes`.
    pub async fn routes(global: &GlobalArgs, settings: &Settings) -> Result<()> {
        let client = connect::connect(settings).await?;
        let result = client
            .request_with("voicewake.routing.get", Value::Null, options())
            .await;
        connect::finish(&client).await;
        let payload = result.map_err(Failure::from)?;
        let config = payload.get("config").cloned().unwrap_or(payload);
        if global.json {
            println!("{config}");
            return Ok(());
        }
        println_safe!(
            "default: {}",
            describe_target(config.get("defaultTarget").unwrap_or(&Value::Null))
        );
        let routes = config
            .get("routes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if routes.is_empty() {
            println!("no routes: every trigger goes to the default");
        }
        for route in routes {
            println_safe!(
                "{} → {}",
                route.get("trigger").and_then(Value::as_str).unwrap_or("?"),
                describe_target(route.get("target").unwrap_or(&Value::Null))
            );
        }
        Ok(())
    }

    fn describe_target(target: &Value) -> String {
        if let Some(agent) = target.get("agentId").and_then(Value::as_str) {
            format!("agent {agent}")
        } else if let Some(key) = target.get("sessionKey").and_then(Value::as_str) {
            format!("session {key}")
        } else if target.get("mode").and_then(Value::as_str) == Some("current") {
            "the current session".into()
        } else {
            target.to_string()
        }
    }

    /// Whether the profile's agent runs the voicewake feature (and reaches our gateway).
    async fn agent_runs_voicewake(settings: &Settings) -> Result<bool, Failure> {
        let Some(status) = agent::live_status(settings).await? else {
            return Ok(false);
        };
        Ok(status
            .get("features")
            .and_then(Value::as_array)
            .is_some_and(|features| {
                features.iter().any(|f| {
                    f.get("name").and_then(Value::as_str) == Some(voicewake::NAME)
                        && f.get("enabled").and_then(Value::as_bool) == Some(true)
                })
            }))
    }

    /// `voicewake send TEXT`.
    pub async fn send(global: &GlobalArgs, settings: &Settings, args: &SendArgs) -> Result<()> {
        let detection: Detection = if agent_runs_voicewake(settings).await? {
            let mut request_args = json!({"text": args.text});
            if let Some(trigger) = &args.trigger {
                request_args["trigger"] = json!(trigger);
            }
            let request = Request::Feature {
                feature: voicewake::NAME.into(),
                action: voicewake::ACTION_SEND.into(),
                args: request_args,
            };
            let answer = agent::ask(settings, &request).await?.unwrap_or(Value::Null);
            serde_json::from_value(answer.clone()).map_err(|e| {
                Failure::agent(
                    format!("the agent answered an unreadable detection ({e}): {answer}"),
                    None,
                )
            })?
        } else {
            let feature_settings = feature_settings(settings)?;
            let client = connect::connect(settings).await?;
            let result = voicewake::send_once(
                &client,
                &feature_settings,
                &args.text,
                args.trigger.as_deref(),
            )
            .await;
            connect::finish(&client).await;
            result.map_err(|e| Failure::config(e.message, e.fix))?
        };
        if global.json {
            println!("{}", json!(detection));
        } else {
            println_safe!("{}", describe(&detection));
            if detection.stage == Stage::Accepted {
                println!("the run is still going; `clawlink voicewake recent` shows how it ends");
            }
        }
        match detection.stage {
            Stage::Error => Err(Failure::reported(1).into()),
            _ => Ok(()),
        }
    }

    /// One line for a detection at its current stage.
    fn describe(d: &Detection) -> String {
        let command = d.command.as_deref().unwrap_or("");
        let trigger = d
            .trigger
            .as_deref()
            .map(|t| format!(" (trigger {t:?})"))
            .unwrap_or_default();
        let run = d.run_id.as_deref().unwrap_or("?");
        let session = d.session_key.as_deref().unwrap_or("?");
        match d.stage {
            Stage::AwaitingCommand => format!(
                "heard {:?}: trigger {:?}, waiting for the command",
                d.heard,
                d.trigger.as_deref().unwrap_or("")
            ),
            Stage::Sending => format!("sending {command:?}{trigger} to {session}"),
            Stage::Accepted => format!("accepted {command:?}{trigger}: run {run} in {session}"),
            Stage::Ok => format!(
                "ok {command:?}{trigger}: run {run} in {session}{}",
                d.summary
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ),
            Stage::Error => format!(
                "error {command:?}{trigger}: {}",
                d.error.as_deref().unwrap_or("failed")
            ),
            Stage::NoCommand => format!(
                "no command after {:?}: {}",
                d.trigger.as_deref().unwrap_or(""),
                d.summary.as_deref().unwrap_or("")
            ),
        }
    }

    fn clock() -> String {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        format!("{h:02}:{m:02}:{s:02}Z")
    }

    /// The feature's settings for `listen`: the profile's table, then the flags.
    fn listen_table(settings: &Settings, args: &ListenArgs) -> Result<Value, Failure> {
        let mut table = settings.profile.feature_config(voicewake::NAME);
        if !table.is_object() {
            table = json!({});
        }
        if args.stdin {
            table["source"] = json!("stdin");
        }
        if let Some(path) = &args.fifo {
            let path = std::path::absolute(path)
                .map_err(|e| Failure::config(format!("--fifo {}: {e}", path.display()), None))?;
            table["source"] = json!("fifo");
            table["fifo_path"] = json!(path);
        }
        if let Some(argv) = &args.command {
            table["source"] = json!("command");
            table["command"] = json!(argv);
        }
        if args.anywhere {
            table["trigger_anywhere"] = json!(true);
        }
        if let Some(session) = &args.session {
            table["session_key"] = json!(session);
        }
        // Check it here, for an error that names the flags' effect before connecting.
        VoicewakeSettings::from_json(&table).map_err(|e| Failure::config(e.message, e.fix))?;
        Ok(table)
    }

    /// `voicewake listen`.
    pub async fn listen(global: &GlobalArgs, settings: &Settings, args: &ListenArgs) -> Result<()> {
        let table = listen_table(settings, args)?;
        let descriptor = clawlink_core::registry::feature(voicewake::NAME)
            .ok_or_else(|| Failure::config("the voicewake feature is not registered", None))?;
        let connector = Arc::new(connect::Connector::new(settings).await?);
        let transport = connect::build_transport(settings)?;
        let client = GatewayClient::connect(transport, connector.options("operator")?)
            .await
            .map_err(Failure::from)?;
        let mut host = FeatureHost::new(connector);
        host.start(descriptor, table, client.clone())
            .map_err(|e| Failure::config(e.message, e.fix))?;
        let handle = host
            .handle(voicewake::NAME)
            .expect("the feature was just started");
        let printed = follow(global, handle.as_ref()).await;
        host.stop_all().await;
        connect::finish(&client).await;
        if printed? {
            Err(Failure::reported(1).into())
        } else {
            Ok(())
        }
    }

    /// Prints detections as they change until the source ends with nothing left in flight,
    /// or a signal; returns whether any forward failed.
    async fn follow(
        global: &GlobalArgs,
        feature: &dyn clawlink_core::feature::Feature,
    ) -> Result<bool, Failure> {
        let stop = crate::signals::shutdown_signal();
        tokio::pin!(stop);
        let mut version = 0u64;
        let mut shown: HashMap<u64, Stage> = HashMap::new();
        let mut triggers_shown = Value::Null;
        let mut source_shown = String::new();
        let mut failed = false;
        loop {
            let recent = feature
                .control(voicewake::ACTION_RECENT, json!({"since": version}))
                .await
                .map_err(|e| Failure::agent(e.message, e.fix))?;
            let source_line = format!(
                "{}: {}",
                recent
                    .pointer("/source/state")
                    .and_then(Value::as_str)
                    .unwrap_or("starting"),
                recent
                    .pointer("/source/detail")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
            if !recent["source"].is_null() && source_line != source_shown && !global.quiet {
                if global.json {
                    println!("{}", json!({"event": "source", "source": recent["source"]}));
                } else {
                    eprintln_safe!("{} source {source_line}", clock());
                }
                source_shown = source_line;
            }
            let triggers = json!({"triggers": recent["triggers"], "from": recent["triggersFrom"]});
            if triggers != triggers_shown && !global.quiet {
                if global.json {
                    println!(
                        "{}",
                        json!({"event": "triggers", "triggers": recent["triggers"], "from": recent["triggersFrom"]})
                    );
                } else {
                    let list: Vec<&str> = recent["triggers"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    eprintln_safe!(
                        "{} triggers ({}): {}",
                        clock(),
                        recent["triggersFrom"].as_str().unwrap_or("?"),
                        list.join(", ")
                    );
                }
                triggers_shown = triggers;
            }
            let detections: Vec<Detection> =
                serde_json::from_value(recent["detections"].clone()).unwrap_or_default();
            for detection in detections {
                version = version.max(detection.version);
                if shown.get(&detection.id) == Some(&detection.stage) {
                    continue;
                }
                shown.insert(detection.id, detection.stage);
                failed |= detection.stage == Stage::Error;
                if global.json {
                    let mut line = json!(detection);
                    line["event"] = json!("detection");
                    println!("{line}");
                } else {
                    println_safe!("{} {}", clock(), describe(&detection));
                }
            }
            let source_done = matches!(
                recent.pointer("/source/state").and_then(Value::as_str),
                Some("ended")
            ) || (recent.pointer("/source/state").and_then(Value::as_str)
                == Some("failed")
                && recent.pointer("/source/kind").and_then(Value::as_str) != Some("command"));
            let idle =
                recent["inFlight"].as_u64() == Some(0) && recent["awaitingCommand"].is_null();
            if source_done && idle {
                if recent.pointer("/source/state").and_then(Value::as_str) == Some("failed") {
                    return Err(Failure::config(
                        format!(
                            "voicewake source failed: {}",
                            recent
                                .pointer("/source/detail")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                        ),
                        None,
                    ));
                }
                return Ok(failed);
            }
            tokio::select! {
                _ = &mut stop => return Ok(failed),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// `voicewake recent`.
    pub async fn recent(global: &GlobalArgs, settings: &Settings) -> Result<()> {
        let request = Request::Feature {
            feature: voicewake::NAME.into(),
            action: voicewake::ACTION_RECENT.into(),
            args: Value::Null,
        };
        let Some(recent) = agent::ask(settings, &request).await? else {
            return Err(Failure::agent(
                format!("no agent is running for profile {:?}", settings.profile_name),
                Some("start one with `clawlink up` and features.voicewake enabled; `clawlink voicewake listen` runs the recognizer in the foreground".into()),
            )
            .into());
        };
        if global.json {
            println!("{recent}");
            return Ok(());
        }
        let detections: Vec<Detection> =
            serde_json::from_value(recent["detections"].clone()).unwrap_or_default();
        if detections.is_empty() {
            println!("nothing heard yet");
        }
        for d in detections {
            println_safe!("#{} {}", d.id, describe(&d));
        }
        Ok(())
    }
}
