//! Our own OpenSSH `known_hosts` verifier: parses the user's and the global files the way
//! sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT" describes them and says whether a presented host key
//! is trusted, unknown, changed or revoked, with the file:line that decided it.
//!
//! russh's `keys::known_hosts` only knows exact and hashed names; users rely on wildcards,
//! negation, `[host]:port`, `@revoked`, the global file and `UserKnownHostsFile`, so we read the
//! files ourselves. The distinction between [`Verdict::Unknown`] and [`Verdict::Changed`] is the
//! point of this module: a first-time host must never be reported as a changed key.
//!
//! Not supported yet: host certificates. `@cert-authority` lines are parsed and kept (see
//! [`KnownHosts::entries`]) but never trust a plain host key, and they do not make a host
//! "known" either.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, STANDARD_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::HashAlg;
use sha1::Sha1;

pub use russh::keys::ssh_key::PublicKey;

/// Length of a SHA-1 digest: both the salt and the hash of a `|1|` hashed name have it.
const SHA1_LEN: usize = 20;
/// Length of a SHA-256 digest, i.e. of a decoded `SHA256:` fingerprint.
const SHA256_LEN: usize = 32;
/// The port for which OpenSSH writes a bare `host` instead of `[host]:port`.
const DEFAULT_PORT: u16 = 22;

/// Errors of this module. Bad *content* of a known_hosts file is never an error (such lines are
/// skipped and listed by [`KnownHosts::skipped`]); only I/O and bad arguments are.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    /// An existing known_hosts file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The known_hosts file (or its directory) could not be created or written.
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    /// The host key could not be encoded for writing.
    #[error("cannot encode the host key: {0}")]
    Encode(#[source] russh::keys::ssh_key::Error),
    /// The host name cannot be written to known_hosts as a literal name.
    #[error("host name {host:?} cannot be recorded in known_hosts: {reason}")]
    InvalidHost { host: String, reason: &'static str },
    /// A user-supplied fingerprint pin is not a `SHA256:` fingerprint.
    #[error("invalid host key fingerprint {pin:?}: {reason}")]
    InvalidPin { pin: String, reason: String },
}

/// The marker at the start of a known_hosts line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A plain entry: the key is trusted for the hosts named.
    None,
    /// `@cert-authority`: the key is a CA for host certificates (not supported yet; never
    /// matches a plain host key).
    CertAuthority,
    /// `@revoked`: the key must never be accepted, for any host.
    Revoked,
}

/// The host field of a line: either a pattern list or a single hashed name.
#[derive(Debug, Clone)]
enum Hosts {
    /// Comma-separated patterns, already lowercased.
    Patterns(Vec<Pattern>),
    /// `|1|salt|hash`: HMAC-SHA1 keyed with `salt` over the (lowercase) host key name.
    Hashed { salt: Vec<u8>, hash: [u8; SHA1_LEN] },
}

#[derive(Debug, Clone)]
struct Pattern {
    negated: bool,
    /// Lowercased glob with `*` and `?`.
    glob: String,
}

/// One parsed line that names hosts and a key.
#[derive(Debug, Clone)]
pub struct Entry {
    pub marker: Marker,
    pub key: PublicKey,
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: usize,
    hosts: Hosts,
}

impl Entry {
    /// Whether this line's host field names `host` on `port` (OpenSSH semantics: the patterns
    /// are matched against [`host_key_name`], so a bare `host` pattern means port 22 only and a
    /// negated match vetoes the line). The marker is not considered.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.hosts.matches(&host_key_name(host, port))
    }

    fn same_key(&self, key: &PublicKey) -> bool {
        // PublicKey's PartialEq also compares the comment; only the key material counts.
        self.key.key_data() == key.key_data()
    }

    fn known_key(&self) -> KnownKey {
        KnownKey {
            fingerprint: fingerprint(&self.key),
            algorithm: self.key.algorithm().to_string(),
            file: self.file.clone(),
            line: self.line,
        }
    }
}

impl Hosts {
    /// `name` is the lowercase output of [`host_key_name`].
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => host_hash(salt, name).is_some_and(|h| h == *hash),
            Hosts::Patterns(patterns) => {
                // As OpenSSH's match_pattern_list: any matching negated pattern vetoes the whole
                // line, whatever its position; otherwise one positive match is needed.
                let mut positive = false;
                for p in patterns {
                    if glob_match(p.glob.as_bytes(), name.as_bytes()) {
                        if p.negated {
                            return false;
                        }
                        positive = true;
                    }
                }
                positive
            }
        }
    }
}

/// A line that was not understood and was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: usize,
    pub reason: String,
}

/// All entries of the files read, in order (user files first, then the global file).
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    skipped: Vec<SkippedLine>,
}

impl KnownHosts {
    /// Reads each file that exists (missing files are fine, unreadable existing ones are an error).
    ///
    /// Pass the user files first and the global file last: [`Verdict::Trusted`] names the
    /// first matching entry. Invalid UTF-8 is replaced rather than fatal, so one odd byte only
    /// spoils (and skips) its own line.
    pub fn load(files: &[PathBuf]) -> Result<Self, KnownHostsError> {
        let mut all = KnownHosts::default();
        for path in files {
            let bytes = match fs::read(path) {
                Ok(bytes) => bytes,
                // A missing file (or a missing ~/.ssh, or a path under a plain file) just means
                // no entries, as for OpenSSH.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    continue
                }
                Err(source) => {
                    return Err(KnownHostsError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            };
            all.parse_into(&String::from_utf8_lossy(&bytes), path);
        }
        Ok(all)
    }

    /// Parses the text of one known_hosts file; `file` is only recorded for messages.
    /// Never fails: malformed lines are skipped and listed by [`KnownHosts::skipped`].
    pub fn parse(text: &str, file: &Path) -> Self {
        let mut known = KnownHosts::default();
        known.parse_into(text, file);
        known
    }

    fn parse_into(&mut self, text: &str, file: &Path) {
        // `lines()` also strips a '\r' before each '\n', so CRLF files work.
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            match parse_line(raw) {
                Ok(None) => {}
                Ok(Some((marker, hosts, key))) => self.entries.push(Entry {
                    marker,
                    key,
                    file: file.to_path_buf(),
                    line,
                    hosts,
                }),
                Err(reason) => self.skipped.push(SkippedLine {
                    file: file.to_path_buf(),
                    line,
                    reason,
                }),
            }
        }
    }

    /// All understood entries, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Lines that were ignored because they could not be parsed (comments and blank lines are
    /// not listed), so a caller can warn about them.
    pub fn skipped(&self) -> &[SkippedLine] {
        &self.skipped
    }

    /// Decides about `key`, presented by `host` on `port`.
    ///
    /// In order:
    /// 1. an `@revoked` entry with this key, whatever its host patterns: [`Verdict::Revoked`];
    /// 2. a plain entry naming this host with this key: [`Verdict::Trusted`] (the first one);
    /// 3. plain entries naming this host with other keys: [`Verdict::Changed`], listing all of
    ///    them. Deliberate simplification: an entry of a *different key type* also counts as a
    ///    changed key (OpenSSH would call the host new and show the other keys); refusing is
    ///    the safe side, and the message lists what is known;
    /// 4. otherwise [`Verdict::Unknown`].
    ///
    /// `@cert-authority` entries are ignored (host certificates are not supported yet), and so
    /// are `@revoked` entries with other keys: neither makes a host "known".
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.same_key(key))
        {
            return Verdict::Revoked {
                file: e.file.clone(),
                line: e.line,
            };
        }
        let name = host_key_name(host, port);
        let for_host: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.marker == Marker::None && e.hosts.matches(&name))
            .collect();
        if let Some(e) = for_host.iter().find(|e| e.same_key(key)) {
            return Verdict::Trusted {
                file: e.file.clone(),
                line: e.line,
            };
        }
        if for_host.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Changed {
                known: for_host.iter().map(|e| e.known_key()).collect(),
            }
        }
    }
}

/// The outcome for one presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A plain entry for this host holds exactly this key.
    Trusted { file: PathBuf, line: usize },
    /// No entry names this host (under any key type).
    Unknown,
    /// Entries name this host, but none with this key. `known` lists them (so the error can
    /// print old fingerprints with file:line). Simplification of OpenSSH's semantics: any plain
    /// entry for the host that does not hold this key makes it Changed, even one of another key
    /// type (OpenSSH would treat a host known only under other key types as new).
    Changed { known: Vec<KnownKey> },
    /// This key is marked @revoked (checked before anything else, for any host).
    Revoked { file: PathBuf, line: usize },
}

/// A key that known_hosts holds for a host, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownKey {
    /// `SHA256:…`, as [`fingerprint`] gives it.
    pub fingerprint: String,
    /// The key type, e.g. `ssh-ed25519`.
    pub algorithm: String,
    pub file: PathBuf,
    pub line: usize,
}

/// `host` for port 22, `[host]:port` otherwise (IPv6 hosts without brackets in, bracketed in the
/// `[..]:port` form).
///
/// The name is lowercased (ssh does the same before looking names up or writing them), and
/// brackets already around `host` are dropped so `[::1]` and `::1` give the same name. Port 0
/// also gives the bare form, as in OpenSSH's `put_host_port`.
pub fn host_key_name(host: &str, port: u16) -> String {
    let host = strip_brackets(host).to_ascii_lowercase();
    if port == DEFAULT_PORT || port == 0 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// `SHA256:<base64 without padding>`, exactly as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Appends `host_key_name(host, port) <type> <base64> clawlink` (unhashed; `clawlink` is the
/// comment) to `file`, creating the parent dir with mode 0700 and the file with mode 0600 if
/// absent, ensuring the file ends with a newline before appending.
///
/// `host` must be a literal name or address: whitespace, control characters and the pattern
/// characters `, * ? ! [ ] # @ |` are refused, since writing them would change what the line
/// means (e.g. trust the key for a wildcard).
pub fn append(file: &Path, host: &str, port: u16, key: &PublicKey) -> Result<(), KnownHostsError> {
    let entry = entry_line(host, port, key)?;
    let write_err = |source| KnownHostsError::Write {
        path: file.to_path_buf(),
        source,
    };

    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent).map_err(|source| KnownHostsError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let mut f = open_private_append(file).map_err(write_err)?;
    // A last line without '\n' would otherwise swallow our entry into its comment.
    let mut text = String::new();
    if f.metadata().map_err(write_err)?.len() > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::End(-1)).map_err(write_err)?;
        f.read_exact(&mut last).map_err(write_err)?;
        if last[0] != b'\n' {
            text.push('\n');
        }
    }
    text.push_str(&entry);
    // One write on an O_APPEND file, so concurrent appenders do not interleave within a line.
    f.write_all(text.as_bytes()).map_err(write_err)?;
    f.sync_all().map_err(write_err)
}

/// The line [`append`] writes, with its `\n`: `host_key_name(host, port) <type> <base64>
/// clawlink`. `host` must be a literal name or address, as [`append`] says.
pub fn entry_line(host: &str, port: u16, key: &PublicKey) -> Result<String, KnownHostsError> {
    validate_host(host)?;
    let blob = key.to_bytes().map_err(KnownHostsError::Encode)?;
    Ok(format!(
        "{} {} {} clawlink\n",
        host_key_name(host, port),
        key.algorithm().as_str(),
        STANDARD.encode(blob)
    ))
}

/// Parses a user-supplied pin like "SHA256:abc..." (the `SHA256:` prefix required; base64 with or
/// without padding) for the pinned host-key policy; returns the normalized form, which equals
/// [`fingerprint`] of the pinned key.
pub fn parse_pin(pin: &str) -> Result<String, KnownHostsError> {
    let invalid = |reason: String| KnownHostsError::InvalidPin {
        pin: pin.to_string(),
        reason,
    };
    let trimmed = pin.trim();
    let Some(body) = trimmed.strip_prefix("SHA256:") else {
        let reason = if trimmed.starts_with("MD5:") || looks_like_md5_hex(trimmed) {
            "MD5 fingerprints are not accepted; use the SHA256:… form that `ssh-keygen -lf` prints"
        } else if trimmed
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("sha256:"))
        {
            "the prefix must be written `SHA256:` (upper case), as `ssh-keygen -lf` prints it"
        } else {
            "expected `SHA256:` followed by base64, as `ssh-keygen -lf` prints it"
        };
        return Err(invalid(reason.to_string()));
    };
    if body.is_empty() {
        return Err(invalid("nothing follows `SHA256:`".to_string()));
    }
    // Both `ssh-keygen`'s unpadded form and a padded one (from other tools) are accepted.
    let lenient = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let digest = lenient.decode(body).map_err(|e| {
        invalid(format!(
            "the part after `SHA256:` is not valid base64 ({e})"
        ))
    })?;
    if digest.len() != SHA256_LEN {
        return Err(invalid(format!(
            "decodes to {} bytes, but a SHA256 fingerprint has {SHA256_LEN}",
            digest.len()
        )));
    }
    Ok(format!("SHA256:{}", STANDARD_NO_PAD.encode(digest)))
}

/// `aa:bb:…` with 16 hex pairs: the legacy MD5 fingerprint format.
fn looks_like_md5_hex(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 16
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses one line: `Ok(None)` for blank and comment lines, `Err(reason)` for malformed ones.
fn parse_line(raw: &str) -> Result<Option<(Marker, Hosts, PublicKey)>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut fields = line.split_ascii_whitespace();
    let mut first = fields.next().ok_or("empty line")?;
    let marker = match first {
        "@cert-authority" => Marker::CertAuthority,
        "@revoked" => Marker::Revoked,
        m if m.starts_with('@') => return Err(format!("unknown marker {m:?}")),
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next().ok_or("no host patterns after the marker")?;
    }
    let hosts = parse_hosts(first)?;
    let key_type = fields.next().ok_or("no key type")?;
    let key_base64 = fields.next().ok_or("no key after the key type")?;
    // Anything after the key is a comment. `from_openssh` checks that the base64 blob really is
    // of `key_type`, so "ssh-rsa <ed25519 blob>" is refused rather than half-trusted.
    let key = PublicKey::from_openssh(&format!("{key_type} {key_base64}"))
        .map_err(|e| format!("cannot parse the {key_type} key: {e}"))?;
    Ok(Some((marker, hosts, key)))
}

fn parse_hosts(field: &str) -> Result<Hosts, String> {
    if field.starts_with('|') {
        // OpenSSH: a hashed host field is exactly one `|1|salt|hash`, never part of a list.
        let parts: Vec<&str> = field.split('|').collect();
        let [_, "1", salt, hash] = parts.as_slice() else {
            return Err("hashed host name is not of the form |1|salt|hash".to_string());
        };
        let salt = STANDARD
            .decode(salt)
            .map_err(|e| format!("hashed host name: bad salt ({e})"))?;
        let hash = STANDARD
            .decode(hash)
            .map_err(|e| format!("hashed host name: bad hash ({e})"))?;
        if salt.len() != SHA1_LEN {
            return Err(format!(
                "hashed host name: salt has {} bytes, not {SHA1_LEN}",
                salt.len()
            ));
        }
        let hash: [u8; SHA1_LEN] = hash.try_into().map_err(|h: Vec<u8>| {
            format!(
                "hashed host name: hash has {} bytes, not {SHA1_LEN}",
                h.len()
            )
        })?;
        return Ok(Hosts::Hashed { salt, hash });
    }
    let patterns = field
        .split(',')
        .map(|p| match p.strip_prefix('!') {
            Some(rest) => Pattern {
                negated: true,
                glob: rest.to_ascii_lowercase(),
            },
            None => Pattern {
                negated: false,
                glob: p.to_ascii_lowercase(),
            },
        })
        .collect();
    Ok(Hosts::Patterns(patterns))
}

/// HMAC-SHA1(salt, name): the hash part of a `|1|salt|hash` hashed host name.
fn host_hash(salt: &[u8], name: &str) -> Option<[u8; SHA1_LEN]> {
    // HMAC accepts keys of any length, so this never fails in practice; no panic either way.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(salt).ok()?;
    mac.update(name.as_bytes());
    mac.finalize().into_bytes().as_slice().try_into().ok()
}

/// Glob match with `*` (any run, also empty) and `?` (exactly one byte), on bytes, as OpenSSH's
/// match_pattern. Iterative with single-star backtracking, so no pathological recursion.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Position of the last '*' seen and the text position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last '*' swallow one more byte and retry.
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    p = sp + 1;
                    t = st + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn validate_host(host: &str) -> Result<(), KnownHostsError> {
    let invalid = |reason| {
        Err(KnownHostsError::InvalidHost {
            host: host.to_string(),
            reason,
        })
    };
    let bare = strip_brackets(host);
    if bare.is_empty() {
        return invalid("it is empty");
    }
    if bare.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("it contains whitespace or control characters");
    }
    if bare
        .chars()
        .any(|c| matches!(c, ',' | '*' | '?' | '!' | '[' | ']' | '#' | '@' | '|'))
    {
        return invalid(
            "it contains a character with a meaning in known_hosts (, * ? ! [ ] # @ |)",
        );
    }
    Ok(())
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    // Mode applies only to directories created now; an existing ~/.ssh keeps its mode.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

fn open_private_append(file: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Mode applies only if the file is created now.
        options.mode(0o600);
    }
    options.open(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with `ssh-keygen -t ed25519 -N '' -C clawlink-test-a -f a` (and b, and
    // `-t ecdsa -b 256` for c); fingerprints are what `ssh-keygen -lf x.pub` printed.
    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMc0NhHJVrevyQ+EmUe75nQpR2ewanMrwk1lWdHhdTLL";
    const FP_A: &str = "SHA256:MeMkCcyP/wJDf1vsd1iMXgIzJqCA2jPoixcw/nXLjpM";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEPQ/ed+Nc8J4KCq58g6N2P3ckHEcQfbvnLgsUklrFLV";
    const FP_B: &str = "SHA256:xj55WzZE0qujeZDPMI6sDO2SblcOxgH+IF2847M7JKQ";
    const KEY_C: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBPhddwXsEkDQIiQius/NT2z6Zvm68SFnpo8yElmogUysDqdb60AYq9OawU5IyjXtOCPnwoIPzl2fmewyc1N/78=";
    const FP_C: &str = "SHA256:BT6PATBap8dgPIHJy2TT6C9N0Y9qhQwhGZ1G0FcmMkw";

    // `ssh-keygen -H -f kh` of "gateway.example.com <KEY_A>" and
    // "[gateway.example.com]:2222 <KEY_B>"; `ssh-keygen -F` found both.
    const HASHED_22: &str = "|1|e9Vvz046H/g0+AdCmOWLwjv4nUA=|AIoRVzE79tZGQpOTfv6dcduiG/4=";
    const HASHED_2222: &str = "|1|UhDfGgvy6H00Tlqe8ryYag5tPKk=|5ywo6TNeWPxpdNbyqiz/AnxjJ4w=";

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).unwrap()
    }

    fn kh(text: &str) -> KnownHosts {
        KnownHosts::parse(text, Path::new("/test/known_hosts"))
    }

    fn trusted_at(line: usize) -> Verdict {
        Verdict::Trusted {
            file: PathBuf::from("/test/known_hosts"),
            line,
        }
    }

    /// A fresh directory under the system temp dir, unique per test and process.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("clawlink-kh-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn exact_name_is_trusted_with_its_line() {
        let k = kh(&format!(
            "other.example.com {KEY_B}\ngateway.example.com {KEY_A} a comment\n"
        ));
        assert_eq!(k.entries().len(), 2);
        assert_eq!(
            k.check("gateway.example.com", 22, &key(KEY_A)),
            trusted_at(2)
        );
        assert_eq!(k.check("other.example.com", 22, &key(KEY_B)), trusted_at(1));
        assert!(k.skipped().is_empty());
    }

    #[test]
    fn bracketed_port_form_and_plain_name_are_distinct() {
        let k = kh(&format!(
            "gw.example.com {KEY_A}\n[gw.example.com]:2222 {KEY_B}\n"
        ));
        assert_eq!(k.check("gw.example.com", 22, &key(KEY_A)), trusted_at(1));
        assert_eq!(k.check("gw.example.com", 2222, &key(KEY_B)), trusted_at(2));
        // A plain pattern is for port 22 only, a [host]:port pattern for that port only.
        assert_eq!(
            k.check("gw.example.com", 2200, &key(KEY_A)),
            Verdict::Unknown
        );
        let only_plain = kh(&format!("gw.example.com {KEY_A}\n"));
        assert_eq!(
            only_plain.check("gw.example.com", 2222, &key(KEY_A)),
            Verdict::Unknown
        );
        let only_port = kh(&format!("[gw.example.com]:2222 {KEY_B}\n"));
        assert_eq!(
            only_port.check("gw.example.com", 22, &key(KEY_B)),
            Verdict::Unknown
        );
    }

    #[test]
    fn ipv6_hosts_use_brackets_only_with_a_port() {
        let k = kh(&format!("::1 {KEY_A}\n[::1]:2222 {KEY_B}\n"));
        assert_eq!(k.check("::1", 22, &key(KEY_A)), trusted_at(1));
        assert_eq!(k.check("::1", 2222, &key(KEY_B)), trusted_at(2));
        assert_eq!(k.check("[::1]", 2222, &key(KEY_B)), trusted_at(2));
    }

    #[test]
    fn star_wildcard() {
        let k = kh(&format!("*.example.com {KEY_A}\n"));
        assert_eq!(k.check("gw.example.com", 22, &key(KEY_A)), trusted_at(1));
        assert_eq!(k.check("a.b.example.com", 22, &key(KEY_A)), trusted_at(1));
        assert_eq!(k.check("example.com", 22, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(
            k.check("gw.example.com.evil.org", 22, &key(KEY_A)),
            Verdict::Unknown
        );
        // "*.example.com" does not match "[gw.example.com]:2222".
        assert_eq!(
            k.check("gw.example.com", 2222, &key(KEY_A)),
            Verdict::Unknown
        );
        let ported = kh(&format!("[*.example.com]:2222 {KEY_A}\n"));
        assert_eq!(
            ported.check("gw.example.com", 2222, &key(KEY_A)),
            trusted_at(1)
        );
        // As in OpenSSH, a lone "*" matches every name, the [host]:port form included.
        let all = kh(&format!("* {KEY_A}\n"));
        assert_eq!(all.check("anything", 2222, &key(KEY_A)), trusted_at(1));
    }

    #[test]
    fn question_mark_wildcard() {
        let k = kh(&format!("192.168.0.? {KEY_A}\n"));
        assert_eq!(k.check("192.168.0.7", 22, &key(KEY_A)), trusted_at(1));
        assert_eq!(k.check("192.168.0.17", 22, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(k.check("192.168.0.", 22, &key(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn glob_matcher_edge_cases() {
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"a"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"axxbyybzc"));
        assert!(!glob_match(b"a*b*c", b"axxbyyb"));
        assert!(glob_match(b"*.*.com", b"a.b.com"));
        assert!(glob_match(b"??", b"ab"));
        assert!(!glob_match(b"??", b"abc"));
        assert!(glob_match(b"**a", b"bba"));
    }

    #[test]
    fn negation_vetoes_the_line_in_any_position() {
        for hosts in [
            "*.example.com,!bad.example.com",
            "!bad.example.com,*.example.com",
        ] {
            let k = kh(&format!("{hosts} {KEY_A}\n"));
            assert_eq!(
                k.check("good.example.com", 22, &key(KEY_A)),
                trusted_at(1),
                "{hosts}"
            );
            assert_eq!(
                k.check("bad.example.com", 22, &key(KEY_A)),
                Verdict::Unknown,
                "{hosts}"
            );
            // A vetoed line does not make the host "known" either.
            assert_eq!(
                k.check("bad.example.com", 22, &key(KEY_B)),
                Verdict::Unknown,
                "{hosts}"
            );
        }
        // Negation alone never matches anything.
        let only_negated = kh(&format!("!bad.example.com {KEY_A}\n"));
        assert_eq!(
            only_negated.check("good.example.com", 22, &key(KEY_A)),
            Verdict::Unknown
        );
        // Another line can still name the vetoed host.
        let two = kh(&format!(
            "*.example.com,!bad.example.com {KEY_A}\nbad.example.com {KEY_B}\n"
        ));
        assert_eq!(two.check("bad.example.com", 22, &key(KEY_B)), trusted_at(2));
    }

    #[test]
    fn hmac_reproduces_ssh_keygen_hashes() {
        for (hashed, name) in [
            (HASHED_22, "gateway.example.com"),
            (HASHED_2222, "[gateway.example.com]:2222"),
        ] {
            let parts: Vec<&str> = hashed.split('|').collect();
            let salt = STANDARD.decode(parts[2]).unwrap();
            let hash = STANDARD.decode(parts[3]).unwrap();
            assert_eq!(
                host_hash(&salt, name).unwrap().as_slice(),
                hash.as_slice(),
                "{name}"
            );
            assert_ne!(
                host_hash(&salt, "gateway.example.org").unwrap().as_slice(),
                hash.as_slice()
            );
        }
    }

    #[test]
    fn hashed_entries_match_port_22_and_bracketed_names() {
        let k = kh(&format!("{HASHED_22} {KEY_A}\n{HASHED_2222} {KEY_B}\n"));
        assert_eq!(
            k.check("gateway.example.com", 22, &key(KEY_A)),
            trusted_at(1)
        );
        assert_eq!(
            k.check("gateway.example.com", 2222, &key(KEY_B)),
            trusted_at(2)
        );
        // Names are lowercased before hashing, as ssh does.
        assert_eq!(
            k.check("GateWay.Example.COM", 22, &key(KEY_A)),
            trusted_at(1)
        );
        assert_eq!(
            k.check("gateway.example.org", 22, &key(KEY_A)),
            Verdict::Unknown
        );
        assert_eq!(
            k.check("gateway.example.com", 2200, &key(KEY_A)),
            Verdict::Unknown
        );
        // The hashed port-2222 entry makes that host "known": another key is a change.
        assert_eq!(
            k.check("gateway.example.com", 2222, &key(KEY_A)),
            Verdict::Changed {
                known: vec![KnownKey {
                    fingerprint: FP_B.into(),
                    algorithm: "ssh-ed25519".into(),
                    file: "/test/known_hosts".into(),
                    line: 2,
                }]
            }
        );
    }

    #[test]
    fn malformed_hashed_names_are_skipped() {
        let text = format!(
            "|2|e9Vvz046H/g0+AdCmOWLwjv4nUA=|AIoRVzE79tZGQpOTfv6dcduiG/4= {KEY_A}\n\
             |1|not*base64|AIoRVzE79tZGQpOTfv6dcduiG/4= {KEY_A}\n\
             |1|c2hvcnQ=|AIoRVzE79tZGQpOTfv6dcduiG/4= {KEY_A}\n\
             |1|e9Vvz046H/g0+AdCmOWLwjv4nUA= {KEY_A}\n\
             {HASHED_22},other.example.com {KEY_A}\n\
             {HASHED_22} {KEY_A}\n"
        );
        let k = kh(&text);
        let lines: Vec<usize> = k.skipped().iter().map(|s| s.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5]);
        assert_eq!(k.entries().len(), 1);
        assert_eq!(
            k.check("gateway.example.com", 22, &key(KEY_A)),
            trusted_at(6)
        );
    }

    #[test]
    fn unknown_host_is_not_a_changed_key() {
        assert_eq!(
            kh("").check("gw.example.com", 22, &key(KEY_A)),
            Verdict::Unknown
        );
        let k = kh(&format!(
            "other.example.com {KEY_B}\n[gw.example.com]:2222 {KEY_B}\n"
        ));
        assert_eq!(k.check("gw.example.com", 22, &key(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn changed_key_reports_old_fingerprint_with_file_and_line() {
        let text = format!("# my hosts\n\ngw.example.com {KEY_A}\n");
        let k = kh(&text);
        assert_eq!(
            k.check("gw.example.com", 22, &key(KEY_B)),
            Verdict::Changed {
                known: vec![KnownKey {
                    fingerprint: FP_A.into(),
                    algorithm: "ssh-ed25519".into(),
                    file: "/test/known_hosts".into(),
                    line: 3,
                }]
            }
        );
    }

    #[test]
    fn several_key_types_for_one_host() {
        let k = kh(&format!("gw.example.com {KEY_C}\ngw.example.com {KEY_A}\n"));
        assert_eq!(k.check("gw.example.com", 22, &key(KEY_C)), trusted_at(1));
        assert_eq!(k.check("gw.example.com", 22, &key(KEY_A)), trusted_at(2));
        let Verdict::Changed { known } = k.check("gw.example.com", 22, &key(KEY_B)) else {
            panic!("expected Changed");
        };
        let listed: Vec<(&str, &str, usize)> = known
            .iter()
            .map(|k| (k.fingerprint.as_str(), k.algorithm.as_str(), k.line))
            .collect();
        assert_eq!(
            listed,
            [(FP_C, "ecdsa-sha2-nistp256", 1), (FP_A, "ssh-ed25519", 2)]
        );
    }

    #[test]
    fn other_key_type_only_counts_as_changed() {
        // Documented simplification: OpenSSH would call this host new; we refuse as changed.
        let k = kh(&format!("gw.example.com {KEY_C}\n"));
        let Verdict::Changed { known } = k.check("gw.example.com", 22, &key(KEY_A)) else {
            panic!("expected Changed");
        };
        assert_eq!(known.len(), 1);
        assert_eq!(known[0].algorithm, "ecdsa-sha2-nistp256");
        assert_eq!(known[0].fingerprint, FP_C);
    }

    #[test]
    fn revoked_key_wins_for_any_host() {
        let k = kh(&format!(
            "gw.example.com {KEY_B}\n@revoked unrelated.example.org {KEY_B}\ngw.example.com {KEY_A}\n"
        ));
        let revoked = Verdict::Revoked {
            file: "/test/known_hosts".into(),
            line: 2,
        };
        assert_eq!(k.check("gw.example.com", 22, &key(KEY_B)), revoked);
        assert_eq!(k.check("never.seen", 2222, &key(KEY_B)), revoked);
        assert_eq!(k.entries()[1].marker, Marker::Revoked);
        // A revoked line with another key neither trusts nor makes a host known.
        assert_eq!(k.check("gw.example.com", 22, &key(KEY_A)), trusted_at(3));
        assert_eq!(
            k.check("unrelated.example.org", 22, &key(KEY_A)),
            Verdict::Unknown
        );
    }

    #[test]
    fn cert_authority_lines_are_kept_but_never_trust_or_make_known() {
        let k = kh(&format!("@cert-authority *.example.com {KEY_A}\n"));
        assert_eq!(k.entries().len(), 1);
        assert_eq!(k.entries()[0].marker, Marker::CertAuthority);
        assert!(k.entries()[0].matches("gw.example.com", 22));
        assert_eq!(k.check("gw.example.com", 22, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(k.check("gw.example.com", 22, &key(KEY_B)), Verdict::Unknown);
    }

    #[test]
    fn comments_blank_and_malformed_lines_are_skipped() {
        let text = format!(
            "# a comment\n\
             \n\
             \t   \n\
             justonetoken\n\
             host.example.com ssh-ed25519\n\
             host.example.com ssh-ed25519 not-base64!!\n\
             @bogus host.example.com {KEY_A}\n\
             @revoked\n\
             host.example.com ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIMc0NhHJVrevyQ+EmUe75nQpR2ewanMrwk1lWdHhdTLL\n\
             1024 35 12345678901234567890\n\
             \x20 # indented comment\n\
             gw.example.com\t{KEY_A}\tcomment with spaces\r\n\
             other.example.com {KEY_B}"
        );
        let k = kh(&text);
        let lines: Vec<usize> = k.skipped().iter().map(|s| s.line).collect();
        assert_eq!(lines, [4, 5, 6, 7, 8, 9, 10]);
        assert!(k
            .skipped()
            .iter()
            .all(|s| s.file == Path::new("/test/known_hosts")));
        assert!(
            k.skipped()[3].reason.contains("unknown marker"),
            "{:?}",
            k.skipped()[3]
        );
        assert_eq!(k.entries().len(), 2);
        assert_eq!(k.check("gw.example.com", 22, &key(KEY_A)), trusted_at(12));
        assert_eq!(
            k.check("other.example.com", 22, &key(KEY_B)),
            trusted_at(13)
        );
    }

    #[test]
    fn host_matching_is_case_insensitive() {
        let k = kh(&format!(
            "GateWay.Example.COM {KEY_A}\n*.EXAMPLE.ORG,!BAD.example.org {KEY_B}\n"
        ));
        assert_eq!(
            k.check("gateway.example.com", 22, &key(KEY_A)),
            trusted_at(1)
        );
        assert_eq!(
            k.check("GATEWAY.example.com", 22, &key(KEY_A)),
            trusted_at(1)
        );
        assert_eq!(k.check("Good.Example.Org", 22, &key(KEY_B)), trusted_at(2));
        assert_eq!(
            k.check("bad.EXAMPLE.org", 22, &key(KEY_B)),
            Verdict::Unknown
        );
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        assert_eq!(fingerprint(&key(KEY_A)), FP_A);
        assert_eq!(fingerprint(&key(KEY_B)), FP_B);
        assert_eq!(fingerprint(&key(KEY_C)), FP_C);
        // The comment is not part of the fingerprint.
        assert_eq!(fingerprint(&key(&format!("{KEY_A} clawlink-test-a"))), FP_A);
    }

    #[test]
    fn host_key_names() {
        assert_eq!(host_key_name("gw.example.com", 22), "gw.example.com");
        assert_eq!(
            host_key_name("gw.example.com", 2222),
            "[gw.example.com]:2222"
        );
        assert_eq!(
            host_key_name("GW.Example.com", 2222),
            "[gw.example.com]:2222"
        );
        assert_eq!(host_key_name("::1", 22), "::1");
        assert_eq!(host_key_name("::1", 2222), "[::1]:2222");
        assert_eq!(host_key_name("[::1]", 2222), "[::1]:2222");
        assert_eq!(host_key_name("[::1]", 22), "::1");
    }

    #[test]
    fn append_then_load_then_check() {
        let dir = scratch_dir("append");
        let file = dir.join("new-ssh-dir").join("known_hosts");
        append(
            &file,
            "gw.example.com",
            22,
            &key(&format!("{KEY_A} some-comment")),
        )
        .unwrap();
        append(&file, "GW.example.com", 2222, &key(KEY_C)).unwrap();

        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(
            text,
            format!("gw.example.com {KEY_A} clawlink\n[gw.example.com]:2222 {KEY_C} clawlink\n")
        );
        let k = KnownHosts::load(std::slice::from_ref(&file)).unwrap();
        assert!(k.skipped().is_empty());
        assert_eq!(
            k.check("gw.example.com", 22, &key(KEY_A)),
            Verdict::Trusted {
                file: file.clone(),
                line: 1
            }
        );
        assert_eq!(
            k.check("gw.example.com", 2222, &key(KEY_C)),
            Verdict::Trusted {
                file: file.clone(),
                line: 2
            }
        );

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file_mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            let dir_mode = fs::metadata(file.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(file_mode, 0o600);
            assert_eq!(dir_mode, 0o700);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn append_adds_a_missing_final_newline_first() {
        let dir = scratch_dir("newline");
        let file = dir.join("known_hosts");
        fs::write(&file, format!("old.example.com {KEY_B}")).unwrap();
        append(&file, "gw.example.com", 22, &key(KEY_A)).unwrap();
        let k = KnownHosts::load(std::slice::from_ref(&file)).unwrap();
        assert!(k.skipped().is_empty());
        assert_eq!(
            k.check("old.example.com", 22, &key(KEY_B)),
            Verdict::Trusted {
                file: file.clone(),
                line: 1
            }
        );
        assert_eq!(
            k.check("gw.example.com", 22, &key(KEY_A)),
            Verdict::Trusted {
                file: file.clone(),
                line: 2
            }
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn append_refuses_names_that_would_be_patterns() {
        let dir = scratch_dir("badhost");
        let file = dir.join("known_hosts");
        for host in [
            "",
            "a b",
            "a\nb",
            "*.example.com",
            "a,b",
            "!a",
            "|1|x",
            "@revoked",
            "#x",
            "h?",
        ] {
            let err = append(&file, host, 22, &key(KEY_A)).unwrap_err();
            assert!(
                matches!(err, KnownHostsError::InvalidHost { .. }),
                "{host:?}: {err}"
            );
        }
        assert!(!file.exists(), "nothing written for refused names");
        // IPv6 addresses (with or without brackets) are fine.
        append(&file, "[fe80::1%eth0]", 2222, &key(KEY_A)).unwrap();
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("[fe80::1%eth0]:2222 {KEY_A} clawlink\n")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_reads_files_in_order_and_ignores_missing_ones() {
        let dir = scratch_dir("load");
        let user = dir.join("user_known_hosts");
        let global = dir.join("ssh_known_hosts");
        fs::write(&user, format!("# user\ngw.example.com {KEY_A}\n")).unwrap();
        fs::write(
            &global,
            format!("gw.example.com {KEY_A}\ngw.example.com {KEY_C}\n"),
        )
        .unwrap();
        let files = [
            dir.join("missing"),
            dir.join("no-such-dir").join("known_hosts"),
            user.clone(),
            global.clone(),
        ];
        let k = KnownHosts::load(&files).unwrap();
        assert_eq!(k.entries().len(), 3);
        assert_eq!(
            k.check("gw.example.com", 22, &key(KEY_A)),
            Verdict::Trusted {
                file: user.clone(),
                line: 2
            }
        );
        assert_eq!(
            k.check("gw.example.com", 22, &key(KEY_C)),
            Verdict::Trusted {
                file: global.clone(),
                line: 2
            }
        );
        let Verdict::Changed { known } = k.check("gw.example.com", 22, &key(KEY_B)) else {
            panic!("expected Changed");
        };
        let places: Vec<(PathBuf, usize)> = known.into_iter().map(|k| (k.file, k.line)).collect();
        assert_eq!(
            places,
            [(user.clone(), 2), (global.clone(), 1), (global.clone(), 2)]
        );

        // A path under a plain file counts as missing too.
        assert!(KnownHosts::load(&[user.join("x")])
            .unwrap()
            .entries()
            .is_empty());
        // An existing path that cannot be read as a file is an error naming it.
        let err = KnownHosts::load(&[user.clone(), dir.clone()]).unwrap_err();
        assert!(
            matches!(&err, KnownHostsError::Read { path, .. } if *path == dir),
            "{err}"
        );
        assert!(err.to_string().contains(&dir.display().to_string()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_tolerates_invalid_utf8() {
        let dir = scratch_dir("utf8");
        let file = dir.join("known_hosts");
        let mut bytes = b"# caf\xe9\nbad\xff.example.com ".to_vec();
        bytes.extend_from_slice(format!("{KEY_B}\ngw.example.com {KEY_A}\n").as_bytes());
        fs::write(&file, bytes).unwrap();
        let k = KnownHosts::load(std::slice::from_ref(&file)).unwrap();
        assert_eq!(
            k.check("gw.example.com", 22, &key(KEY_A)),
            Verdict::Trusted {
                file: file.clone(),
                line: 3
            }
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pins_with_and_without_padding_normalize_to_the_fingerprint() {
        assert_eq!(parse_pin(FP_A).unwrap(), FP_A);
        assert_eq!(parse_pin(&format!("{FP_A}=")).unwrap(), FP_A);
        assert_eq!(parse_pin(&format!("  {FP_B}=\n")).unwrap(), FP_B);
        assert_eq!(
            parse_pin(&format!("{FP_C}=")).unwrap(),
            fingerprint(&key(KEY_C))
        );
    }

    #[test]
    fn pins_in_other_forms_are_refused_clearly() {
        let reason = |pin: &str| match parse_pin(pin) {
            Err(KnownHostsError::InvalidPin { reason, .. }) => reason,
            other => panic!("{pin:?} gave {other:?}"),
        };
        assert!(
            reason("MeMkCcyP/wJDf1vsd1iMXgIzJqCA2jPoixcw/nXLjpM").contains("expected `SHA256:`")
        );
        assert!(reason("MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48").contains("MD5"));
        assert!(reason("16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48").contains("MD5"));
        assert!(reason("sha256:MeMkCcyP/wJDf1vsd1iMXgIzJqCA2jPoixcw/nXLjpM").contains("upper case"));
        assert!(reason("SHA256:").contains("nothing follows"));
        assert!(reason("SHA256:abc!def").contains("not valid base64"));
        assert!(reason("SHA256:abcd").contains("32"));
        assert!(reason("SHA512:abcd").contains("expected `SHA256:`"));
        let err = parse_pin("nope").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid host key fingerprint \"nope\": "),
            "{err}"
        );
    }
}
