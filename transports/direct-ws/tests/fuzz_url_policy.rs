//! Fixed-budget fuzzing of the gateway URL rules: parsing never panics or hangs, the canonical form means the same URL, a typed port is kept, and plaintext is refused wherever the rules say so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use clawlink_core::transport::TransportErrorKind;
use clawlink_fuzz_budget::{arbitrary, check, Arbitrary, Unstructured};
use clawlink_transport_ws::{DirectWs, GatewayUrl, PlaintextName, Settings, DEFAULT_PORT};
use serde_json::json;

const BUDGET: Duration = Duration::from_secs(3);

/// A URL assembled from parts, most of them plausible, so cases get past the url crate.
#[derive(Debug)]
struct UrlParts {
    scheme: &'static str,
    host: String,
    port: Option<u16>,
    rest: String,
    /// Whether host and rest came from the well-formed choices, so the typed port is the
    /// URL's port (a free-form host may hold a `#` or `/` that ends the authority early).
    well_formed: bool,
}

impl UrlParts {
    fn text(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{}://{}{port}{}", self.scheme, self.host, self.rest)
    }
}

impl<'a> Arbitrary<'a> for UrlParts {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let scheme = *u.choose(&["ws", "wss", "WS", "Wss", "http", "ssh"])?;
        let mut well_formed = true;
        let host = match u.choose_index(6)? {
            0 => Ipv4Addr::from(u.arbitrary::<u32>()?).to_string(),
            1 => format!("[{}]", Ipv6Addr::from(u.arbitrary::<u128>()?)),
            2 => u
                .choose(&[
                    "localhost",
                    "LOCALHOST.",
                    "gw.localhost",
                    "box.local",
                    "gw.tail1234.ts.net",
                    "ts.net",
                    "example.com",
                    "xn--bcher-kva.example",
                    "bücher.example",
                ])?
                .to_string(),
            3 => format!("[::ffff:{}]", Ipv4Addr::from(u.arbitrary::<u32>()?)),
            4 => format!(
                "{}.{}",
                u.int_in_range(0..=255u16)?,
                u.int_in_range(0..=255u16)?
            ),
            _ => {
                well_formed = false;
                u.arbitrary()?
            }
        };
        let port = if u.arbitrary()? {
            let any: u16 = u.arbitrary()?;
            Some(*u.choose(&[80, 443, DEFAULT_PORT, 0, 1, any])?)
        } else {
            None
        };
        let rest = match u.choose_index(4)? {
            0 => String::new(),
            1 => format!("/{}", u.arbitrary::<String>()?),
            2 => format!(
                "/?{}={}",
                u.choose(&["token", "x", "api_key", "Pass-Word", "authz"])?,
                u.arbitrary::<String>()?
            ),
            _ => {
                well_formed = false;
                u.arbitrary()?
            }
        };
        Ok(UrlParts {
            scheme,
            host,
            port,
            rest,
            well_formed,
        })
    }
}

fn settings(value: serde_json::Value) -> Settings {
    DirectWs::parse_settings(&value).unwrap()
}

fn assert_url_invariants(input: &str) {
    let url = match GatewayUrl::parse(input) {
        Ok(url) => url,
        Err(err) => {
            assert_eq!(err.kind, TransportErrorKind::Config, "{input:?}: {err}");
            assert!(!err.to_string().is_empty());
            return;
        }
    };
    assert!(!url.host.is_empty(), "{input:?} → {url:?}");
    assert!(url.path.starts_with('/'), "{input:?} → {url:?}");
    let canonical = url.to_url();
    assert_eq!(
        GatewayUrl::parse(&canonical).as_ref().ok(),
        Some(&url),
        "{input:?} → {canonical:?} means another URL"
    );
    if url.is_loopback() {
        assert!(url.plaintext_allowed(), "{url:?}");
    }

    let strict = settings(json!({}));
    let insecure = settings(json!({"allow_insecure_ws": true}));
    let pinned = settings(json!({"tls": {"spki_sha256": "x"}}));
    let verdict = DirectWs::check_url_policy(&url, &strict);
    if url.tls {
        assert!(verdict.is_ok(), "{url:?}: {verdict:?}");
        assert!(DirectWs::check_url_policy(&url, &pinned).is_ok());
    } else {
        assert_eq!(verdict.is_ok(), url.plaintext_allowed(), "{url:?}");
        // Break-glass allows any plaintext host, never a pin on plaintext.
        assert!(DirectWs::check_url_policy(&url, &insecure).is_ok());
        assert!(DirectWs::check_url_policy(&url, &pinned).is_err());
    }
    if let Err(err) = verdict {
        assert!(err.to_string().contains("plaintext"), "{err}");
    }
}

#[test]
fn arbitrary_text_never_panics_and_parsed_urls_keep_their_meaning() {
    check("gateway url text", BUDGET, |input: String| {
        assert_url_invariants(&input)
    });
}

#[test]
fn assembled_urls_keep_their_meaning_and_their_typed_port() {
    check("gateway url parts", BUDGET, |parts: UrlParts| {
        let text = parts.text();
        assert_url_invariants(&text);
        if let (Ok(url), Some(port)) = (GatewayUrl::parse(&text), parts.port) {
            if parts.well_formed {
                assert_eq!(url.port, port, "{text:?} → {url:?}");
            }
        }
    });
}

#[test]
fn a_plaintext_name_admits_only_addresses_of_its_class() {
    check("plaintext names", BUDGET, |(v4, v6): (u32, u128)| {
        for ip in [
            IpAddr::V4(Ipv4Addr::from(v4)),
            IpAddr::V6(Ipv6Addr::from(v6)),
        ] {
            if PlaintextName::Localhost.admits(ip) {
                assert!(PlaintextName::Mdns.admits(ip), "{ip}");
            }
            // What a tailnet or mDNS name may stand for, plaintext may reach by
            // address too. (IPv4-mapped addresses are left out: as literal hosts only
            // their loopback and private forms are allowed, the stricter reading.)
            let mapped = matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
            for class in [PlaintextName::Mdns, PlaintextName::Tailnet] {
                if class.admits(ip) && !mapped {
                    let authority = std::net::SocketAddr::new(ip, 1);
                    let url = GatewayUrl::parse(&format!("ws://{authority}")).unwrap();
                    assert!(
                        url.plaintext_allowed(),
                        "{class:?} admits {ip}, which plaintext may not reach"
                    );
                }
            }
        }
    });
}
