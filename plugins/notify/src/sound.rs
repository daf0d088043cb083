//! Notification sounds: names → files (macOS system sounds, the freedesktop sound theme), pure-Rust decoding, and a player trait other features can reuse.
//!
//! # Names
//!
//! Callers use the macOS system sound names (`openclaw nodes notify --sound Glass`). On macOS
//! they are the files in `/System/Library/Sounds`. Elsewhere each maps onto a sound of the
//! freedesktop sound theme (package `sound-theme-freedesktop`) with a similar character:
//!
//! | macOS | freedesktop | | macOS | freedesktop |
//! |---|---|---|---|---|
//! | Glass | message-new-instant | | Hero | service-login |
//! | Ping | bell | | Morse | dialog-information |
//! | Pop | message | | Purr | device-added |
//! | Basso | dialog-error | | Sosumi | phone-incoming-call |
//! | Blow | window-attention | | Submarine | network-connectivity-established |
//! | Bottle | complete | | Tink | audio-volume-change |
//! | Frog | dialog-warning | | | |
//! | Funk | suspend-error | | | |
//!
//! Any freedesktop sound name works too (`bell`, `complete`, …), looked up as the sound theme
//! spec says: `$XDG_DATA_HOME/sounds`, then each `$XDG_DATA_DIRS/sounds`, the configured
//! theme's directories (from its `index.theme`, `stereo` when it has none), then the
//! `freedesktop` theme, trying `.oga`, `.ogg`, `.wav`, and dropping the last `-part` of the name
//! when nothing matches (`dialog-error-serious` → `dialog-error`). Extra directories from
//! the settings are searched first. Names are plain (letters, digits, `.`, `_`, `-`): a path
//! is never accepted from the network.
//!
//! The platform's directory conventions (the XDG variables, `HOME`) are read from the
//! environment, as the specs require; nothing else is.
//!
//! # Decoding and playing
//!
//! [`decode`] turns Ogg Vorbis (lewton) and WAV (hound) files into 16-bit PCM, pure Rust, so
//! the default build needs no audio library. Playing goes through [`SoundPlayer`]; the
//! rodio player exists only with the crate's `sound` cargo feature (it links ALSA on Linux).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The macOS system sound names and the freedesktop sound each maps to off macOS.
pub const MACOS_SOUNDS: [(&str, &str); 14] = [
    ("Glass", "message-new-instant"),
    ("Ping", "bell"),
    ("Pop", "message"),
    ("Basso", "dialog-error"),
    ("Blow", "window-attention"),
    ("Bottle", "complete"),
    ("Frog", "dialog-warning"),
    ("Funk", "suspend-error"),
    ("Hero", "service-login"),
    ("Morse", "dialog-information"),
    ("Purr", "device-added"),
    ("Sosumi", "phone-incoming-call"),
    ("Submarine", "network-connectivity-established"),
    ("Tink", "audio-volume-change"),
];

/// The theme every freedesktop lookup falls back to.
pub const FALLBACK_THEME: &str = "freedesktop";

/// Longest sound we decode: notification sounds last a second or two; this bounds memory.
pub const MAX_DURATION: Duration = Duration::from_secs(30);

const FREEDESKTOP_EXTENSIONS: [&str; 3] = ["oga", "ogg", "wav"];
const MACOS_EXTENSIONS: [&str; 4] = ["aiff", "aif", "caf", "wav"];

/// What went wrong with a sound.
#[derive(Debug, thiserror::Error)]
pub enum SoundError {
    #[error("sound {name:?} is unknown here (known: {})", known.join(", "))]
    Unknown { name: String, known: Vec<String> },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot decode {}: {message}", path.display())]
    Decode { path: PathBuf, message: String },
    #[error("{} is a {format} file, which clawlink does not decode", path.display())]
    Unsupported { path: PathBuf, format: String },
    #[error("{} lasts longer than {} s; notification sounds are short", path.display(), MAX_DURATION.as_secs())]
    TooLong { path: PathBuf },
    #[error("cannot play the sound: {0}")]
    Playback(String),
}

/// Which platform's sound conventions apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoundPlatform {
    /// The freedesktop sound theme spec (Linux, the BSDs).
    Freedesktop,
    /// `~/Library/Sounds`, `/Library/Sounds`, `/System/Library/Sounds`.
    MacOs,
}

impl SoundPlatform {
    /// This machine's.
    pub fn native() -> Self {
        if cfg!(target_os = "macos") {
            Self::MacOs
        } else {
            Self::Freedesktop
        }
    }
}

/// A requested sound, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSound {
    /// What the caller asked for.
    pub requested: String,
    /// The name to hand the notification service (`sound-name`): a freedesktop sound name
    /// off macOS, the system sound name on macOS.
    pub name: String,
    /// The canonical macOS name, when the request was one (any letter case).
    pub system_name: Option<&'static str>,
    /// The file, when one exists on this machine.
    pub file: Option<PathBuf>,
}

/// Where sound files are looked up.
#[derive(Debug, Clone)]
pub struct SoundLibrary {
    platform: SoundPlatform,
    /// Searched first, for `NAME.EXT` directly.
    extra_dirs: Vec<PathBuf>,
    /// Freedesktop: the `sounds` directories (each holds themes); macOS: the sound folders.
    bases: Vec<PathBuf>,
    theme: String,
}

impl SoundLibrary {
    /// A library with explicit directories (tests, embedders).
    pub fn new(
        platform: SoundPlatform,
        bases: Vec<PathBuf>,
        theme: impl Into<String>,
        extra_dirs: Vec<PathBuf>,
    ) -> Self {
        Self {
            platform,
            extra_dirs,
            bases,
            theme: theme.into(),
        }
    }

    /// This machine's library: the platform's sound directories (the XDG base directories on
    /// freedesktop systems), the theme, and extra directories searched first.
    pub fn from_environment(theme: &str, extra_dirs: Vec<PathBuf>) -> Self {
        let platform = SoundPlatform::native();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let bases = match platform {
            SoundPlatform::MacOs => {
                let mut bases: Vec<PathBuf> =
                    home.iter().map(|h| h.join("Library/Sounds")).collect();
                bases.push("/Library/Sounds".into());
                bases.push("/System/Library/Sounds".into());
                bases
            }
            SoundPlatform::Freedesktop => {
                let data_home = std::env::var_os("XDG_DATA_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| home.as_ref().map(|h| h.join(".local/share")));
                let data_dirs = std::env::var("XDG_DATA_DIRS")
                    .ok()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "/usr/local/share:/usr/share".into());
                data_home
                    .into_iter()
                    .chain(
                        data_dirs
                            .split(':')
                            .filter(|d| !d.is_empty())
                            .map(PathBuf::from),
                    )
                    .map(|d| d.join("sounds"))
                    .collect()
            }
        };
        Self::new(platform, bases, theme, extra_dirs)
    }

    pub fn platform(&self) -> SoundPlatform {
        self.platform
    }

    /// Resolves a requested name. A macOS name is always known (off macOS it maps onto the
    /// freedesktop theme; `file` is `None` when that theme is not installed); any other name
    /// must exist as a file here.
    pub fn resolve(&self, requested: &str) -> Result<ResolvedSound, SoundError> {
        let unknown = || SoundError::Unknown {
            name: requested.to_owned(),
            known: self.known_names(),
        };
        if !is_plain_name(requested) {
            return Err(unknown());
        }
        let system = MACOS_SOUNDS
            .iter()
            .find(|(mac, _)| mac.eq_ignore_ascii_case(requested));
        match (self.platform, system) {
            (SoundPlatform::MacOs, Some((mac, _))) => Ok(ResolvedSound {
                requested: requested.to_owned(),
                name: (*mac).to_owned(),
                system_name: Some(mac),
                file: self.find_in_dirs(mac, &MACOS_EXTENSIONS),
            }),
            (SoundPlatform::Freedesktop, Some((mac, freedesktop))) => Ok(ResolvedSound {
                requested: requested.to_owned(),
                name: (*freedesktop).to_owned(),
                system_name: Some(mac),
                file: self.find_freedesktop(freedesktop),
            }),
            (platform, None) => {
                let file = match platform {
                    SoundPlatform::MacOs => self.find_in_dirs(requested, &MACOS_EXTENSIONS),
                    SoundPlatform::Freedesktop => self.find_freedesktop(requested),
                };
                let file = file.ok_or_else(unknown)?;
                Ok(ResolvedSound {
                    requested: requested.to_owned(),
                    name: requested.to_owned(),
                    system_name: None,
                    file: Some(file),
                })
            }
        }
    }

    /// Every name [`SoundLibrary::resolve`] accepts: the macOS names, then the sound files
    /// found here, sorted.
    pub fn known_names(&self) -> Vec<String> {
        let mut found = Vec::new();
        let extensions: &[&str] = match self.platform {
            SoundPlatform::MacOs => &MACOS_EXTENSIONS,
            SoundPlatform::Freedesktop => &FREEDESKTOP_EXTENSIONS,
        };
        for dir in self.search_dirs() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let matches = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| extensions.contains(&e));
                if let (true, Some(stem)) = (matches, path.file_stem().and_then(|s| s.to_str())) {
                    found.push(stem.to_owned());
                }
            }
        }
        found.sort();
        found.dedup();
        let mut names: Vec<String> = MACOS_SOUNDS.iter().map(|(m, _)| m.to_string()).collect();
        names.extend(
            found
                .into_iter()
                .filter(|n| !MACOS_SOUNDS.iter().any(|(m, _)| m.eq_ignore_ascii_case(n))),
        );
        names
    }

    /// The directories files are taken from, in lookup order.
    fn search_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.extra_dirs.clone();
        match self.platform {
            SoundPlatform::MacOs => dirs.extend(self.bases.iter().cloned()),
            SoundPlatform::Freedesktop => {
                for theme in self.themes() {
                    for base in &self.bases {
                        let theme_dir = base.join(theme);
                        for subdir in theme_subdirs(&theme_dir) {
                            dirs.push(theme_dir.join(subdir));
                        }
                    }
                }
            }
        }
        dirs
    }

    fn themes(&self) -> Vec<&str> {
        let mut themes = vec![self.theme.as_str()];
        if self.theme != FALLBACK_THEME {
            themes.push(FALLBACK_THEME);
        }
        themes
    }

    fn find_in_dirs(&self, name: &str, extensions: &[&str]) -> Option<PathBuf> {
        self.search_dirs().iter().find_map(|dir| {
            extensions
                .iter()
                .map(|ext| dir.join(format!("{name}.{ext}")))
                .find(|p| p.is_file())
        })
    }

    /// The sound theme spec's lookup, with its name fallback (`a-b-c`, `a-b`, `a`).
    fn find_freedesktop(&self, name: &str) -> Option<PathBuf> {
        let mut candidate = name;
        loop {
            if let Some(file) = self.find_in_dirs(candidate, &FREEDESKTOP_EXTENSIONS) {
                return Some(file);
            }
            candidate = candidate.rsplit_once('-')?.0;
        }
    }
}

/// A theme's sound subdirectories, from `index.theme` (`Directories=`), `stereo` without one.
fn theme_subdirs(theme_dir: &Path) -> Vec<String> {
    let Ok(index) = std::fs::read_to_string(theme_dir.join("index.theme")) else {
        return vec!["stereo".into()];
    };
    let listed: Vec<String> = index
        .lines()
        .find_map(|l| l.trim().strip_prefix("Directories="))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty() && is_plain_name(s))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if listed.is_empty() {
        vec!["stereo".into()]
    } else {
        listed
    }
}

/// Letters, digits, `.`, `_` and `-`, not starting with a dot: never a path.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Decoded PCM: interleaved signed 16-bit samples.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedSound {
    pub channels: u16,
    pub sample_rate: u32,
    pub samples: Vec<i16>,
}

impl std::fmt::Debug for DecodedSound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedSound")
            .field("channels", &self.channels)
            .field("sample_rate", &self.sample_rate)
            .field("samples", &self.samples.len())
            .finish()
    }
}

impl DecodedSound {
    pub fn duration(&self) -> Duration {
        let frames = self.samples.len() as u64 / u64::from(self.channels.max(1));
        Duration::from_millis(frames * 1000 / u64::from(self.sample_rate.max(1)))
    }

    fn check_length(&self, path: &Path) -> Result<(), SoundError> {
        let limit = MAX_DURATION.as_secs() * u64::from(self.sample_rate) * u64::from(self.channels);
        if self.samples.len() as u64 > limit {
            return Err(SoundError::TooLong {
                path: path.to_owned(),
            });
        }
        Ok(())
    }
}

/// Decodes an Ogg Vorbis (`.oga`, `.ogg`) or WAV file. Blocking: call it off the async
/// threads.
pub fn decode(path: &Path) -> Result<DecodedSound, SoundError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let open = || {
        File::open(path)
            .map(BufReader::new)
            .map_err(|source| SoundError::Io {
                path: path.to_owned(),
                source,
            })
    };
    let decode_error = |message: String| SoundError::Decode {
        path: path.to_owned(),
        message,
    };
    let sound = match extension.as_str() {
        "oga" | "ogg" => {
            let mut reader = lewton::inside_ogg::OggStreamReader::new(open()?)
                .map_err(|e| decode_error(e.to_string()))?;
            let mut sound = DecodedSound {
                channels: u16::from(reader.ident_hdr.audio_channels),
                sample_rate: reader.ident_hdr.audio_sample_rate,
                samples: Vec::new(),
            };
            while let Some(packet) = reader
                .read_dec_packet_itl()
                .map_err(|e| decode_error(e.to_string()))?
            {
                sound.samples.extend(packet);
                sound.check_length(path)?;
            }
            sound
        }
        "wav" => {
            let mut reader =
                hound::WavReader::new(open()?).map_err(|e| decode_error(e.to_string()))?;
            let spec = reader.spec();
            let duration_limit = MAX_DURATION.as_secs() * u64::from(spec.sample_rate);
            if u64::from(reader.duration()) > duration_limit {
                return Err(SoundError::TooLong {
                    path: path.to_owned(),
                });
            }
            let samples: Result<Vec<i16>, hound::Error> =
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Int, 8) => reader
                        .samples::<i8>()
                        .map(|s| s.map(|v| i16::from(v) << 8))
                        .collect(),
                    (hound::SampleFormat::Int, 16) => reader.samples::<i16>().collect(),
                    (hound::SampleFormat::Int, bits @ 17..=32) => reader
                        .samples::<i32>()
                        .map(|s| s.map(|v| (v >> (bits - 16)) as i16))
                        .collect(),
                    (hound::SampleFormat::Float, 32) => reader
                        .samples::<f32>()
                        .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16))
                        .collect(),
                    (format, bits) => {
                        return Err(decode_error(format!(
                            "unsupported WAV sample format {format:?} with {bits} bits"
                        )))
                    }
                };
            DecodedSound {
                channels: spec.channels,
                sample_rate: spec.sample_rate,
                samples: samples.map_err(|e| decode_error(e.to_string()))?,
            }
        }
        other => {
            return Err(SoundError::Unsupported {
                path: path.to_owned(),
                format: if other.is_empty() {
                    "extension-less".into()
                } else {
                    format!(".{other}")
                },
            })
        }
    };
    if sound.channels == 0 || sound.sample_rate == 0 {
        return Err(decode_error("no channels or no sample rate".into()));
    }
    Ok(sound)
}

/// Something that plays decoded sounds: the notify feature's, and any other feature's (e.g.
/// voice-wake chimes). Implementations are called on a blocking thread.
pub trait SoundPlayer: Send + Sync {
    /// A short name for status output (`rodio`).
    fn name(&self) -> &'static str;

    /// Starts playing `sound` and returns once the output device accepted it (or refused);
    /// playback goes on in the background.
    fn start(&self, sound: DecodedSound) -> Result<(), SoundError>;
}

/// The player this build has: rodio with the `sound` cargo feature, none without.
pub fn default_player() -> Option<Arc<dyn SoundPlayer>> {
    #[cfg(feature = "sound")]
    {
        Some(Arc::new(rodio_player::RodioPlayer))
    }
    #[cfg(not(feature = "sound"))]
    {
        None
    }
}

/// Why a build cannot play sounds, for status and results.
pub const NO_PLAYER: &str = "built without the `sound` cargo feature";

#[cfg(feature = "sound")]
mod rodio_player {
    //! The rodio (cpal: ALSA on Linux, CoreAudio on macOS) player.

    use std::sync::mpsc;
    use std::time::Duration;

    use super::{DecodedSound, SoundError, SoundPlayer};

    /// How long the output device may take to open.
    const OPEN_TIMEOUT: Duration = Duration::from_secs(3);

    /// Plays on the default output device, one thread per sound (rodio's stream is not
    /// `Send`, and a sound lasts a second or two).
    pub struct RodioPlayer;

    impl SoundPlayer for RodioPlayer {
        fn name(&self) -> &'static str {
            "rodio"
        }

        fn start(&self, sound: DecodedSound) -> Result<(), SoundError> {
            let (opened_tx, opened_rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("clawlink-sound".into())
                .spawn(move || {
                    let (stream, handle) = match rodio::OutputStream::try_default() {
                        Ok(pair) => pair,
                        Err(e) => {
                            let _ = opened_tx.send(Err(SoundError::Playback(e.to_string())));
                            return;
                        }
                    };
                    let sink = match rodio::Sink::try_new(&handle) {
                        Ok(sink) => sink,
                        Err(e) => {
                            let _ = opened_tx.send(Err(SoundError::Playback(e.to_string())));
                            return;
                        }
                    };
                    sink.append(rodio::buffer::SamplesBuffer::new(
                        sound.channels,
                        sound.sample_rate,
                        sound.samples,
                    ));
                    let _ = opened_tx.send(Ok(()));
                    sink.sleep_until_end();
                    drop(stream);
                })
                .map_err(|e| SoundError::Playback(format!("cannot start a thread: {e}")))?;
            opened_rx.recv_timeout(OPEN_TIMEOUT).unwrap_or_else(|_| {
                Err(SoundError::Playback(
                    "the audio output did not open within 3 s".into(),
                ))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("clawlink-notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A 16-bit mono WAV of `frames` samples at 8 kHz.
    fn write_wav(path: &Path, frames: u32) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..frames {
            writer.write_sample(((i % 64) as i16 - 32) * 500).unwrap();
        }
        writer.finalize().unwrap();
    }

    /// A freedesktop-style tree: `<base>/<theme>/index.theme` + `<theme>/stereo/NAME.wav`.
    fn theme_tree(root: &Path, theme: &str, names: &[&str]) -> PathBuf {
        let base = root.join("sounds");
        let dir = base.join(theme).join("stereo");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            base.join(theme).join("index.theme"),
            "[Sound Theme]\nName=T\nDirectories=stereo\n",
        )
        .unwrap();
        for name in names {
            write_wav(&dir.join(format!("{name}.wav")), 800);
        }
        base
    }

    #[test]
    fn macos_names_map_onto_the_freedesktop_theme() {
        let root = scratch("map");
        let base = theme_tree(&root, FALLBACK_THEME, &["message-new-instant", "bell"]);
        let library = SoundLibrary::new(
            SoundPlatform::Freedesktop,
            vec![base.clone()],
            "freedesktop",
            vec![],
        );
        let glass = library.resolve("glass").unwrap();
        assert_eq!(glass.system_name, Some("Glass"));
        assert_eq!(glass.name, "message-new-instant");
        assert_eq!(
            glass.file.as_deref(),
            Some(
                base.join("freedesktop/stereo/message-new-instant.wav")
                    .as_path()
            )
        );
        // A macOS name whose freedesktop sound is missing is still known, without a file.
        let hero = library.resolve("Hero").unwrap();
        assert_eq!(hero.name, "service-login");
        assert_eq!(hero.file, None);
        // Freedesktop names resolve directly, with the spec's name fallback.
        assert!(library.resolve("bell").unwrap().file.is_some());
        assert_eq!(
            library.resolve("bell-loud").unwrap().file,
            library.resolve("bell").unwrap().file
        );
        // Every mapped name is a distinct freedesktop sound.
        let mut targets: Vec<&str> = MACOS_SOUNDS.iter().map(|(_, f)| *f).collect();
        targets.sort();
        targets.dedup();
        assert_eq!(targets.len(), MACOS_SOUNDS.len());
    }

    #[test]
    fn unknown_names_and_paths_are_refused_listing_the_known_ones() {
        let root = scratch("unknown");
        let base = theme_tree(&root, FALLBACK_THEME, &["complete"]);
        let library = SoundLibrary::new(
            SoundPlatform::Freedesktop,
            vec![base],
            "freedesktop",
            vec![],
        );
        for name in [
            "NoSuchSound",
            "../etc/passwd",
            "/usr/share/sounds/x.oga",
            ".hidden",
            "",
        ] {
            match library.resolve(name) {
                Err(SoundError::Unknown { known, .. }) => {
                    assert!(known.contains(&"Glass".to_string()), "{known:?}");
                    assert!(known.contains(&"complete".to_string()), "{known:?}");
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        let message = library.resolve("Nope").unwrap_err().to_string();
        assert!(
            message.contains("\"Nope\"") && message.contains("Sosumi"),
            "{message}"
        );
    }

    #[test]
    fn the_configured_theme_and_extra_dirs_come_first() {
        let root = scratch("order");
        let base = theme_tree(&root, FALLBACK_THEME, &["bell"]);
        theme_tree(&root, "ocean", &["bell"]);
        let extra = root.join("mine");
        std::fs::create_dir_all(&extra).unwrap();
        let library = SoundLibrary::new(
            SoundPlatform::Freedesktop,
            vec![base.clone()],
            "ocean",
            vec![],
        );
        assert!(library
            .resolve("bell")
            .unwrap()
            .file
            .unwrap()
            .starts_with(base.join("ocean")));
        write_wav(&extra.join("bell.wav"), 10);
        let library = SoundLibrary::new(
            SoundPlatform::Freedesktop,
            vec![base],
            "ocean",
            vec![extra.clone()],
        );
        assert!(library
            .resolve("bell")
            .unwrap()
            .file
            .unwrap()
            .starts_with(&extra));
    }

    #[test]
    fn macos_lookup_uses_the_sound_folders() {
        let root = scratch("mac");
        std::fs::write(root.join("Glass.aiff"), b"FORM").unwrap();
        let library = SoundLibrary::new(SoundPlatform::MacOs, vec![root.clone()], "unused", vec![]);
        let glass = library.resolve("GLASS").unwrap();
        assert_eq!(glass.name, "Glass");
        assert_eq!(glass.file, Some(root.join("Glass.aiff")));
        assert!(library.resolve("bell").is_err());
        assert!(matches!(
            decode(&root.join("Glass.aiff")),
            Err(SoundError::Unsupported { .. })
        ));
    }

    #[test]
    fn wav_files_decode_and_long_ones_are_refused() {
        let root = scratch("wav");
        let path = root.join("short.wav");
        write_wav(&path, 4000);
        let sound = decode(&path).unwrap();
        assert_eq!((sound.channels, sound.sample_rate), (1, 8000));
        assert_eq!(sound.samples.len(), 4000);
        assert_eq!(sound.duration(), Duration::from_millis(500));
        let long = root.join("long.wav");
        write_wav(&long, 8000 * 31);
        assert!(matches!(decode(&long), Err(SoundError::TooLong { .. })));
        std::fs::write(root.join("broken.ogg"), b"not an ogg").unwrap();
        assert!(matches!(
            decode(&root.join("broken.ogg")),
            Err(SoundError::Decode { .. })
        ));
    }

    #[cfg(all(feature = "sound", target_os = "linux"))]
    #[test]
    fn rodio_plays_to_an_alsa_null_device() {
        let root = scratch("alsa");
        let config = root.join("asound.conf");
        std::fs::write(&config, "pcm.!default { type null }\n").unwrap();
        // std's environment lock orders this against the other tests' reads; only ALSA,
        // below, reads it from C.
        std::env::set_var("ALSA_CONFIG_PATH", &config);
        let path = root.join("beep.wav");
        write_wav(&path, 800);
        let player = default_player().expect("the sound feature has a player");
        assert_eq!(player.name(), "rodio");
        player.start(decode(&path).unwrap()).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_installed_freedesktop_theme_resolves_and_decodes() {
        let library = SoundLibrary::new(
            SoundPlatform::Freedesktop,
            vec!["/usr/share/sounds".into()],
            FALLBACK_THEME,
            vec![],
        );
        let file = library.resolve("Glass").unwrap().file.unwrap_or_else(|| {
            panic!("the freedesktop sound theme is missing: install sound-theme-freedesktop (`cargo xtask peer install` does)")
        });
        assert_eq!(file.extension().and_then(|e| e.to_str()), Some("oga"));
        let sound = decode(&file).unwrap();
        assert!(sound.channels >= 1);
        assert!(sound.duration() > Duration::from_millis(100), "{sound:?}");
    }
}
