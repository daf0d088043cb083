//! Resolves a target against `~/.ssh/config` (ssh2-config): HostName, User, Port, IdentityFile, IdentitiesOnly, IdentityAgent, ProxyJump, known-hosts files, keepalive, timeouts.
//!
//! Precedence follows OpenSSH: what the user typed (port, user) beats the config file, and
//! the profile's `identity_file` behaves like `ssh -i` with `IdentitiesOnly=yes` (only that
//! key). Keywords we do not honour (ProxyCommand, Match, …) are collected so `clawlink test`
//! can say which ones were ignored instead of silently behaving differently from `ssh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2_config::{HostParams, ParseRule, SshConfig};

use crate::target::SshTarget;

/// Everything needed to open one SSH connection, after the config file was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The host as typed (an alias or a name), for messages. Host keys are checked under
    /// `host_name`, as OpenSSH does.
    pub alias: String,
    /// The name or address to connect to.
    pub host_name: String,
    pub port: u16,
    pub user: String,
    /// Key files to try, in order.
    pub identity_files: Vec<PathBuf>,
    /// Only the identity files, no agent (`IdentitiesOnly yes` or an explicit identity).
    pub identities_only: bool,
    /// The agent socket: `IdentityAgent`, else `SSH_AUTH_SOCK`; `None` disables the agent.
    pub agent_socket: Option<PathBuf>,
    /// Hops to go through first (`ProxyJump`), outermost first.
    pub proxy_jump: Vec<SshTarget>,
    pub user_known_hosts: Vec<PathBuf>,
    pub global_known_hosts: Vec<PathBuf>,
    /// `StrictHostKeyChecking` from the config (for the `openssh` policy).
    pub strict_host_key_checking: Option<String>,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_count: Option<usize>,
    pub connect_timeout: Option<Duration>,
    /// Config keywords that applied to this host but that clawlink does not implement.
    pub ignored: Vec<String>,
}

/// What the resolution needs from the environment, injectable for tests.
#[derive(Debug, Clone)]
pub struct SshEnv {
    pub home: PathBuf,
    pub local_user: String,
    pub auth_sock: Option<PathBuf>,
}

impl SshEnv {
    /// `HOME`, `USER`/`LOGNAME`, `SSH_AUTH_SOCK` of this process.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Self {
            home: var("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/")),
            local_user: var("USER")
                .or_else(|| var("LOGNAME"))
                .and_then(|v| v.into_string().ok())
                .unwrap_or_else(|| "root".into()),
            auth_sock: var("SSH_AUTH_SOCK").map(PathBuf::from),
        }
    }

    /// Expands `~/` and `%d` (home), `%u` (local user), `%h`/`%p`/`%r` (host, port, remote user).
    fn expand(&self, raw: &str, host: &str, port: u16, user: &str) -> PathBuf {
        let home = self.home.display().to_string();
        let mut text = raw.to_owned();
        if let Some(rest) = text.strip_prefix("~/") {
            text = format!("{home}/{rest}");
        } else if text == "~" {
            text = home.clone();
        }
        let text = text
            .replace("%d", &home)
            .replace("%u", &self.local_user)
            .replace("%h", host)
            .replace("%p", &port.to_string())
            .replace("%r", user)
            .replace("%%", "%");
        PathBuf::from(text)
    }
}

/// Keywords we read from ssh2-config's "unsupported" list ourselves.
const HANDLED_EXTRA: &[&str] = &[
    "identitiesonly",
    "identityagent",
    "userknownhostsfile",
    "globalknownhostsfile",
    "serveralivecountmax",
    "stricthostkeychecking",
    // Harmless for an in-process client, or implied by what clawlink does anyway.
    "batchmode",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "exitonforwardfailure",
    "hashknownhosts",
    "loglevel",
    "forkafterauthentication",
    "requesttty",
    "updatehostkeys",
    "addressfamily",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "preferredauthentications",
    "checkhostip",
];

/// Keywords ssh2-config parses into fields that change what `ssh` would do, but that the
/// in-process client does not apply, when the config sets them for this host. (Setting one
/// to what clawlink does anyway, e.g. `ForwardAgent no`, changes nothing and is not listed.)
fn unapplied_native(params: &HostParams) -> Vec<&'static str> {
    let yes = |v: Option<bool>| v == Some(true);
    [
        (yes(params.add_keys_to_agent), "addkeystoagent"),
        (params.bind_address.is_some(), "bindaddress"),
        (params.bind_interface.is_some(), "bindinterface"),
        (
            !params.ca_signature_algorithms.is_default(),
            "casignaturealgorithms",
        ),
        (params.certificate_file.is_some(), "certificatefile"),
        (!params.ciphers.is_default(), "ciphers"),
        (yes(params.compression), "compression"),
        (params.connection_attempts.is_some(), "connectionattempts"),
        (yes(params.forward_agent), "forwardagent"),
        (
            !params.host_key_algorithms.is_default(),
            "hostkeyalgorithms",
        ),
        (!params.kex_algorithms.is_default(), "kexalgorithms"),
        (!params.mac.is_default(), "macs"),
        (
            !params.pubkey_accepted_algorithms.is_default(),
            "pubkeyacceptedalgorithms",
        ),
        (
            params.pubkey_authentication == Some(false),
            "pubkeyauthentication",
        ),
        (!params.remote_forward.is_empty(), "remoteforward"),
        (params.tcp_keep_alive == Some(false), "tcpkeepalive"),
    ]
    .into_iter()
    .filter_map(|(set, keyword)| set.then_some(keyword))
    .collect()
}

/// Reads the config file (if it exists) and resolves `target`.
pub fn resolve(
    target: &SshTarget,
    config_file: Option<&Path>,
    env: &SshEnv,
) -> Result<Resolved, String> {
    let default_file = env.home.join(".ssh/config");
    let file = config_file.map(Path::to_path_buf).unwrap_or(default_file);
    let config = if file.is_file() {
        let text =
            std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        // ssh2-config expands `~` itself; make it use our HOME, not the passwd entry.
        SshConfig::default()
            .home_dir(&env.home)
            .parse(
                &mut text.as_slice(),
                ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .map_err(|e| format!("cannot parse {}: {e}", file.display()))?
    } else {
        SshConfig::default()
    };
    let params = config.query(&target.host);
    let extra: HashMap<String, Vec<String>> = params
        .unsupported_fields
        .iter()
        .chain(params.ignored_fields.iter())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let first = |key: &str| extra.get(key).and_then(|v| v.first()).cloned();

    let host_name = params
        .host_name
        .clone()
        .unwrap_or_else(|| target.host.clone());
    let port = target.port.or(params.port).unwrap_or(22);
    let user = target
        .user
        .clone()
        .or_else(|| params.user.clone())
        .unwrap_or_else(|| env.local_user.clone());

    let identities_only = first("identitiesonly").is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    let identity_files = params
        .identity_file
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|p| env.expand(&p.display().to_string(), &host_name, port, &user))
        .collect();
    let agent_socket = match first("identityagent") {
        Some(v) if v.eq_ignore_ascii_case("none") => None,
        Some(v) if v == "SSH_AUTH_SOCK" => env.auth_sock.clone(),
        Some(v) => Some(env.expand(v.trim_start_matches('$'), &host_name, port, &user)),
        None => env.auth_sock.clone(),
    };
    let known = |key: &str, defaults: &[&str]| -> Vec<PathBuf> {
        match extra.get(key) {
            Some(files) => files
                .iter()
                .filter(|f| !f.eq_ignore_ascii_case("none"))
                .map(|f| env.expand(f, &host_name, port, &user))
                .collect(),
            None => defaults
                .iter()
                .map(|f| env.expand(f, &host_name, port, &user))
                .collect(),
        }
    };
    let user_known_hosts = known(
        "userknownhostsfile",
        &["~/.ssh/known_hosts", "~/.ssh/known_hosts2"],
    );
    let global_known_hosts = known(
        "globalknownhostsfile",
        &["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"],
    );
    let proxy_jump = match &params.proxy_jump {
        Some(hops) if !hops.iter().any(|h| h.eq_ignore_ascii_case("none")) => hops
            .iter()
            .map(|h| SshTarget::parse(h).map_err(|e| format!("ProxyJump {h:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let mut ignored: Vec<String> = extra
        .keys()
        .filter(|k| !HANDLED_EXTRA.contains(&k.as_str()))
        .cloned()
        .chain(unapplied_native(&params).into_iter().map(str::to_owned))
        .collect();
    ignored.sort();
    ignored.dedup();
    Ok(Resolved {
        alias: target.host.clone(),
        host_name,
        port,
        user,
        identity_files,
        identities_only,
        agent_socket,
        proxy_jump,
        user_known_hosts,
        global_known_hosts,
        strict_host_key_checking: first("stricthostkeychecking"),
        keepalive_interval: params.server_alive_interval,
        keepalive_count: first("serveralivecountmax").and_then(|v| v.parse().ok()),
        connect_timeout: params.connect_timeout,
        ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(home: &Path) -> SshEnv {
        SshEnv {
            home: home.to_path_buf(),
            local_user: "me".into(),
            auth_sock: Some("/run/agent.sock".into()),
        }
    }

    fn scratch(name: &str, config: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("clawlink-sshcfg-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".ssh")).unwrap();
        std::fs::write(dir.join(".ssh/config"), config).unwrap();
        dir
    }

    #[test]
    fn alias_fills_hostname_user_port_and_identity() {
        let home = scratch(
            "alias",
            "Host gw\n  HostName 127.0.0.1\n  User claw\n  Port 2222\n  IdentityFile ~/.ssh/gw_key\n  IdentitiesOnly yes\n  UserKnownHostsFile ~/.ssh/gw_hosts\n  ServerAliveInterval 5\n  ServerAliveCountMax 2\n  ProxyCommand nc %h %p\n",
        );
        let r = resolve(&SshTarget::parse("gw").unwrap(), None, &env(&home)).unwrap();
        assert_eq!(r.host_name, "127.0.0.1");
        assert_eq!((r.user.as_str(), r.port), ("claw", 2222));
        assert_eq!(r.identity_files, vec![home.join(".ssh/gw_key")]);
        assert!(r.identities_only);
        assert_eq!(r.user_known_hosts, vec![home.join(".ssh/gw_hosts")]);
        assert_eq!(r.keepalive_interval, Some(Duration::from_secs(5)));
        assert_eq!(r.keepalive_count, Some(2));
        assert_eq!(r.ignored, vec!["proxycommand".to_string()]);
        assert_eq!(r.agent_socket, Some(PathBuf::from("/run/agent.sock")));
    }

    /// Every keyword that would make `ssh` behave differently is reported, whether
    /// ssh2-config parses it into a field or leaves it unsupported.
    #[test]
    fn every_behaviour_changing_keyword_is_reported_as_ignored() {
        let home = scratch(
            "ignored",
            "Host gw\n  ForwardAgent yes\n  Compression yes\n  LocalForward 9999 127.0.0.1:1\n  Ciphers aes256-ctr\n  RemoteCommand echo hi\n  RemoteForward 9998 127.0.0.1:2\n  ProxyCommand nc %h %p\n  BatchMode yes\n  User claw\n",
        );
        let r = resolve(&SshTarget::parse("gw").unwrap(), None, &env(&home)).unwrap();
        assert_eq!(
            r.ignored,
            [
                "ciphers",
                "compression",
                "forwardagent",
                "localforward",
                "proxycommand",
                "remotecommand",
                "remoteforward"
            ]
        );
        // Settings equal to what clawlink does anyway are not noise.
        let home = scratch(
            "ignored-off",
            "Host gw\n  ForwardAgent no\n  Compression no\n",
        );
        let r = resolve(&SshTarget::parse("gw").unwrap(), None, &env(&home)).unwrap();
        assert!(r.ignored.is_empty(), "{:?}", r.ignored);
    }

    #[test]
    fn typed_user_and_port_beat_the_config() {
        let home = scratch(
            "typed",
            "Host gw\n  User claw\n  Port 2222\n  IdentityAgent none\n",
        );
        let r = resolve(&SshTarget::parse("root@gw:22").unwrap(), None, &env(&home)).unwrap();
        assert_eq!(
            (r.user.as_str(), r.port, r.host_name.as_str()),
            ("root", 22, "gw")
        );
        assert_eq!(r.agent_socket, None);
    }

    #[test]
    fn no_config_means_plain_defaults() {
        let home =
            std::env::temp_dir().join(format!("clawlink-sshcfg-none-{}", std::process::id()));
        let r = resolve(
            &SshTarget::parse("host.example").unwrap(),
            None,
            &env(&home),
        )
        .unwrap();
        assert_eq!((r.user.as_str(), r.port), ("me", 22));
        assert!(r.identity_files.is_empty());
        assert_eq!(r.user_known_hosts[0], home.join(".ssh/known_hosts"));
        assert_eq!(
            r.global_known_hosts[0],
            PathBuf::from("/etc/ssh/ssh_known_hosts")
        );
        assert!(r.proxy_jump.is_empty());
    }

    #[test]
    fn proxy_jump_hops_are_parsed() {
        let home = scratch(
            "jump",
            "Host inner\n  ProxyJump bastion@jump.example:2200\n",
        );
        let r = resolve(&SshTarget::parse("inner").unwrap(), None, &env(&home)).unwrap();
        assert_eq!(
            r.proxy_jump,
            vec![SshTarget::parse("bastion@jump.example:2200").unwrap()]
        );
    }
}
