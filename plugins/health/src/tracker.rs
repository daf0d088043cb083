//! What the health feature knows at any moment — last good snapshot, last error, connection, heartbeat — and the status it publishes from that.
//!
//! Kept apart from the async loop so the rules can be tested without a gateway: the last good
//! snapshot survives a failed background call (a blip must not blank the status), a failed
//! manual refresh clears it (as the app does), and a lost connection turns the status
//! degraded at once with the connection's own reason instead of waiting for the next poll.

use clawlink_core::time::unix_millis;
use std::time::{Duration, SystemTime};

use clawlink_core::feature::FeatureState;
use clawlink_core::gateway::{ConnectionState, GatewayError, Phase};
use serde_json::{json, Map, Value};

use crate::model::{self, Assessment, HealthState};

/// A failed health call (or an unreadable answer), as shown in `lastError`.
#[derive(Debug, Clone, PartialEq)]
struct CheckError {
    message: String,
    layer: String,
    fix: Option<String>,
    code: Option<String>,
    detail: String,
    at: SystemTime,
}

/// The connection, as far as health is concerned.
#[derive(Debug, Clone, PartialEq)]
enum Link {
    /// Not connected yet and nothing has gone wrong so far.
    Pending,
    Up,
    /// Lost, refused, failed or closed: `reason` is the client's own words.
    Down {
        reason: String,
        detail: String,
    },
}

/// The feature's memory. All times are wall-clock, for `--json` output.
#[derive(Debug)]
pub(crate) struct Tracker {
    endpoint: String,
    link: Link,
    connection_label: String,
    generation: u64,
    auth_source: Option<String>,
    /// The last good snapshot (from a call or a pushed `health` event).
    snapshot: Option<Value>,
    snapshot_at: Option<SystemTime>,
    last_check_at: Option<SystemTime>,
    last_ok_at: Option<SystemTime>,
    last_event_at: Option<SystemTime>,
    ping_ms: Option<u64>,
    last_error: Option<CheckError>,
    /// The last heartbeat object and when we got it.
    heartbeat: Option<(Value, SystemTime)>,
}

impl Tracker {
    pub(crate) fn new(endpoint: String) -> Self {
        Self {
            endpoint,
            link: Link::Pending,
            connection_label: "connecting".into(),
            generation: 0,
            auth_source: None,
            snapshot: None,
            snapshot_at: None,
            last_check_at: None,
            last_ok_at: None,
            last_event_at: None,
            ping_ms: None,
            last_error: None,
            heartbeat: None,
        }
    }

    pub(crate) fn set_endpoint(&mut self, endpoint: String) {
        self.endpoint = endpoint;
    }

    /// Follows the gateway client's state.
    pub(crate) fn observe_connection(&mut self, state: &ConnectionState) {
        self.connection_label = state.label();
        self.generation = state.generation;
        let down = |reason: String, error: Option<&GatewayError>| Link::Down {
            detail: match error {
                Some(err) => model::error_detail(err, &self.endpoint),
                None => model::message_detail(&reason, None, &self.endpoint),
            },
            reason,
        };
        self.link = match &state.phase {
            Phase::Connected => {
                if let Some(hello) = &state.hello {
                    self.auth_source = Some(model::auth_source_label(hello));
                }
                Link::Up
            }
            Phase::Degraded { reason } => down(reason.clone(), state.last_error.as_ref()),
            Phase::Failed => match &state.last_error {
                Some(err) => down(err.to_string(), Some(err)),
                None => down("the connection failed".into(), None),
            },
            Phase::Closed => down("the gateway client is shut down".into(), None),
            // Between attempts: an earlier attempt's error is why we are not connected.
            Phase::Connecting { .. } | Phase::Authenticating | Phase::Reconnecting { .. } => {
                match &state.last_error {
                    Some(err) => down(err.to_string(), Some(err)),
                    None => Link::Pending,
                }
            }
        };
    }

    /// A `health` call answered.
    pub(crate) fn record_success(&mut self, snapshot: Value, took: Duration, now: SystemTime) {
        if !snapshot.is_object() {
            self.record_problem(
                "the gateway's health answer is not a JSON object".into(),
                "rpc".into(),
                Some("check the gateway version (clawlink speaks protocol 4)".into()),
                None,
                false,
                now,
            );
            return;
        }
        self.ping_ms = Some(took.as_millis() as u64);
        self.snapshot = Some(snapshot);
        self.snapshot_at = Some(now);
        self.last_check_at = Some(now);
        self.last_ok_at = Some(now);
        self.last_error = None;
    }

    /// A `health` call failed. A failed manual refresh forgets the snapshot (the app does the
    /// same: the user asked for the truth now); a failed background call keeps it.
    pub(crate) fn record_failure(&mut self, err: &GatewayError, manual: bool, now: SystemTime) {
        self.record_problem(
            err.to_string(),
            err.layer().to_string(),
            err.fix(),
            err.code().map(str::to_owned),
            manual,
            now,
        );
        if let Some(last) = &mut self.last_error {
            last.detail = model::error_detail(err, &self.endpoint);
        }
    }

    fn record_problem(
        &mut self,
        message: String,
        layer: String,
        fix: Option<String>,
        code: Option<String>,
        manual: bool,
        now: SystemTime,
    ) {
        self.last_check_at = Some(now);
        self.last_error = Some(CheckError {
            detail: model::message_detail(&message, fix.as_deref(), &self.endpoint),
            message,
            layer,
            fix,
            code,
            at: now,
        });
        if manual {
            self.snapshot = None;
            self.snapshot_at = None;
        }
    }

    /// A pushed `health` event: as good as a polled snapshot, without a call. It proves the
    /// gateway answers, so it also clears an earlier call's error.
    pub(crate) fn record_event(&mut self, snapshot: Value, now: SystemTime) {
        if !snapshot.is_object() {
            return;
        }
        self.snapshot = Some(snapshot);
        self.snapshot_at = Some(now);
        self.last_event_at = Some(now);
        self.last_error = None;
    }

    /// A `heartbeat` event (or `last-heartbeat` result); older ones never replace newer ones.
    pub(crate) fn record_heartbeat(&mut self, heartbeat: Value, now: SystemTime) {
        if !heartbeat.is_object() {
            return;
        }
        let ts = |v: &Value| v.get("ts").and_then(Value::as_u64);
        if let Some((current, _)) = &self.heartbeat {
            if let (Some(old), Some(new)) = (ts(current), ts(&heartbeat)) {
                if new < old {
                    return;
                }
            }
        }
        self.heartbeat = Some((heartbeat, now));
    }

    /// The verdict: a connection problem first, then a failed call, then the snapshot.
    pub(crate) fn assessment(&self) -> Assessment {
        let channels = || {
            self.snapshot
                .as_ref()
                .map(|s| model::assess(s).channels)
                .unwrap_or_default()
        };
        if let Link::Down { reason, detail } = &self.link {
            let mut failed = Assessment::failed(reason, detail.clone());
            failed.channels = channels();
            return failed;
        }
        if let Some(err) = &self.last_error {
            let mut failed = Assessment::failed(&err.message, err.detail.clone());
            failed.channels = channels();
            return failed;
        }
        match &self.snapshot {
            Some(snapshot) => model::assess(snapshot),
            None => Assessment::pending(),
        }
    }

    /// The lifecycle state, summary line and `--json` details to publish.
    pub(crate) fn status(&self, now: SystemTime) -> (FeatureState, String, Value) {
        let assessment = self.assessment();
        let state = match assessment.state {
            HealthState::Unknown => FeatureState::Starting,
            HealthState::Ok => FeatureState::Running,
            HealthState::LinkingNeeded | HealthState::Degraded => FeatureState::Degraded,
        };
        let summary = assessment.summary.clone();
        (state, summary, self.details(assessment, now))
    }

    /// The `--json` details (camelCase), as `status` publishes and `control` returns them.
    pub(crate) fn details_now(&self) -> Value {
        self.status(SystemTime::now()).2
    }

    fn details(&self, assessment: Assessment, now: SystemTime) -> Value {
        let heartbeat = self.heartbeat.as_ref().map(|(beat, received)| {
            let mut out = beat.as_object().cloned().unwrap_or_else(Map::new);
            let age_ms = beat
                .get("ts")
                .and_then(Value::as_u64)
                .map(|ts| unix_millis(now).saturating_sub(ts))
                .unwrap_or_else(|| {
                    now.duration_since(*received)
                        .unwrap_or_default()
                        .as_millis() as u64
                });
            let status = beat.get("status").and_then(Value::as_str).unwrap_or("?");
            out.insert("ageMs".into(), json!(age_ms));
            out.insert("receivedAt".into(), json!(unix_millis(*received)));
            out.insert(
                "line".into(),
                json!(format!(
                    "Last heartbeat: {status} · {}",
                    model::format_age(age_ms as f64)
                )),
            );
            Value::Object(out)
        });
        let last_error = self.last_error.as_ref().map(|e| {
            json!({
                "message": e.message,
                "layer": e.layer,
                "fix": e.fix,
                "code": e.code,
                "detail": e.detail,
                "at": unix_millis(e.at),
            })
        });
        json!({
            "state": assessment.state,
            "color": assessment.state.color(),
            "label": assessment.state.label(),
            "summary": assessment.summary,
            "detail": assessment.detail,
            "pingMs": self.ping_ms,
            "lastCheckAt": self.last_check_at.map(unix_millis),
            "lastOkAt": self.last_ok_at.map(unix_millis),
            "lastEventAt": self.last_event_at.map(unix_millis),
            "snapshotAt": self.snapshot_at.map(unix_millis),
            "lastError": last_error,
            "channels": assessment.channels,
            "heartbeat": heartbeat,
            "authSource": self.auth_source,
            "gateway": self.endpoint,
            "connection": {
                "state": self.connection_label,
                "connected": self.link == Link::Up,
                "generation": self.generation,
            },
            "snapshot": self.snapshot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use clawlink_core::gateway::HelloOk;
    use clawlink_core::transport::{TransportError, TransportErrorKind};

    const ENDPOINT: &str = "ws://127.0.0.1:18789/";

    fn at(ms: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn healthy() -> Value {
        json!({"ok": true, "ts": 1, "durationMs": 3, "channels": {
            "whatsapp": {"configured": true, "linked": true, "authAgeMs": 720_000}
        }, "channelOrder": ["whatsapp"], "channelLabels": {"whatsapp": "WhatsApp"}})
    }

    fn connection(phase: Phase, generation: u64, error: Option<GatewayError>) -> ConnectionState {
        let hello: HelloOk = serde_json::from_value(json!({
            "protocol": 4, "auth": {"method": "token", "role": "operator", "scopes": []}
        }))
        .unwrap();
        ConnectionState {
            phase,
            generation,
            hello: Some(Arc::new(hello)),
            last_error: error,
            since: SystemTime::now(),
            last_recovery: None,
        }
    }

    fn refused() -> GatewayError {
        GatewayError::Transport(TransportError::new(
            TransportErrorKind::Connect,
            "cannot reach the gateway at 127.0.0.1:18789: Connection refused (os error 111)",
        ))
    }

    fn connected_tracker() -> Tracker {
        let mut t = Tracker::new(ENDPOINT.into());
        t.observe_connection(&connection(Phase::Connected, 1, None));
        t
    }

    #[test]
    fn starts_pending_then_runs_on_a_good_snapshot() {
        let mut t = Tracker::new(ENDPOINT.into());
        t.observe_connection(&connection(Phase::Connecting { attempt: 0 }, 0, None));
        let (state, summary, details) = t.status(at(1_000));
        assert_eq!(state, FeatureState::Starting);
        assert_eq!(summary, "Health check pending");
        assert_eq!(details["color"], "gray");

        t.observe_connection(&connection(Phase::Connected, 1, None));
        t.record_success(healthy(), Duration::from_millis(7), at(2_000));
        let (state, summary, details) = t.status(at(2_500));
        assert_eq!(state, FeatureState::Running);
        assert_eq!(summary, "linked · auth 12m");
        assert_eq!(details["state"], "ok");
        assert_eq!(details["pingMs"], 7);
        assert_eq!(details["lastCheckAt"], 2_000);
        assert_eq!(details["lastOkAt"], 2_000);
        assert_eq!(details["authSource"], "shared token");
        assert_eq!(details["gateway"], ENDPOINT);
        assert_eq!(details["channels"][0]["label"], "WhatsApp");
        assert_eq!(details["connection"]["connected"], true);
        assert!(details["lastError"].is_null());
    }

    #[test]
    fn a_failed_background_call_keeps_the_last_good_snapshot() {
        let mut t = connected_tracker();
        t.record_success(healthy(), Duration::from_millis(5), at(1_000));
        let timeout = GatewayError::Timeout {
            method: "health".into(),
            after: Duration::from_secs(15),
        };
        t.record_failure(&timeout, false, at(61_000));
        let (state, summary, details) = t.status(at(61_000));
        assert_eq!(state, FeatureState::Degraded);
        assert_eq!(
            summary,
            "Health check failed: health: no answer within 15000 ms"
        );
        assert!(details["detail"]
            .as_str()
            .unwrap()
            .starts_with("Timed out waiting for the control server"));
        assert_eq!(details["lastError"]["layer"], "rpc");
        assert!(details["lastError"]["fix"].is_string());
        assert_eq!(details["lastOkAt"], 1_000);
        assert_eq!(details["lastCheckAt"], 61_000);
        // The snapshot and its channel rows survive the blip.
        assert_eq!(details["snapshot"]["ok"], true);
        assert_eq!(details["channels"][0]["id"], "whatsapp");

        // The next good call clears the error.
        t.record_success(healthy(), Duration::from_millis(4), at(121_000));
        assert_eq!(t.status(at(121_000)).0, FeatureState::Running);
    }

    #[test]
    fn a_failed_manual_refresh_clears_the_snapshot() {
        let mut t = connected_tracker();
        t.record_success(healthy(), Duration::from_millis(5), at(1_000));
        t.record_failure(&refused(), true, at(2_000));
        let (_, _, details) = t.status(at(2_000));
        assert!(details["snapshot"].is_null());
        assert_eq!(details["channels"], json!([]));
        assert_eq!(details["state"], "degraded");
    }

    #[test]
    fn a_lost_connection_degrades_at_once_and_recovery_restores_it() {
        let mut t = connected_tracker();
        t.record_success(healthy(), Duration::from_millis(5), at(1_000));
        t.observe_connection(&connection(
            Phase::Degraded {
                reason: "the gateway restarted (code 1012); reconnecting (attempt 1)".into(),
            },
            1,
            None,
        ));
        let (state, summary, details) = t.status(at(2_000));
        assert_eq!(state, FeatureState::Degraded);
        assert_eq!(
            summary,
            "Health check failed: the gateway restarted (code 1012); reconnecting (attempt 1)"
        );
        assert_eq!(details["connection"]["connected"], false);
        assert_eq!(details["channels"][0]["id"], "whatsapp");

        // Refused while restoring: the detail says the port is not listening.
        t.observe_connection(&connection(
            Phase::Connecting { attempt: 2 },
            1,
            Some(refused()),
        ));
        let (_, _, details) = t.status(at(3_000));
        assert_eq!(
            details["detail"],
            "The gateway control port (ws://127.0.0.1:18789/) isn't listening — restart OpenClaw on the gateway host"
        );

        t.observe_connection(&connection(Phase::Connected, 2, None));
        assert_eq!(t.status(at(4_000)).0, FeatureState::Running);
        assert_eq!(t.status(at(4_000)).2["connection"]["generation"], 2);
    }

    #[test]
    fn a_terminal_failure_names_its_fix() {
        let mut t = Tracker::new(ENDPOINT.into());
        let auth = GatewayError::Auth {
            code: "AUTH_TOKEN_MISMATCH".into(),
            message: "unauthorized: gateway token mismatch".into(),
            fix: "put the right token in auth.token_file".into(),
        };
        t.observe_connection(&connection(Phase::Failed, 0, Some(auth)));
        let (state, summary, details) = t.status(at(1));
        assert_eq!(state, FeatureState::Degraded);
        assert_eq!(
            summary,
            "Health check failed: unauthorized: gateway token mismatch"
        );
        assert!(details["detail"]
            .as_str()
            .unwrap()
            .contains("— fix: put the right token"));
    }

    #[test]
    fn pushed_health_events_update_the_snapshot_and_clear_a_call_error() {
        let mut t = connected_tracker();
        t.record_failure(
            &GatewayError::Disconnected {
                method: "health".into(),
            },
            false,
            at(1_000),
        );
        let mut pushed = healthy();
        pushed["channels"]["whatsapp"]["authAgeMs"] = json!(3 * 3_600_000);
        t.record_event(pushed, at(2_000));
        let (state, summary, details) = t.status(at(2_000));
        assert_eq!(state, FeatureState::Running);
        assert_eq!(summary, "linked · auth 3h");
        assert_eq!(details["lastEventAt"], 2_000);
        assert_eq!(details["snapshotAt"], 2_000);
        // No call was made for it.
        assert!(details["pingMs"].is_null());
        assert!(details["lastOkAt"].is_null());
        // A non-object payload is ignored.
        t.record_event(json!(null), at(3_000));
        assert_eq!(t.status(at(3_000)).2["lastEventAt"], 2_000);
    }

    #[test]
    fn heartbeats_keep_the_newest_with_their_age() {
        let mut t = connected_tracker();
        t.record_heartbeat(
            json!({"ts": 100_000, "status": "sent", "channel": "whatsapp"}),
            at(100_500),
        );
        t.record_heartbeat(json!({"ts": 90_000, "status": "failed"}), at(101_000));
        let details = t.status(at(400_000)).2;
        assert_eq!(details["heartbeat"]["status"], "sent");
        assert_eq!(details["heartbeat"]["channel"], "whatsapp");
        assert_eq!(details["heartbeat"]["ageMs"], 300_000);
        assert_eq!(details["heartbeat"]["receivedAt"], 100_500);
        assert_eq!(details["heartbeat"]["line"], "Last heartbeat: sent · 5m");
        t.record_heartbeat(json!(null), at(500_000));
        assert_eq!(t.status(at(500_000)).2["heartbeat"]["ts"], 100_000);
    }

    #[test]
    fn a_non_object_answer_is_an_error_not_a_snapshot() {
        let mut t = connected_tracker();
        t.record_success(json!("garbage"), Duration::from_millis(1), at(1));
        let (state, _, details) = t.status(at(1));
        assert_eq!(state, FeatureState::Degraded);
        assert!(details["snapshot"].is_null());
        assert!(details["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("not a JSON object"));
    }
}
