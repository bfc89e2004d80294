//! The plugin skeleton: one process invocation in, one reply out.
//!
//! [`dispatch`] is pure over its inputs (an environment lookup and stdin) so
//! unit tests can drive every path; [`run`] is the only function that touches
//! the real process environment, stdin, stdout and exit status. The order of
//! checks follows the reference skel: required variables, then stdin, then
//! the network name, the container ID and ifname, then the version.

use crate::args::go_quote;
use crate::attachments::{AttachmentsError, ValidAttachments};
use crate::env::{validate_container_id, validate_ifname, validate_network_name, Command};
use crate::error::{CniError, ErrorCode};
use crate::json::Obj;
use crate::result::CniResult;
use crate::version::{parse_triple, Version, SUPPORTED};
use serde_json::{Map, Value};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

/// What a plugin says about itself.
#[derive(Debug, Clone, Copy)]
pub struct PluginInfo {
    /// The plugin type, e.g. `host-local`.
    pub name: &'static str,
    /// Our release version.
    pub version: &'static str,
}

/// One invocation, validated.
#[derive(Debug, Clone)]
pub struct Request {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for GC and STATUS).
    pub container_id: String,
    /// `CNI_NETNS` (may be empty on DEL).
    pub netns: String,
    /// `CNI_IFNAME` (empty for GC and STATUS).
    pub ifname: String,
    /// `CNI_ARGS`, unparsed: each plugin knows its own keys.
    pub args: String,
    /// `CNI_PATH`, split.
    pub path: Vec<PathBuf>,
    /// The exact stdin bytes, for delegation.
    pub stdin: Vec<u8>,
    /// The configuration's `cniVersion`.
    pub version: Version,
    /// The network name, validated: safe as a path component.
    pub name: String,
    /// The parsed configuration.
    pub config: Map<String, Value>,
}

impl Request {
    /// The configuration root as a typed view.
    pub fn conf(&self) -> Obj<'_> {
        Obj::new(&self.config, "")
    }

    /// GC's list of attachments to keep (see [`ValidAttachments`]). `None`
    /// when the configuration carries no list.
    ///
    /// # Errors
    /// A key or entry of the wrong type, or an entry without `containerID`.
    pub fn valid_attachments(&self) -> Result<Option<ValidAttachments>, AttachmentsError> {
        ValidAttachments::from_conf(self.conf())
    }
}

/// A CNI plugin: one method per command.
pub trait Plugin {
    /// ADD: attach and return the result.
    ///
    /// # Errors
    /// Any failure, as the reply to print.
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    /// DEL: detach; must succeed when there is nothing to do.
    ///
    /// # Errors
    /// Any failure, as the reply to print.
    fn del(&self, req: &Request) -> Result<(), CniError>;
    /// CHECK: verify the attachment.
    ///
    /// # Errors
    /// What is wrong with the attachment.
    fn check(&self, req: &Request) -> Result<(), CniError>;
    /// GC: release resources of attachments not in the valid list.
    ///
    /// # Errors
    /// Every failure met, after trying everything.
    fn gc(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
    /// STATUS: can ADD be served?
    ///
    /// # Errors
    /// Code 50 or 51 when it cannot.
    fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

/// What the process prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Exactly one JSON document, or nothing.
    pub stdout: Vec<u8>,
    /// Human-readable text.
    pub stderr: Vec<u8>,
    /// 0 on success, 1 on error.
    pub exit_code: u8,
}

const ENV_VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// Pretty-prints like the reference: 4-space indent, no trailing newline.
pub fn to_pretty(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing a Value into a Vec cannot fail.
    let _ = serde::Serialize::serialize(v, &mut ser);
    out
}

/// The `VERSION` reply.
pub fn version_reply() -> Value {
    let list: Vec<Value> = SUPPORTED.iter().map(|v| Value::from(v.as_str())).collect();
    let mut m = Map::new();
    m.insert("cniVersion".into(), Value::from(Version::LATEST.as_str()));
    m.insert("supportedVersions".into(), Value::Array(list));
    Value::Object(m)
}

fn about(info: &PluginInfo) -> Vec<u8> {
    let versions: Vec<&str> = SUPPORTED.iter().map(|v| v.as_str()).collect();
    format!(
        "CNI {} plugin (k8s-shims) version {}\nCNI protocol versions supported: {}\n",
        info.name,
        info.version,
        versions.join(", ")
    )
    .into_bytes()
}

fn error_reply(e: &CniError, version: &str) -> Reply {
    Reply {
        stdout: to_pretty(&e.to_json(version)),
        stderr: Vec::new(),
        exit_code: 1,
    }
}

/// Decides what one invocation prints. `env` looks up a variable; `stdin` is
/// read only when the command needs it.
pub fn dispatch<P: Plugin>(
    plugin: &P,
    info: &PluginInfo,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> Reply {
    let mut version_seen = Version::LATEST.as_str().to_string();
    match dispatch_inner(plugin, info, env, stdin, &mut version_seen) {
        Ok(reply) => reply,
        Err(e) => error_reply(&e, &version_seen),
    }
}

fn dispatch_inner<P: Plugin>(
    plugin: &P,
    info: &PluginInfo,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    version_seen: &mut String,
) -> Result<Reply, CniError> {
    let get = |k: &str| env(k).unwrap_or_default();
    let cmd_raw = get("CNI_COMMAND");
    let command = Command::parse(&cmd_raw);
    let missing: Vec<&str> = ENV_VARS
        .iter()
        .copied()
        .filter(|v| get(v).is_empty())
        .filter(|v| *v == "CNI_COMMAND" || command.is_some_and(|c| c.requires(v)))
        .collect();
    if !missing.is_empty() {
        if cmd_raw.is_empty() {
            return Ok(Reply {
                stdout: Vec::new(),
                stderr: about(info),
                exit_code: 0,
            });
        }
        return Err(CniError::new(
            ErrorCode::INVALID_ENV,
            format!("required env variables [{}] missing", missing.join(",")),
        ));
    }
    if command == Some(Command::Version) {
        return Ok(Reply {
            stdout: to_pretty(&version_reply()),
            stderr: Vec::new(),
            exit_code: 0,
        });
    }

    let mut raw = Vec::with_capacity(1024);
    stdin.read_to_end(&mut raw).map_err(|e| {
        CniError::new(
            ErrorCode::IO_FAILURE,
            format!("error reading from stdin: {e}"),
        )
    })?;
    let decode = |m: String| {
        CniError::new(
            ErrorCode::DECODING_FAILURE,
            format!("error unmarshall network config: {m}"),
        )
    };
    let root: Value = serde_json::from_slice(&raw).map_err(|e| decode(e.to_string()))?;
    let Value::Object(config) = root else {
        return Err(decode(format!(
            "expected a JSON object, found {}",
            crate::json::type_name(&root)
        )));
    };
    let conf = Obj::new(&config, "");
    let name = conf
        .str("name")
        .map_err(|e| decode(e.to_string()))?
        .unwrap_or_default()
        .to_string();
    let version_raw = conf
        .str("cniVersion")
        .map_err(|e| CniError::new(ErrorCode::DECODING_FAILURE, e.to_string()))?
        .unwrap_or_default();
    // A missing cniVersion means 0.1.0 (the spec's oldest form).
    let version_raw = if version_raw.is_empty() {
        "0.1.0"
    } else {
        version_raw
    };
    if Version::from_exact(version_raw).is_some() {
        *version_seen = version_raw.to_string();
    }
    validate_network_name(&name)?;

    let container_id = get("CNI_CONTAINERID");
    let ifname = get("CNI_IFNAME");
    let Some(command) = command else {
        return Err(CniError::new(
            ErrorCode::INVALID_ENV,
            format!("unknown CNI_COMMAND: {cmd_raw}"),
        ));
    };
    if command.requires("CNI_CONTAINERID") {
        validate_container_id(&container_id)?;
        validate_ifname(&ifname)?;
    }

    let minimum = match command {
        Command::Check => Some("0.4.0"),
        Command::Gc | Command::Status => Some("1.1.0"),
        _ => None,
    };
    if let Some(min) = minimum {
        let have =
            parse_triple(version_raw).map_err(|m| CniError::new(ErrorCode::DECODING_FAILURE, m))?;
        let need = parse_triple(min).map_err(|m| CniError::new(ErrorCode::INTERNAL, m))?;
        if have < need {
            return Err(CniError::new(
                ErrorCode::INCOMPATIBLE_VERSION,
                format!("config version does not allow {command}"),
            ));
        }
    }
    let version = Version::from_exact(version_raw).ok_or_else(|| {
        let list: Vec<String> = SUPPORTED.iter().map(|v| go_quote(v.as_str())).collect();
        CniError::new(ErrorCode::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(
            format!(
                "config is {}, plugin supports [{}]",
                go_quote(version_raw),
                list.join(" ")
            ),
        )
    })?;

    let path = get("CNI_PATH")
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    let req = Request {
        command,
        container_id,
        netns: get("CNI_NETNS"),
        ifname,
        args: get("CNI_ARGS"),
        path,
        stdin: raw,
        version,
        name,
        config,
    };
    let stdout = match command {
        Command::Add => {
            let result = plugin.add(&req)?;
            to_pretty(&result.encode(version)?)
        }
        Command::Del => {
            plugin.del(&req)?;
            Vec::new()
        }
        Command::Check => {
            plugin.check(&req)?;
            Vec::new()
        }
        Command::Gc => {
            plugin.gc(&req)?;
            Vec::new()
        }
        Command::Status => {
            plugin.status(&req)?;
            Vec::new()
        }
        Command::Version => to_pretty(&version_reply()),
    };
    Ok(Reply {
        stdout,
        stderr: Vec::new(),
        exit_code: 0,
    })
}

/// A plugin binary's `main`: `--help` and `--version` for people, otherwise
/// [`run`]. Returns the exit status (stdout is flushed).
pub fn main<P: Plugin>(plugin: &P, info: &PluginInfo, help: &str) -> u8 {
    if let Some(arg) = std::env::args().nth(1) {
        let text = match arg.as_str() {
            "--version" | "-V" => format!("{} (k8s-shims) {}\n", info.name, info.version),
            "--help" | "-h" => help.to_string(),
            other => {
                let _ = writeln!(
                    std::io::stderr(),
                    "{}: unexpected argument {other:?}; see --help",
                    info.name
                );
                return 2;
            }
        };
        let mut out = std::io::stdout().lock();
        return match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => 0,
            Err(_) => 1,
        };
    }
    run(plugin, info)
}

/// Runs a plugin as a process: reads the real environment and stdin, writes
/// the reply, and returns the exit status. A panic still prints a code-999
/// reply, so a runtime never sees empty stdout from a failed plugin.
pub fn run<P: Plugin>(plugin: &P, info: &PluginInfo) -> u8 {
    std::panic::set_hook(Box::new(|p| {
        let e = CniError::new(ErrorCode::INTERNAL, "plugin panicked").with_details(p.to_string());
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&to_pretty(&e.to_json(Version::LATEST.as_str())));
        let _ = out.flush();
        let _ = writeln!(std::io::stderr(), "{p}");
    }));
    let env = |k: &str| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
    let reply = dispatch(plugin, info, &env, &mut std::io::stdin().lock());
    let _ = std::io::stderr().write_all(&reply.stderr);
    if write_unbuffered(&std::io::stdout(), &reply.stdout).is_err() {
        return 1;
    }
    reply.exit_code
}

/// Writes `bytes` to `fd` with as few `write(2)`s as the kernel allows: the
/// reply in one, where `Stdout`'s line buffering makes two of it (all but
/// the closing brace, then that).
fn write_unbuffered(fd: &impl AsFd, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{IpConfig, Route};
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
    }

    impl Plugin for Fake {
        fn add(&self, req: &Request) -> Result<CniResult, CniError> {
            self.calls.lock().map(|mut c| c.push("ADD".into())).ok();
            if req.container_id == "fail" {
                return Err(CniError::new(ErrorCode::ADDRESS_UNAVAILABLE, "boom"));
            }
            Ok(CniResult {
                ips: vec![IpConfig {
                    interface: None,
                    address: crate::result::parse_cidr("10.0.0.2/24")
                        .map_err(|m| CniError::new(ErrorCode::INTERNAL, m))?,
                    gateway: None,
                }],
                routes: vec![],
                ..CniResult::default()
            })
        }
        fn del(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
    }

    const INFO: PluginInfo = PluginInfo {
        name: "fake",
        version: "0",
    };

    fn run_with(vars: &[(&str, &str)], stdin: &str) -> (Reply, Value) {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |k: &str| map.get(k).cloned();
        let reply = dispatch(&Fake::default(), &INFO, &env, &mut stdin.as_bytes());
        let v = serde_json::from_slice(&reply.stdout).unwrap_or(Value::Null);
        (reply, v)
    }

    fn add_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    }

    #[test]
    fn about_on_empty_command() {
        let (r, _) = run_with(&[], "");
        assert_eq!(r.exit_code, 0);
        assert!(r.stdout.is_empty());
        assert!(String::from_utf8_lossy(&r.stderr).contains("CNI fake plugin"));
    }

    #[test]
    fn version_ignores_stdin() {
        let (r, v) = run_with(&[("CNI_COMMAND", "VERSION")], "garbage");
        assert_eq!(r.exit_code, 0);
        assert_eq!(v["cniVersion"], json!("1.1.0"));
        assert_eq!(v["supportedVersions"].as_array().map(Vec::len), Some(7));
    }

    #[test]
    fn missing_env_named() {
        let (r, v) = run_with(&[("CNI_COMMAND", "ADD")], "{}");
        assert_eq!(r.exit_code, 1);
        assert_eq!(v["code"], json!(4));
        assert_eq!(
            v["msg"],
            json!("required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing")
        );
    }

    #[test]
    fn decode_and_name_errors() {
        let (_, v) = run_with(&add_env(), "{");
        assert_eq!(v["code"], json!(6));
        let (_, v) = run_with(&add_env(), "[]");
        assert_eq!(v["code"], json!(6));
        let (_, v) = run_with(&add_env(), r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(
            (v["code"].clone(), v["msg"].clone()),
            (json!(7), json!("missing network name"))
        );
        let (_, v) = run_with(&add_env(), r#"{"cniVersion":"1.0.0","name":"../x"}"#);
        assert_eq!(v["msg"], json!("invalid characters found in network name"));
        assert_eq!(v["details"], json!("../x"));
    }

    #[test]
    fn versions() {
        let (_, v) = run_with(&add_env(), r#"{"cniVersion":"9.9.9","name":"n"}"#);
        assert_eq!(v["code"], json!(1));
        assert_eq!(v["msg"], json!("incompatible CNI versions"));
        let mut env = add_env();
        env[0] = ("CNI_COMMAND", "CHECK");
        let (_, v) = run_with(&env, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(v["msg"], json!("config version does not allow CHECK"));
        let (_, v) = run_with(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
        );
        assert_eq!(v["msg"], json!("config version does not allow GC"));
        let (r, _) = run_with(
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")],
            r#"{"cniVersion":"1.1.0","name":"n"}"#,
        );
        assert_eq!(r.exit_code, 0);
    }

    #[test]
    fn add_prints_result_at_config_version() {
        let (r, v) = run_with(&add_env(), r#"{"cniVersion":"0.4.0","name":"n"}"#);
        assert_eq!(r.exit_code, 0, "{v}");
        assert_eq!(v["ips"][0]["version"], json!("4"));
        assert!(!r.stdout.ends_with(b"\n"));
        // No cniVersion: 0.1.0 shape.
        let (_, v) = run_with(&add_env(), r#"{"name":"n"}"#);
        assert_eq!(v["ip4"]["ip"], json!("10.0.0.2/24"));
        let _ = Route::new;
    }

    #[test]
    fn plugin_errors_carry_config_version() {
        let mut env = add_env();
        env[1] = ("CNI_CONTAINERID", "fail");
        let (r, v) = run_with(&env, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(r.exit_code, 1);
        assert_eq!(v, json!({"cniVersion":"0.3.1","code":100,"msg":"boom"}));
    }

    #[test]
    fn bad_identifiers() {
        let mut env = add_env();
        env[1] = ("CNI_CONTAINERID", "bad/id");
        let (_, v) = run_with(&env, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(v["code"], json!(4));
        let mut env = add_env();
        env[3] = ("CNI_IFNAME", "a-very-long-ifname");
        let (_, v) = run_with(&env, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(v["msg"], json!("interface name is too long"));
        let mut env = add_env();
        env[0] = ("CNI_COMMAND", "FROB");
        let (_, v) = run_with(&env, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(v["msg"], json!("unknown CNI_COMMAND: FROB"));
    }
}
