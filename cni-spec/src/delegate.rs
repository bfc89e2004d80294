//! Delegation: running another plugin found on `CNI_PATH` (how a main plugin
//! calls its IPAM plugin), with the caller's exact stdin bytes and its whole
//! environment, only `CNI_COMMAND` replaced (SPEC "Delegated plugins").
//!
//! A multi-call executable that carries several plugins registers them as
//! [`Builtin`]s: when the file `CNI_PATH` yields for a delegate is this very
//! executable, the delegate runs in-process (same environment, same stdin
//! bytes, its reply read exactly as an exec'd one's) and saves a process
//! start. Any other file (another implementation) is exec'd as always.

use crate::env::Command;
use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::skel::Reply;
use crate::skel::Request;
use crate::version::Version;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// A plugin compiled into this executable: given the environment lookup and
/// the stdin bytes, it returns what its process would print and exit with.
pub type Builtin = fn(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Reply;

static BUILTINS: OnceLock<&'static [(&'static str, Builtin)]> = OnceLock::new();

/// Registers the plugins this executable carries (once, at start).
pub fn register_builtins(list: &'static [(&'static str, Builtin)]) {
    let _ = BUILTINS.set(list);
}

/// The builtin to run for `plugin` when `binary` (found on `CNI_PATH`) is
/// this executable itself.
fn builtin_for(plugin: &str, binary: &Path) -> Option<Builtin> {
    let f = BUILTINS.get()?.iter().find(|(n, _)| *n == plugin)?.1;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let this = id(Path::new("/proc/self/exe"))?;
    (id(binary)? == this).then_some(f)
}

/// Runs a builtin as its exec'd process would run, with `CNI_COMMAND`
/// replaced.
fn run_builtin(f: Builtin, command: Command, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let env = |k: &str| {
        if k == "CNI_COMMAND" {
            Some(command.as_str().to_string())
        } else {
            std::env::var_os(k).map(|v| v.to_string_lossy().into_owned())
        }
    };
    let reply = f(&env, stdin);
    let status = format!("exit status {}", reply.exit_code);
    outcome(reply.exit_code == 0, &status, reply.stdout, &reply.stderr)
}

/// Finds `plugin` in `paths`: the first directory holding a regular file of
/// that name.
///
/// # Errors
/// An empty or path-like name, no directories, or no such file; the texts
/// are the reference's.
pub fn find_in_path(plugin: &str, paths: &[PathBuf]) -> Result<PathBuf, CniError> {
    let err = |m: String| CniError::new(ErrorCode::INTERNAL, m);
    if plugin.is_empty() {
        return Err(err("no plugin name provided".into()));
    }
    if plugin.contains('/') {
        return Err(err(format!("invalid plugin name: {plugin}")));
    }
    if paths.is_empty() {
        return Err(err("no paths provided".into()));
    }
    for dir in paths {
        let candidate = dir.join(plugin);
        if candidate.metadata().map(|m| m.is_file()).unwrap_or(false) {
            return Ok(candidate);
        }
    }
    let dirs: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(err(format!(
        "failed to find plugin {plugin:?} in path [{}]",
        dirs.join(" ")
    )))
}

/// Runs `binary` with `CNI_COMMAND=command` and `stdin`, returning its stdout
/// on success. Its stderr is copied to ours.
///
/// # Errors
/// The delegate's own error reply (code and texts kept), or a description of
/// how it failed without one.
pub fn exec_raw(binary: &Path, command: Command, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let err = |m: String| CniError::new(ErrorCode::INTERNAL, m);
    // "text file busy" happens when the binary is being replaced; the
    // reference tries 6 times, a second apart.
    let mut attempt = 0;
    let mut child = loop {
        attempt += 1;
        match Process::new(binary)
            .env("CNI_COMMAND", command.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(26) && attempt < 6 => {
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(err(format!("failed to exec {}: {e}", binary.display()))),
        }
    };
    if let Some(mut input) = child.stdin.take() {
        // A delegate that exits without reading stdin closes the pipe; its
        // exit status tells what happened.
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("failed to wait for {}: {e}", binary.display())))?;
    let status = match out.status.code() {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".to_string(),
    };
    outcome(out.status.success(), &status, out.stdout, &out.stderr)
}

/// Reads a delegate's outcome: its stdout on success, else its error reply
/// (code and texts kept) or a description of how it failed without one.
/// Its stderr is copied to ours.
fn outcome(
    success: bool,
    status: &str,
    stdout: Vec<u8>,
    stderr: &[u8],
) -> Result<Vec<u8>, CniError> {
    let err = |m: String| CniError::new(ErrorCode::INTERNAL, m);
    let _ = std::io::stderr().write_all(stderr);
    if success {
        return Ok(stdout);
    }
    if stdout.iter().all(u8::is_ascii_whitespace) {
        let stderr = String::from_utf8_lossy(stderr);
        return Err(err(if stderr.trim().is_empty() {
            format!("netplugin failed with no error message: {status}")
        } else {
            format!("netplugin failed: {:?}: {status}", stderr.as_ref())
        }));
    }
    match serde_json::from_slice(&stdout)
        .ok()
        .as_ref()
        .and_then(CniError::from_json)
    {
        Some(e) => Err(e),
        None => Err(err(format!(
            "netplugin failed but error parsing its diagnostic message {:?}",
            String::from_utf8_lossy(&stdout)
        ))),
    }
}

fn run(plugin: &str, command: Command, req: &Request) -> Result<Vec<u8>, CniError> {
    let binary = find_in_path(plugin, &req.path)?;
    match builtin_for(plugin, &binary) {
        Some(f) => run_builtin(f, command, &req.stdin),
        None => exec_raw(&binary, command, &req.stdin),
    }
}

/// Delegated ADD: the delegate's result, read at its own version (the
/// request's when it names none).
///
/// # Errors
/// The delegate's error, or an undecodable result (code 6).
pub fn add(plugin: &str, req: &Request) -> Result<(CniResult, Version), CniError> {
    let out = run(plugin, Command::Add, req)?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        CniError::new(
            ErrorCode::DECODING_FAILURE,
            format!("failed to decode result of {plugin}: {e}"),
        )
    })?;
    CniResult::decode(&v, req.version)
}

/// Delegated DEL, CHECK, GC or STATUS.
///
/// # Errors
/// The delegate's error.
pub fn call(plugin: &str, command: Command, req: &Request) -> Result<(), CniError> {
    run(plugin, command, req).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        let _ = std::fs::write(&p, format!("#!/bin/sh\n{body}\n"));
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
        p
    }

    #[test]
    fn find_rules() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let paths = vec![d.path().to_path_buf()];
        assert_eq!(
            find_in_path("", &paths).map_err(|e| e.msg),
            Err("no plugin name provided".into())
        );
        assert_eq!(
            find_in_path("a/b", &paths).map_err(|e| e.msg),
            Err("invalid plugin name: a/b".into())
        );
        assert_eq!(
            find_in_path("x", &[]).map_err(|e| e.msg),
            Err("no paths provided".into())
        );
        let msg = find_in_path("nonexistent-ipam", &paths)
            .err()
            .map(|e| e.msg);
        assert_eq!(
            msg,
            Some(format!(
                "failed to find plugin \"nonexistent-ipam\" in path [{}]",
                d.path().display()
            ))
        );
        script(d.path(), "ipam", "true");
        assert!(find_in_path("ipam", &paths).is_ok());
    }

    #[test]
    fn passes_stdin_and_command_and_errors() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let echo = script(d.path(), "echo", "printf '%s:' \"$CNI_COMMAND\"; cat");
        let out = exec_raw(&echo, Command::Del, b"{\"x\":1}").unwrap_or_default();
        assert_eq!(out, b"DEL:{\"x\":1}");
        let fail = script(
            d.path(),
            "fail",
            "echo '{\"code\":11,\"msg\":\"later\",\"details\":\"d\"}'; exit 1",
        );
        let e = exec_raw(&fail, Command::Add, b"").err();
        assert_eq!(
            e,
            Some(CniError::new(ErrorCode(11), "later").with_details("d"))
        );
        let quiet = script(d.path(), "quiet", "exit 3");
        let e = exec_raw(&quiet, Command::Add, b"").err().map(|e| e.msg);
        assert_eq!(
            e,
            Some("netplugin failed with no error message: exit status 3".into())
        );
        let garbage = script(d.path(), "garbage", "echo nope; exit 1");
        let e = exec_raw(&garbage, Command::Add, b"").err().map(|e| e.msg);
        assert!(e.is_some_and(|m| m.starts_with("netplugin failed but error parsing")));
    }
}
