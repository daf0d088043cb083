//! Carrying out one `system.notify`: resolve and decode the sound, show the notification where `delivery` says, play the sound, and describe what happened.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::desktop::{self, DeliveryError, DesktopNotifier, Notification};
use crate::request::{codes, Delivery, InvokeError, NotifyRequest, Urgency};
use crate::sound::{self, DecodedSound, ResolvedSound, SoundLibrary, SoundPlayer};

/// Shows notifications and plays their sounds.
pub struct Deliverer {
    pub notifier: Arc<dyn DesktopNotifier>,
    pub library: SoundLibrary,
    /// `None` in builds without the `sound` cargo feature.
    pub player: Option<Arc<dyn SoundPlayer>>,
    /// The `play_sounds` setting.
    pub play_sounds: bool,
}

impl Deliverer {
    /// Carries out `request`; the result is the `node.invoke.result` payload, or the node
    /// error to answer with.
    pub async fn notify(&self, request: &NotifyRequest) -> Result<Value, InvokeError> {
        // An unknown sound is refused before anything shows, so the caller can fix the name.
        let resolved = match &request.sound {
            None => None,
            Some(name) => Some(
                self.library
                    .resolve(name)
                    .map_err(|e| InvokeError::new(codes::UNKNOWN_SOUND, e.to_string()))?,
            ),
        };
        let mut report = Map::new();
        let decoded = match &resolved {
            Some(resolved) => self.prepare_sound(resolved, &mut report).await,
            None => None,
        };
        let play_here = decoded.is_some() && self.play_sounds && self.player.is_some();

        let urgency = Urgency::from(request.priority);
        let notification = Notification {
            title: request.title.clone(),
            body: request.body.clone(),
            urgency,
            sound_name: resolved.as_ref().map(|s| s.name.clone()),
            sound_file: resolved.as_ref().and_then(|s| s.file.clone()),
            suppress_sound: play_here,
        };
        let (delivered_to, notification_id) = match request.delivery {
            Delivery::System => {
                let id = self
                    .notifier
                    .show(&notification)
                    .await
                    .map_err(invoke_error)?;
                ("system", id)
            }
            Delivery::Overlay => {
                desktop::show_overlay(&notification);
                ("overlay", None)
            }
            Delivery::Auto => match self.notifier.show(&notification).await {
                Ok(id) => ("system", id),
                Err(error) => {
                    tracing::info!(%error, "no desktop notification service; showing it on the console");
                    desktop::show_overlay(&notification);
                    ("overlay", None)
                }
            },
        };

        if let Some(decoded) = decoded {
            self.play(decoded, play_here, delivered_to, &mut report)
                .await;
        }
        let mut payload = json!({
            "ok": true,
            "delivery": delivered_to,
            "urgency": urgency.as_str(),
        });
        if let Some(id) = notification_id {
            payload["notificationId"] = json!(id);
        }
        if resolved.is_some() {
            payload["sound"] = Value::Object(report);
        }
        Ok(payload)
    }

    /// Fills the sound part of the report; answers the decoded sound when there is a file
    /// this build decodes.
    async fn prepare_sound(
        &self,
        resolved: &ResolvedSound,
        report: &mut Map<String, Value>,
    ) -> Option<DecodedSound> {
        report.insert("requested".into(), json!(resolved.requested));
        report.insert("name".into(), json!(resolved.name));
        if let Some(system) = resolved.system_name {
            report.insert("systemName".into(), json!(system));
        }
        let Some(file) = resolved.file.clone() else {
            report.insert(
                "note".into(),
                json!(format!(
                    "no file for {:?} here (install the freedesktop sound theme: sound-theme-freedesktop); \
                     the notification service was given the sound name",
                    resolved.name
                )),
            );
            return None;
        };
        report.insert("file".into(), json!(file.display().to_string()));
        let path = file.clone();
        match tokio::task::spawn_blocking(move || sound::decode(&path)).await {
            Ok(Ok(decoded)) => {
                report.insert(
                    "decoded".into(),
                    json!({
                        "channels": decoded.channels,
                        "sampleRate": decoded.sample_rate,
                        "durationMs": decoded.duration().as_millis() as u64,
                    }),
                );
                Some(decoded)
            }
            Ok(Err(error)) => {
                report.insert("decodeError".into(), json!(error.to_string()));
                None
            }
            Err(error) => {
                report.insert("decodeError".into(), json!(error.to_string()));
                None
            }
        }
    }

    /// Plays the decoded sound here when this build and the settings allow it, and says so.
    async fn play(
        &self,
        decoded: DecodedSound,
        play_here: bool,
        delivered_to: &str,
        report: &mut Map<String, Value>,
    ) {
        let Some(player) = self.player.clone().filter(|_| play_here) else {
            let why = if !self.play_sounds {
                "play_sounds = false".to_owned()
            } else {
                sound::NO_PLAYER.to_owned()
            };
            let who = if delivered_to == "system" {
                "; the notification service was given the sound-name and sound-file hints"
            } else {
                ""
            };
            report.insert("played".into(), json!(false));
            report.insert(
                "note".into(),
                json!(format!("not played by clawlink: {why}{who}")),
            );
            return;
        };
        report.insert("player".into(), json!(player.name()));
        match tokio::task::spawn_blocking(move || player.start(decoded)).await {
            Ok(Ok(())) => {
                report.insert("played".into(), json!(true));
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "the notification sound did not play");
                report.insert("played".into(), json!(false));
                report.insert("playError".into(), json!(error.to_string()));
            }
            Err(error) => {
                report.insert("played".into(), json!(false));
                report.insert("playError".into(), json!(error.to_string()));
            }
        }
    }
}

fn invoke_error(error: DeliveryError) -> InvokeError {
    match error {
        DeliveryError::Unavailable(reason) => {
            InvokeError::new(codes::NOTIFICATIONS_UNAVAILABLE, reason)
        }
        DeliveryError::NotAuthorized(reason) => {
            InvokeError::new(codes::NOT_AUTHORIZED, format!("notifications: {reason}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::desktop::Availability;
    use crate::request::Urgency;
    use crate::sound::{SoundError, SoundPlatform};

    /// Records what it was asked to show; fails as configured.
    struct FakeService {
        shown: Mutex<Vec<Notification>>,
        fail: Option<DeliveryError>,
    }

    #[async_trait]
    impl DesktopNotifier for FakeService {
        fn name(&self) -> &'static str {
            "fake"
        }
        async fn probe(&self) -> Availability {
            Availability::Unknown
        }
        async fn show(&self, n: &Notification) -> Result<Option<u32>, DeliveryError> {
            if let Some(error) = &self.fail {
                return Err(error.clone());
            }
            self.shown.lock().unwrap().push(n.clone());
            Ok(Some(7))
        }
    }

    struct CountingPlayer(Mutex<Vec<usize>>);

    impl SoundPlayer for CountingPlayer {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn start(&self, sound: DecodedSound) -> Result<(), SoundError> {
            self.0.lock().unwrap().push(sound.samples.len());
            Ok(())
        }
    }

    /// A private sound theme per test (tests run in parallel).
    fn sounds_dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("clawlink-deliver-{test}-{}", std::process::id()));
        let stereo = dir.join("freedesktop/stereo");
        std::fs::create_dir_all(&stereo).unwrap();
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(stereo.join("message-new-instant.wav"), spec).unwrap();
        for i in 0..3200 {
            w.write_sample((i % 100) as i16).unwrap();
        }
        w.finalize().unwrap();
        dir
    }

    fn deliverer(
        test: &str,
        fail: Option<DeliveryError>,
        player: Option<Arc<dyn SoundPlayer>>,
    ) -> (Deliverer, Arc<FakeService>) {
        let service = Arc::new(FakeService {
            shown: Mutex::new(Vec::new()),
            fail,
        });
        let library = SoundLibrary::new(
            SoundPlatform::Freedesktop,
            vec![sounds_dir(test)],
            "freedesktop",
            vec![],
        );
        (
            Deliverer {
                notifier: service.clone(),
                library,
                player,
                play_sounds: true,
            },
            service,
        )
    }

    fn request(params: Value) -> NotifyRequest {
        NotifyRequest::from_params(&params).unwrap()
    }

    #[tokio::test]
    async fn system_delivery_passes_urgency_and_sound_hints() {
        let (d, service) = deliverer("system", None, None);
        let payload = d
            .notify(&request(
                json!({"title": "T", "body": "B", "sound": "Glass", "priority": "timeSensitive"}),
            ))
            .await
            .unwrap();
        assert_eq!(payload["delivery"], "system");
        assert_eq!(payload["urgency"], "critical");
        assert_eq!(payload["notificationId"], 7);
        assert_eq!(payload["sound"]["name"], "message-new-instant");
        assert_eq!(payload["sound"]["decoded"]["durationMs"], 100);
        assert_eq!(payload["sound"]["played"], false);
        let shown = service.shown.lock().unwrap();
        assert_eq!(shown[0].urgency, Urgency::Critical);
        assert_eq!(shown[0].sound_name.as_deref(), Some("message-new-instant"));
        assert!(shown[0]
            .sound_file
            .as_ref()
            .unwrap()
            .ends_with("message-new-instant.wav"));
        // Nobody plays it here: the service must.
        assert!(!shown[0].suppress_sound);
    }

    #[tokio::test]
    async fn a_player_plays_and_the_service_stays_silent() {
        let player = Arc::new(CountingPlayer(Mutex::new(Vec::new())));
        let (d, service) = deliverer("player", None, Some(player.clone()));
        let payload = d
            .notify(&request(json!({"title": "T", "sound": "Glass"})))
            .await
            .unwrap();
        assert_eq!(payload["sound"]["played"], true);
        assert_eq!(payload["sound"]["player"], "counting");
        assert_eq!(*player.0.lock().unwrap(), vec![3200]);
        assert!(service.shown.lock().unwrap()[0].suppress_sound);
        // No sound asked: nothing plays, no sound hints.
        let payload = d.notify(&request(json!({"title": "quiet"}))).await.unwrap();
        assert!(payload.get("sound").is_none());
        assert_eq!(player.0.lock().unwrap().len(), 1);
        assert_eq!(service.shown.lock().unwrap()[1].sound_name, None);
    }

    #[tokio::test]
    async fn unavailable_and_refused_services_give_the_codes() {
        let (d, _) = deliverer(
            "unavailable",
            Some(DeliveryError::Unavailable("no bus".into())),
            None,
        );
        let err = d.notify(&request(json!({"title": "T"}))).await.unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (codes::NOTIFICATIONS_UNAVAILABLE, "no bus")
        );
        // auto falls back to the console.
        let payload = d
            .notify(&request(json!({"title": "T", "delivery": "auto"})))
            .await
            .unwrap();
        assert_eq!(payload["delivery"], "overlay");
        let payload = d
            .notify(&request(json!({"title": "T", "delivery": "overlay"})))
            .await
            .unwrap();
        assert_eq!(payload["delivery"], "overlay");

        let (d, _) = deliverer(
            "refused",
            Some(DeliveryError::NotAuthorized("denied".into())),
            None,
        );
        let err = d.notify(&request(json!({"body": "B"}))).await.unwrap_err();
        assert_eq!(err.code, codes::NOT_AUTHORIZED);
        assert!(err.message.starts_with("notifications: "), "{err}");
    }

    #[tokio::test]
    async fn unknown_sounds_are_refused_before_anything_shows() {
        let (d, service) = deliverer("unknown", None, None);
        let err = d
            .notify(&request(json!({"title": "T", "sound": "Trombone"})))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::UNKNOWN_SOUND);
        assert!(
            err.message.contains("Glass") && err.message.contains("message-new-instant"),
            "{err}"
        );
        assert!(service.shown.lock().unwrap().is_empty());
    }
}
