//! The launchd agent (plist) of `clawlink service`: built as a `plist` dictionary from a plan and written as XML by the crate, and its `ProgramArguments` read back with the crate for `status`.

use std::io::Cursor;

use plist::{Dictionary, Value};

use super::plan::ServiceSpec;
use super::STOP_TIMEOUT_S;

/// launchd has no start limit, so a profile that can never start is retried at this pace;
/// slow enough to be harmless, fast enough to come back quickly after a network outage.
const LAUNCHD_THROTTLE_S: u32 = 10;

/// The launchd agent: `label` names it, `log_file` receives its stdout and stderr.
pub(super) fn launchd_plist(spec: &ServiceSpec, label: &str, log_file: &str) -> String {
    let string = |s: &str| Value::String(s.to_owned());
    let integer = |n: u32| Value::Integer(n.into());
    // Keys in the order a reader expects them: what it is, what it runs, then how.
    let mut agent = Dictionary::new();
    agent.insert("Label".into(), string(label));
    agent.insert(
        "ProgramArguments".into(),
        Value::Array(spec.argv.iter().map(|arg| string(arg)).collect()),
    );
    if !spec.environment.is_empty() {
        let environment: Dictionary = spec
            .environment
            .iter()
            .map(|(name, value)| (name.clone(), string(value)))
            .collect();
        agent.insert("EnvironmentVariables".into(), environment.into());
    }
    if let Some(dir) = &spec.working_directory {
        agent.insert("WorkingDirectory".into(), string(dir));
    }
    agent.insert("RunAtLoad".into(), Value::Boolean(true));
    // Restart after a failure, not after `launchctl bootout` or a clean SIGTERM exit.
    let mut keep_alive = Dictionary::new();
    keep_alive.insert("SuccessfulExit".into(), Value::Boolean(false));
    agent.insert("KeepAlive".into(), keep_alive.into());
    agent.insert("ThrottleInterval".into(), integer(LAUNCHD_THROTTLE_S));
    agent.insert("ExitTimeOut".into(), integer(STOP_TIMEOUT_S));
    agent.insert("ProcessType".into(), string("Background"));
    agent.insert("StandardOutPath".into(), string(log_file));
    agent.insert("StandardErrorPath".into(), string(log_file));

    let mut xml = Vec::new();
    Value::Dictionary(agent)
        .to_writer_xml(&mut xml)
        .expect("a plist of strings, integers and booleans writes into memory");
    let xml = String::from_utf8(xml).expect("the plist XML writer writes UTF-8");
    // The crate writes no comments: the note for a reader goes between the document type
    // and the root element. No profile name or command in it: XML comments must not
    // contain "--".
    let comment = format!(
        "<!-- clawlink agent, written by `clawlink service install` (clawlink {}). No secret is kept here. -->",
        env!("CARGO_PKG_VERSION")
    );
    let mut text = match xml.split_once("<plist ") {
        Some((prologue, rest)) => format!("{prologue}{comment}\n<plist {rest}"),
        None => xml,
    };
    // As every text file: a final newline (the crate stops at `</plist>`).
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// The agent dictionary of a plist file, when it is one (XML as written above, or the binary
/// and old ASCII forms `plutil` converts to).
fn read_agent(text: &str) -> Option<Dictionary> {
    Value::from_reader(Cursor::new(text.as_bytes()))
        .ok()?
        .into_dictionary()
}

/// The `ProgramArguments` of a plist (for `status`); empty when the file has none.
pub(super) fn plist_program_arguments(text: &str) -> Vec<String> {
    read_agent(text)
        .and_then(|agent| agent.get("ProgramArguments")?.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(Value::into_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::plan::test_spec as spec;

    const LOG: &str = "/Users/ann/Library/Logs/clawlink/work.log";

    /// The strings of an array value, for comparing with what was written.
    fn strings(value: Option<&Value>) -> Vec<String> {
        value
            .and_then(Value::as_array)
            .expect("an array")
            .iter()
            .map(|v| v.as_string().expect("a string").to_owned())
            .collect()
    }

    /// Writes the plist of `spec`, reads it back with the crate, and checks that every value
    /// launchd acts on survived.
    fn assert_round_trip(spec: &ServiceSpec, label: &str, log_file: &str) -> String {
        let text = launchd_plist(spec, label, log_file);
        let agent = read_agent(&text).unwrap_or_else(|| panic!("not a plist:\n{text}"));
        assert_eq!(
            agent.get("Label").and_then(Value::as_string),
            Some(label),
            "{text}"
        );
        assert_eq!(strings(agent.get("ProgramArguments")), spec.argv);
        assert_eq!(plist_program_arguments(&text), spec.argv);
        let environment: Vec<(String, String)> = agent
            .get("EnvironmentVariables")
            .and_then(Value::as_dictionary)
            .map(|vars| {
                vars.iter()
                    .map(|(k, v)| (k.clone(), v.as_string().expect("a string").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(environment, spec.environment);
        assert_eq!(
            agent.get("WorkingDirectory").and_then(Value::as_string),
            spec.working_directory.as_deref()
        );
        let keep_alive = agent
            .get("KeepAlive")
            .and_then(Value::as_dictionary)
            .expect("KeepAlive is a dictionary");
        assert_eq!(
            keep_alive.get("SuccessfulExit").and_then(Value::as_boolean),
            Some(false)
        );
        assert_eq!(keep_alive.len(), 1);
        assert_eq!(
            agent.get("RunAtLoad").and_then(Value::as_boolean),
            Some(true)
        );
        for key in ["StandardOutPath", "StandardErrorPath"] {
            assert_eq!(
                agent.get(key).and_then(Value::as_string),
                Some(log_file),
                "{key}"
            );
        }
        text
    }

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
            LOG,
        );
        assert!(plist.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist"));
        assert!(plist.ends_with("</dict>\n</plist>\n"), "{plist}");
        for expected in [
            "<!-- clawlink agent, written by `clawlink service install`",
            "-->\n<plist version=\"1.0\">\n<dict>\n",
            "<key>Label</key>\n\t<string>dev.clawlink.work</string>",
            "<string>/Apps/Claw &amp; Co/clawlink</string>",
            "<key>KeepAlive</key>\n\t<dict>\n\t\t<key>SuccessfulExit</key>\n\t\t<false/>\n\t</dict>",
            "<key>RunAtLoad</key>\n\t<true/>",
            "<key>ThrottleInterval</key>\n\t<integer>10</integer>",
            "<key>ExitTimeOut</key>\n\t<integer>15</integer>",
            "<key>ProcessType</key>\n\t<string>Background</string>",
            "<key>StandardOutPath</key>\n\t<string>/Users/ann/Library/Logs/clawlink/work.log</string>",
            "<key>StandardErrorPath</key>\n\t<string>/Users/ann/Library/Logs/clawlink/work.log</string>",
            "<key>CLAWLINK_DATA_DIR</key>\n\t\t<string>/data/50% &amp; &lt;more&gt;</string>",
            "<key>WorkingDirectory</key>\n\t<string>/home/ann/my project</string>",
        ] {
            assert!(plist.contains(expected), "missing {expected:?} in\n{plist}");
        }
        // Nothing but the escaped forms: every '&' starts an entity, no '<' opens a tag.
        assert!(!plist.contains("& "));
        assert!(!plist.contains("<x>") && !plist.contains("<more>"));
        // The same keys, in the same order, as the hand-written plist had.
        let keys: Vec<&str> = plist
            .lines()
            .filter(|l| l.starts_with("\t<key>"))
            .map(|l| {
                l.trim()
                    .trim_start_matches("<key>")
                    .trim_end_matches("</key>")
            })
            .collect();
        assert_eq!(
            keys,
            [
                "Label",
                "ProgramArguments",
                "EnvironmentVariables",
                "WorkingDirectory",
                "RunAtLoad",
                "KeepAlive",
                "ThrottleInterval",
                "ExitTimeOut",
                "ProcessType",
                "StandardOutPath",
                "StandardErrorPath",
            ]
        );
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
    }

    #[test]
    fn a_plan_round_trips_through_the_plist() {
        let plan = spec(&[
            "/opt/clawlink/bin/clawlink",
            "up",
            "--profile",
            "work",
            "--config",
            "/home/ann/my configs/c.toml",
        ]);
        assert_round_trip(&plan, "dev.clawlink.work", LOG);
        // Without environment or working directory: those keys are left out, not empty.
        let bare = ServiceSpec {
            environment: Vec::new(),
            working_directory: None,
            ..plan
        };
        let text = assert_round_trip(&bare, "dev.clawlink.work", LOG);
        assert!(!text.contains("EnvironmentVariables") && !text.contains("WorkingDirectory"));
    }

    #[test]
    fn paths_that_need_xml_escaping_round_trip() {
        let odd = "/Users/zoë/Ça & <Co> \"quoted\" 'single' ]]> 日本/";
        let mut plan = spec(&[
            &format!("{odd}clawlink"),
            "up",
            "--profile",
            "work",
            "--config",
            &format!("{odd}c.toml"),
            "--url",
            "wss://h/<x>?a='b'&c=\"d\"",
        ]);
        plan.environment = vec![
            ("CLAWLINK_DATA_DIR".into(), format!("{odd}data")),
            ("CLAWLINK_RUNTIME_DIR".into(), "/run/ünïcödé & <run>".into()),
        ];
        plan.working_directory = Some(odd.trim_end_matches('/').to_owned());
        let text = assert_round_trip(&plan, "dev.clawlink.work-2", &format!("{odd}work.log"));
        assert!(text.contains("zoë") && text.contains("日本"), "{text}");
        assert!(!text.contains("<Co>") && !text.contains("& <"), "{text}");
    }

    #[test]
    fn what_is_not_a_plist_has_no_program_arguments() {
        assert!(plist_program_arguments("").is_empty());
        assert!(plist_program_arguments("<plist version=\"1.0\"><dict>").is_empty());
        // A plist without the key, and one whose root is not a dictionary.
        let mut xml = Vec::new();
        Value::Array(vec![Value::String("x".into())])
            .to_writer_xml(&mut xml)
            .unwrap();
        assert!(plist_program_arguments(std::str::from_utf8(&xml).unwrap()).is_empty());
        let no_key = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict><key>Label</key><string>x</string></dict></plist>";
        assert!(plist_program_arguments(no_key).is_empty());
    }
}
