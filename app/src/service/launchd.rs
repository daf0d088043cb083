//! The launchd agent (plist) of `clawlink service`: written from a plan, and its `ProgramArguments` read back for `status`.

use super::plan::ServiceSpec;
use super::STOP_TIMEOUT_S;

/// launchd has no start limit, so a profile that can never start is retried at this pace;
/// slow enough to be harmless, fast enough to come back quickly after a network outage.
const LAUNCHD_THROTTLE_S: u32 = 10;

/// The launchd agent: `label` names it, `log_file` receives its stdout and stderr.
pub(super) fn launchd_plist(spec: &ServiceSpec, label: &str, log_file: &str) -> String {
    let string = |s: &str| format!("<string>{}</string>", xml_escape(s));
    let mut lines = vec![
        r#"<?xml version="1.0" encoding="UTF-8"?>"#.to_owned(),
        r#"<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">"#.to_owned(),
        format!(
            // No profile name or command here: XML comments must not contain "--".
            "<!-- clawlink agent, written by `clawlink service install` (clawlink {}). No secret is kept here. -->",
            env!("CARGO_PKG_VERSION")
        ),
        r#"<plist version="1.0">"#.to_owned(),
        "<dict>".to_owned(),
        "\t<key>Label</key>".to_owned(),
        format!("\t{}", string(label)),
        "\t<key>ProgramArguments</key>".to_owned(),
        "\t<array>".to_owned(),
    ];
    lines.extend(spec.argv.iter().map(|arg| format!("\t\t{}", string(arg))));
    lines.push("\t</array>".to_owned());
    if !spec.environment.is_empty() {
        lines.push("\t<key>EnvironmentVariables</key>".to_owned());
        lines.push("\t<dict>".to_owned());
        for (name, value) in &spec.environment {
            lines.push(format!("\t\t<key>{}</key>", xml_escape(name)));
            lines.push(format!("\t\t{}", string(value)));
        }
        lines.push("\t</dict>".to_owned());
    }
    if let Some(dir) = &spec.working_directory {
        lines.push("\t<key>WorkingDirectory</key>".to_owned());
        lines.push(format!("\t{}", string(dir)));
    }
    lines.extend([
        "\t<key>RunAtLoad</key>".to_owned(),
        "\t<true/>".to_owned(),
        // Restart after a failure, not after `launchctl bootout` or a clean SIGTERM exit.
        "\t<key>KeepAlive</key>".to_owned(),
        "\t<dict>".to_owned(),
        "\t\t<key>SuccessfulExit</key>".to_owned(),
        "\t\t<false/>".to_owned(),
        "\t</dict>".to_owned(),
        "\t<key>ThrottleInterval</key>".to_owned(),
        format!("\t<integer>{LAUNCHD_THROTTLE_S}</integer>"),
        "\t<key>ExitTimeOut</key>".to_owned(),
        format!("\t<integer>{STOP_TIMEOUT_S}</integer>"),
        "\t<key>ProcessType</key>".to_owned(),
        "\t<string>Background</string>".to_owned(),
        "\t<key>StandardOutPath</key>".to_owned(),
        format!("\t{}", string(log_file)),
        "\t<key>StandardErrorPath</key>".to_owned(),
        format!("\t{}", string(log_file)),
        "</dict>".to_owned(),
        "</plist>".to_owned(),
    ]);
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `ProgramArguments` of a plist (for `status`).
pub(super) fn plist_program_arguments(xml: &str) -> Vec<String> {
    let Some(after_key) = xml.find("<key>ProgramArguments</key>").map(|i| &xml[i..]) else {
        return Vec::new();
    };
    let Some(array) = after_key
        .find("<array>")
        .zip(after_key.find("</array>"))
        .filter(|(open, close)| open < close)
        .map(|(open, close)| &after_key[open + "<array>".len()..close])
    else {
        return Vec::new();
    };
    array
        .split("<string>")
        .skip(1)
        .filter_map(|part| part.split_once("</string>").map(|(s, _)| xml_unescape(s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::plan::test_spec as spec;

    #[test]
    fn the_plist_escapes_xml_and_keeps_alive_on_failure() {
        let plist = launchd_plist(
            &spec(&[
                "/Apps/Claw & Co/clawlink",
                "up",
                "--profile",
                "work",
                "--url",
                "wss://h/<x>?a='b'",
            ]),
            "dev.clawlink.work",
            "/Users/ann/Library/Logs/clawlink/work.log",
        );
        assert!(plist.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist"));
        for expected in [
            "<key>Label</key>\n\t<string>dev.clawlink.work</string>",
            "<string>/Apps/Claw &amp; Co/clawlink</string>",
            "<string>wss://h/&lt;x&gt;?a=&apos;b&apos;</string>",
            "<key>KeepAlive</key>\n\t<dict>\n\t\t<key>SuccessfulExit</key>\n\t\t<false/>\n\t</dict>",
            "<key>RunAtLoad</key>\n\t<true/>",
            "<key>ThrottleInterval</key>\n\t<integer>10</integer>",
            "<key>StandardOutPath</key>\n\t<string>/Users/ann/Library/Logs/clawlink/work.log</string>",
            "<key>StandardErrorPath</key>\n\t<string>/Users/ann/Library/Logs/clawlink/work.log</string>",
            "<key>CLAWLINK_DATA_DIR</key>\n\t\t<string>/data/50% &amp; &lt;more&gt;</string>",
            "<key>WorkingDirectory</key>\n\t<string>/home/ann/my project</string>",
        ] {
            assert!(plist.contains(expected), "missing {expected:?} in\n{plist}");
        }
        // Nothing but the escaped forms: every '&' starts an entity.
        assert!(!plist.contains("& "));
        // XML comments must not contain "--".
        for comment in plist.split("<!--").skip(1) {
            let body = comment.split("-->").next().unwrap();
            assert!(!body.contains("--"), "{body}");
        }
        assert_eq!(
            plist_program_arguments(&plist),
            vec![
                "/Apps/Claw & Co/clawlink",
                "up",
                "--profile",
                "work",
                "--url",
                "wss://h/<x>?a='b'"
            ]
        );
        assert_eq!(xml_unescape("&#65;&#x42;&bogus; &amp;"), "AB&bogus; &");
    }
}
