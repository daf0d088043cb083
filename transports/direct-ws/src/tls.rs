//! TLS for `wss://` gateways (rustls, ring): public roots, a private CA file, and pins that cannot be silently bypassed.
//!
//! Without a pin, a certificate must chain to the system or webpki roots (or `tls.ca_file`)
//! and name the host. With a pin — `tls.fingerprint` (SHA-256 of the leaf DER, the openclaw
//! CLI's format) or `tls.spki_sha256` (SHA-256 of the public key, which survives certificate
//! renewal: the fix for openclaw #150152) — the presented leaf must match it, whatever CA
//! signed it, so self-signed gateways work. Every refusal carries the observed fingerprints,
//! so the user can compare them and pin them (`clawlink tls trust`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use clawlink_core::transport::{TransportError, TransportErrorKind};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// A SHA-256 pin, 32 bytes.
pub type Pin = [u8; 32];

/// Parses a pin in the formats the openclaw CLI accepts: hex with an optional `sha256:`
/// prefix, colons allowed, any case; for SPKI pins also base64 (the HPKP `pin-sha256` form).
pub fn parse_pin(text: &str) -> Result<Pin, String> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .or_else(|| trimmed.strip_prefix("sha256/"))
        .unwrap_or(trimmed);
    let hex: String = body.chars().filter(|c| *c != ':').collect();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let mut pin = [0u8; 32];
        for (i, byte) in pin.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        return Ok(pin);
    }
    use base64::Engine as _;
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
    ] {
        if let Ok(bytes) = engine.decode(body) {
            if let Ok(pin) = <Pin>::try_from(bytes.as_slice()) {
                return Ok(pin);
            }
        }
    }
    Err(format!(
        "{text:?} is not a SHA-256 fingerprint: write 64 hex digits (colons and a sha256: prefix are fine) or base64"
    ))
}

/// `aa:bb:…` for humans, as browsers and `openssl x509 -fingerprint` print it.
pub fn colon_hex(pin: &Pin) -> String {
    pin.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fingerprints of a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprints {
    /// SHA-256 of the certificate DER (`tls.fingerprint`).
    pub leaf: Pin,
    /// SHA-256 of the SubjectPublicKeyInfo DER (`tls.spki_sha256`).
    pub spki: Option<Pin>,
}

impl Fingerprints {
    pub fn of(cert: &CertificateDer<'_>) -> Self {
        Self {
            leaf: Sha256::digest(cert.as_ref()).into(),
            spki: spki_der(cert.as_ref()).map(|spki| Sha256::digest(spki).into()),
        }
    }

    /// "leaf sha256 aa:bb…, spki sha256 cc:dd…" for messages.
    pub fn describe(&self) -> String {
        match &self.spki {
            Some(spki) => format!("leaf sha256:{}, spki sha256:{}", hex(&self.leaf), hex(spki)),
            None => format!("leaf sha256:{}", hex(&self.leaf)),
        }
    }
}

pub fn hex(pin: &Pin) -> String {
    pin.iter().map(|b| format!("{b:02x}")).collect()
}

/// The DER of the SubjectPublicKeyInfo inside a certificate (the seventh element of
/// TBSCertificate, counting the optional `[0] version`), found with a minimal DER walk.
fn spki_der(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert_body, _) = der_element(cert)?; // Certificate SEQUENCE
    let (_, tbs, _) = der_element(cert_body)?; // TBSCertificate SEQUENCE
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    // serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
    for _ in 0..5 {
        let (_, _, after) = der_element(rest)?;
        rest = after;
    }
    let (tag, _, after) = der_element(rest)?;
    (tag == 0x30).then(|| &rest[..rest.len() - after.len()])
}

/// One DER TLV: (tag, contents, remaining input).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let contents = input.get(header..end)?;
    Some((tag, contents, &input[end..]))
}

/// What the TLS policy of one gateway URL is.
#[derive(Debug, Clone, Default)]
pub struct TlsPolicy {
    pub leaf_pin: Option<Pin>,
    pub spki_pin: Option<Pin>,
    /// Extra trust anchors (a private CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Accept any certificate and only record it (`clawlink tls trust`).
    pub capture_only: bool,
}

impl TlsPolicy {
    pub fn has_pin(&self) -> bool {
        self.leaf_pin.is_some() || self.spki_pin.is_some()
    }

    /// Reads a PEM CA file (one or more certificates).
    pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .map_err(|e| TransportError::config(format!("tls.ca_file {}: {e}", path.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| TransportError::config(format!("tls.ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(TransportError::config(format!(
                "tls.ca_file {} holds no PEM certificate",
                path.display()
            )));
        }
        Ok(certs)
    }
}

/// What the verifier saw, for error messages after a failed handshake.
#[derive(Debug, Default)]
pub struct Observation {
    pub fingerprints: Option<Fingerprints>,
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A pin is configured and the certificate does not match it.
    PinMismatch,
    /// No pin, and the chain does not verify against the roots.
    Untrusted(String),
}

/// The verifier: pins first, then the roots.
#[derive(Debug)]
pub struct GatewayVerifier {
    policy: TlsPolicy,
    roots: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
    pub observation: Arc<Mutex<Observation>>,
}

/// The root-of-trust verifier: webpki roots, the OS store, and a private CA file. Built once
/// per transport (loading the OS store takes milliseconds), shared by every connection.
pub fn build_roots(
    extra_roots: &[CertificateDer<'static>],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TransportError> {
    let mut store = RootCertStore::empty();
    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // The OS store too: corporate CAs live there. Unreadable entries are skipped.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = store.add(cert);
    }
    for cert in extra_roots {
        store.add(cert.clone()).map_err(|e| {
            TransportError::config(format!(
                "tls.ca_file holds a certificate rustls cannot use as a root: {e}"
            ))
        })?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| TransportError::config(format!("cannot build the TLS verifier: {e}")))
}

impl GatewayVerifier {
    /// A verifier for one connection (it records what that handshake presented).
    pub fn new(
        policy: TlsPolicy,
        roots: Arc<WebPkiServerVerifier>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            policy,
            roots,
            provider,
            observation: Arc::new(Mutex::new(Observation::default())),
        }
    }

    fn record(&self, fingerprints: Fingerprints, failure: Option<Failure>) {
        let mut observation = self.observation.lock().unwrap_or_else(|e| e.into_inner());
        observation.fingerprints = Some(fingerprints);
        observation.failure = failure;
    }
}

impl ServerCertVerifier for GatewayVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprints = Fingerprints::of(end_entity);
        if self.policy.capture_only {
            self.record(fingerprints, None);
            return Err(rustls::Error::General("certificate captured".into()));
        }
        if self.policy.has_pin() {
            let leaf_ok = self.policy.leaf_pin == Some(fingerprints.leaf);
            let spki_ok =
                self.policy.spki_pin.is_some() && self.policy.spki_pin == fingerprints.spki;
            if leaf_ok || spki_ok {
                self.record(fingerprints, None);
                return Ok(ServerCertVerified::assertion());
            }
            self.record(fingerprints, Some(Failure::PinMismatch));
            return Err(rustls::Error::General("certificate pin mismatch".into()));
        }
        match self.roots.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(ok) => {
                self.record(fingerprints, None);
                Ok(ok)
            }
            Err(e) => {
                self.record(fingerprints, Some(Failure::Untrusted(e.to_string())));
                Err(e)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Turns a failed handshake into the error the user sees, using what the verifier saw.
pub fn handshake_error(
    url: &str,
    error: std::io::Error,
    observation: &Observation,
    policy: &TlsPolicy,
) -> TransportError {
    let seen = observation
        .fingerprints
        .as_ref()
        .map(Fingerprints::describe);
    match (&observation.failure, seen) {
        (Some(Failure::PinMismatch), Some(seen)) => {
            let expected: Vec<String> = [
                policy.leaf_pin.map(|p| format!("leaf sha256:{}", hex(&p))),
                policy.spki_pin.map(|p| format!("spki sha256:{}", hex(&p))),
            ]
            .into_iter()
            .flatten()
            .collect();
            TransportError::new(
                TransportErrorKind::Tls,
                format!(
                    "TLS certificate pin mismatch for {url}: expected {}, observed {seen}",
                    expected.join(" or ")
                ),
            )
            .with_fix(
                "if the gateway's certificate changed legitimately, verify the new fingerprints on the gateway host, \
                 then update the pin (`clawlink tls trust URL`); otherwise someone may be intercepting the connection",
            )
        }
        (Some(Failure::Untrusted(reason)), Some(seen)) => TransportError::new(
            TransportErrorKind::Tls,
            format!("the TLS certificate of {url} is not trusted ({reason}); it presents {seen}"),
        )
        .with_fix(format!(
            "for a self-signed gateway, compare those fingerprints with the gateway's certificate \
             (`openssl x509 -in ~/.openclaw/gateway/tls/gateway-cert.pem -noout -fingerprint -sha256` on the host), then pin it: \
             `clawlink tls trust {url}`; for a private CA, set tls.ca_file"
        )),
        _ => TransportError::new(
            TransportErrorKind::Tls,
            format!("TLS handshake with {url} failed: {error}"),
        )
        .with_fix("check that the port serves TLS (a ws:// gateway does not)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_in_every_format_the_cli_accepts() {
        let hex64 = "AB".repeat(32);
        let expected = [0xabu8; 32];
        for text in [
            hex64.clone(),
            hex64.to_lowercase(),
            format!("sha256:{hex64}"),
            format!("SHA256:{}", hex64.to_lowercase()),
            (0..32).map(|_| "ab").collect::<Vec<_>>().join(":"),
            format!(
                "  sha256:{}  ",
                (0..32).map(|_| "AB").collect::<Vec<_>>().join(":")
            ),
        ] {
            assert_eq!(parse_pin(&text), Ok(expected), "{text}");
        }
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(expected);
        assert_eq!(parse_pin(&b64), Ok(expected));
        assert!(parse_pin("abcd").unwrap_err().contains("64 hex digits"));
        assert!(parse_pin(&"zz".repeat(32)).is_err());
        assert_eq!(colon_hex(&expected).len(), 32 * 3 - 1);
    }

    #[test]
    fn der_walk_finds_the_spki_or_gives_up_cleanly() {
        // A tiny synthetic TBS: SEQ{ SEQ{ [0]{INT 2}, INT 1, SEQ{}, SEQ{}, SEQ{}, SEQ{}, SEQ{ 05 00 } } }
        let tbs_inner: Vec<u8> = [
            &[0xa0, 0x03, 0x02, 0x01, 0x02][..],
            &[0x02, 0x01, 0x01],
            &[0x30, 0x00],
            &[0x30, 0x00],
            &[0x30, 0x00],
            &[0x30, 0x00],
            &[0x30, 0x02, 0x05, 0x00],
        ]
        .concat();
        let mut tbs = vec![0x30, tbs_inner.len() as u8];
        tbs.extend(&tbs_inner);
        let mut cert = vec![0x30, tbs.len() as u8];
        cert.extend(&tbs);
        assert_eq!(spki_der(&cert), Some(&[0x30, 0x02, 0x05, 0x00][..]));
        assert_eq!(spki_der(&cert[..cert.len() - 3]), None);
        assert_eq!(spki_der(&[]), None);
        assert_eq!(spki_der(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
    }
}
