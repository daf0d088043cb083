//! `clawlink tunnel` (the app's SSH tunnel, like `ssh -N -L`): local forwards of the gateway port and the widget sandbox over any transport that offers `GatewayPorts`, until Ctrl-C.

use anyhow::Result;
use clawlink_core::transport::GatewayPorts;
use serde_json::{json, Value};

use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::forwards::{self, BoundForward, ServeOptions};
use crate::settings::Settings;
use crate::signals::shutdown_signal;

/// `clawlink tunnel`.
pub async fn tunnel(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let transport = forwards::transport_with_ports(settings, "tunnel")?;
    let ports = transport.ports().expect("checked by transport_with_ports");
    if let Some(supervision) = transport.supervision() {
        // Fail fast (host key, auth) before binding anything.
        if let Err(e) = supervision.restore().await {
            transport.close().await;
            return Err(Failure::from(e).into());
        }
    }
    let forwards = match forwards::bind_gateway_and_sandbox(ports).await {
        Ok(forwards) => forwards,
        Err(e) => {
            transport.close().await;
            return Err(e.into());
        }
    };
    print_forwards(global, ports, &forwards);
    let serving = tokio::spawn(forwards::serve(
        transport.clone(),
        forwards.into(),
        ServeOptions::default(),
    ));
    // The real reason (host key, auth) when the session cannot be restored.
    let stop = tokio::select! {
        stop = shutdown_signal() => Ok(stop),
        lost = forwards::keep_session_up(transport.clone()) => Err(lost),
    };
    serving.abort();
    let _ = serving.await;
    transport.close().await;
    let stop = stop.map_err(Failure::from)?;
    tracing::info!("{stop}: tunnel closed");
    Ok(())
}

fn print_forwards(global: &GlobalArgs, ports: &dyn GatewayPorts, forwards: &[BoundForward]) {
    let listen = |f: &BoundForward| -> Vec<String> {
        match f.addresses() {
            addresses if addresses.is_empty() => vec![format!("127.0.0.1:{}", f.local_port)],
            addresses => addresses.iter().map(|a| a.to_string()).collect(),
        }
    };
    if global.json {
        let list: Vec<Value> = forwards
            .iter()
            .map(|f| {
                json!({
                    "purpose": f.spec.purpose,
                    "url": f.endpoint().url,
                    "localPort": f.local_port,
                    "remotePort": f.spec.remote_port,
                    "listen": listen(f),
                    "fallback": f.fallback_reason,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"ok": true, "target": ports.host_label(), "forwards": list})
        );
    } else {
        for f in forwards {
            if let Some(reason) = &f.fallback_reason {
                eprintln!("note: {reason}; using port {} instead", f.local_port);
            }
            crate::terminal::println_safe!(
                "{:<15} {}  (listening on {}, → 127.0.0.1:{} on {})",
                f.spec.purpose,
                f.endpoint().url,
                listen(f).join(" and "),
                f.spec.remote_port,
                ports.host_label()
            );
        }
        println!("forwarding until Ctrl-C");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
