//! Every program `scripts/demo` and the tests exec comes from a Debian
//! package the scripts install (or one every Debian 12 has: Essential or
//! Priority required, i.e. a `debootstrap --variant=minbase` system).
//!
//! * The tests: every `Command::new("x")` (and the helpers that take a
//!   program name first) in `integration/`, `cni-*/` and `cri-adapter/tests`
//!   names a program of [`TEST_PROGRAMS`], so a new exec without an install
//!   step fails here, in CI, even where the program is missing.
//! * The demo: every command at command position in `scripts/demo` (and
//!   `scripts/build-plugins`) is a shell builtin, a function of the script,
//!   one of our scripts, the Rust toolchain, or one of [`DEMO_PROGRAMS`].
//! * Each listed program is found on `PATH`, and `dpkg -S` on it (or on a
//!   link it resolves through) names a package of the script's
//!   `scripts/ensure-packages` line, or an Essential/required one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use integration::{workspace_root, PATH};

/// Programs the tests exec on the host, directly or through a part under
/// test (the bridge runs the firewall tools, containerd runs runc and its
/// shim, the CRI tests build the pause binary with gcc).
const TEST_PROGRAMS: &[&str] = &[
    "ip",
    "ping",
    "iptables",
    "iptables-save",
    "iptables-restore",
    "nft",
    "nsenter",
    "unshare",
    "prlimit",
    "setpriv",
    "mount",
    "umount",
    "mkfifo",
    "sha512sum",
    "timeout",
    "cat",
    "sh",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "gcc",
    "cc",
    "/usr/bin/git",
    "/bin/busybox",
    "nix-instantiate",
    "protoc",
    "dpkg",
    "dpkg-query",
    "/usr/lib/cni/loopback",
    "/usr/lib/cni/bridge",
    "/usr/lib/cni/host-local",
    "/usr/lib/cni/portmap",
    "busybox",
    "ip6tables",
    "ldd",
    "apt-cache",
    "apt-get",
    "dpkg-deb",
    "xz",
    "conntrack",
    "strace",
    "qemu-system-x86_64",
    "awk",
    "nm",
];

/// Programs the tests exec that our own Debian package installs (the
/// deb_install test puts them there).
const OUR_PACKAGE: &[&str] = &["/usr/bin/cri-adapter"];

/// Programs `scripts/demo`, `scripts/build-plugins` and its linker
/// `scripts/link-ordered` exec (`cc`: the linker rustc calls; `nm`, `awk`:
/// the symbol ordering; the `*-restore` tools: the bridge's masquerade and
/// portmap's rules; `socat`: the pod's TCP server and its client).
const DEMO_PROGRAMS: &[&str] = &[
    "ip",
    "ping",
    "iptables-save",
    "iptables-restore",
    "ip6tables-save",
    "ip6tables-restore",
    "socat",
    "env",
    "id",
    "mktemp",
    "rm",
    "find",
    "grep",
    "sed",
    "cat",
    "dirname",
    "dpkg-query",
    "apt-get",
    "cc",
    "cp",
    "ln",
    "mkdir",
    "mv",
    "nm",
    "awk",
];

/// Files (not programs) the demo needs: the static C library for
/// `+crt-static`.
const DEMO_FILES: &[&str] = &["libc.a"];

/// Commands the demo may name that are no Debian programs.
const SHELL_WORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "until", "case",
    "esac", "function", "local", "declare", "read", "echo", "printf", "return", "exit", "trap",
    "set", "cd", "export", "command", "shift", "eval", "exec", "true", "false", "test", "[", "[[",
    "]]", "]", "wait", "kill", "cargo", "rustc", "pwd", "readonly", "unset", "break", "continue",
];

fn script(name: &str) -> String {
    let p = workspace_root().join("scripts").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The packages named on the script's `scripts/ensure-packages` lines.
fn installed_by(name: &str) -> BTreeSet<String> {
    let text = script(name);
    let mut pkgs = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let Some((_, rest)) = line.split_once("scripts/ensure-packages ") else {
            continue;
        };
        pkgs.extend(
            rest.split_whitespace()
                .take_while(|w| {
                    w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c))
                })
                .map(str::to_string),
        );
    }
    assert!(!pkgs.is_empty(), "scripts/{name} installs no packages");
    pkgs
}

/// `name` on the tests' PATH (or as it is, when absolute).
fn which(name: &str) -> Option<PathBuf> {
    if name.starts_with('/') {
        return Path::new(name).exists().then(|| PathBuf::from(name));
    }
    std::env::split_paths(PATH)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The path and the paths it resolves through, one symlink at a time
/// (alternatives: /usr/bin/cc → /etc/alternatives/cc → /usr/bin/gcc → …).
fn link_chain(p: &Path) -> Vec<PathBuf> {
    let mut chain = vec![p.to_path_buf()];
    let mut cur = p.to_path_buf();
    while let Ok(t) = std::fs::read_link(&cur) {
        let next = match cur.parent() {
            Some(dir) if t.is_relative() => dir.join(t),
            _ => t,
        };
        if chain.contains(&next) || chain.len() > 16 {
            break;
        }
        chain.push(next.clone());
        cur = next;
    }
    if let Ok(c) = std::fs::canonicalize(p) {
        chain.push(c);
    }
    chain
}

/// The packages that own `p` or a link on its way (`dpkg -S`; with merged
/// /usr, dpkg knows many programs by their /bin or /sbin path).
fn owners(p: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for hop in link_chain(p) {
        let s = hop.to_string_lossy().into_owned();
        let mut variants = vec![s.clone()];
        if let Some(rest) = s.strip_prefix("/usr") {
            variants.push(rest.to_string());
        }
        for v in variants {
            let out = Command::new("dpkg")
                .env("PATH", PATH)
                .args(["-S", &v])
                .output()
                .expect("dpkg -S (this check needs Debian's dpkg)");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                // `pkg[:arch][, pkg2]: /path`
                if let Some((pkgs, _)) = line.split_once(": ") {
                    for pkg in pkgs.split(", ") {
                        let name = pkg.split(':').next().unwrap_or(pkg).trim();
                        if !name.is_empty() && !name.starts_with("diversion") {
                            found.insert(name.to_string());
                        }
                    }
                }
            }
        }
    }
    found
}

/// Whether every Debian 12 system has `pkg` (Essential, or Priority required).
fn in_minbase(pkg: &str) -> bool {
    let out = Command::new("dpkg-query")
        .env("PATH", PATH)
        .args(["-W", "-f", "${Essential} ${Priority}", pkg])
        .output()
        .expect("dpkg-query");
    let s = String::from_utf8_lossy(&out.stdout);
    s.starts_with("yes ") || s.ends_with(" required")
}

/// Checks every program of `programs` against `pkgs`; returns the problems.
fn check_programs(programs: &[&str], pkgs: &BTreeSet<String>, who: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for prog in programs {
        let Some(path) = which(prog) else {
            bad.push(format!("{who}: {prog} is not on PATH ({PATH})"));
            continue;
        };
        let own = owners(&path);
        if own.is_empty() {
            bad.push(format!(
                "{who}: no Debian package owns {} (dpkg -S)",
                path.display()
            ));
        } else if !own.iter().any(|o| pkgs.contains(o) || in_minbase(o)) {
            bad.push(format!(
                "{who}: {prog} ({}) comes from {own:?}, which scripts/{who} does not install ({pkgs:?}) and minbase lacks",
                path.display()
            ));
        }
    }
    bad
}

#[test]
fn test_programs_come_from_installed_packages() {
    let bad = check_programs(TEST_PROGRAMS, &installed_by("test"), "test");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn demo_programs_come_from_its_packages() {
    let pkgs = installed_by("demo");
    let mut bad = check_programs(DEMO_PROGRAMS, &pkgs, "demo");
    for file in DEMO_FILES {
        let hits: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(file))
            .filter(|p| p.is_file())
            .collect();
        match hits.first() {
            None => bad.push(format!("demo: {file} not found under /usr/lib/*/")),
            Some(p) => {
                let own = owners(p);
                if !own.iter().any(|o| pkgs.contains(o)) {
                    bad.push(format!(
                        "demo: {} comes from {own:?}, not installed by scripts/demo",
                        p.display()
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// String literals that follow `pattern` in `text` (whitespace collapsed).
fn literals_after(text: &str, pattern: &str) -> Vec<String> {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = Vec::new();
    let mut rest = flat.as_str();
    while let Some(i) = rest.find(pattern) {
        rest = &rest[i + pattern.len()..];
        if let Some(end) = rest.find('"') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// How programs are named in the test code: `Command::new("x")` and the
/// helpers whose first argument is the program.
const EXEC_PATTERNS: &[&str] = &[
    "Command::new(\"",
    "tool(&[\"",
    "sh(&[\"",
    ".run(&[\"",
    "exec(&[\"",
    "run_ok(\"",
    "start_under(&[\"",
    "start_under( &[\"",
    "run(\"",
    " sh(\"",
    "(sh(\"",
];

#[test]
fn every_exec_in_the_tests_is_listed() {
    let root = workspace_root();
    let mut files = Vec::new();
    for d in [
        "integration/src",
        "integration/tests",
        "cni-bridge/src",
        "cni-spec/src",
        "cni-host-local/tests",
        "cri-adapter/tests",
    ] {
        rust_files(&root.join(d), &mut files);
    }
    let me = Path::new(file!())
        .file_name()
        .map(|f| f.to_os_string())
        .unwrap_or_default();
    let mut unlisted = BTreeSet::new();
    let mut seen = 0;
    for f in files
        .iter()
        .filter(|f| f.file_name() != Some(me.as_os_str()))
    {
        let text = std::fs::read_to_string(f).expect("read source");
        for pat in EXEC_PATTERNS {
            for lit in literals_after(&text, pat) {
                seen += 1;
                if !TEST_PROGRAMS.contains(&lit.as_str()) && !OUR_PACKAGE.contains(&lit.as_str()) {
                    unlisted.insert(format!("{}: {lit}", f.display()));
                }
            }
        }
    }
    assert!(seen > 20, "found only {seen} execs: the patterns are stale");
    assert!(
        unlisted.is_empty(),
        "programs exec'd but not in TEST_PROGRAMS (add them there and their package to scripts/test):\n{}",
        unlisted.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The words at command position in a bash script (heuristic: the first
/// word after a line start, `|`, `;`, `&&`, `||`, `$(`, `(`, `{`, `!`,
/// `then`/`do`/`else`, past `VAR=x` assignments and `ip netns exec NS`,
/// `env -i VAR=x`, `command -v`; quoted text and here-documents skipped).
fn command_words(text: &str) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    let mut heredoc: Option<String> = None;
    for raw in text.lines() {
        if let Some(end) = &heredoc {
            if raw.trim() == end {
                heredoc = None;
            }
            continue;
        }
        if let Some(i) = raw.find("<<") {
            let tag: String = raw[i + 2..]
                .trim_start_matches(['-', '\'', '"'])
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !tag.is_empty() {
                heredoc = Some(tag);
            }
        }
        let line = strip_quotes_and_comment(raw);
        let spaced = ["&&", "||", "|", ";", "$(", "(", "`"]
            .iter()
            .fold(line, |l, s| l.replace(s, " \u{1} "))
            .replace(')', " \u{2} ");
        let mut at_command = true;
        let mut toks = spaced.split_whitespace().peekable();
        while let Some(t) = toks.next() {
            if t == "\u{1}" || t == "\u{2}" {
                // After `)` comes no command (`$(…) -eq 0`).
                at_command = t == "\u{1}";
                continue;
            }
            if !at_command {
                continue;
            }
            if t.contains('=') && !t.starts_with('=') || t.starts_with('$') {
                // An assignment, or a command held in a variable.
                if t.starts_with('$') {
                    at_command = false;
                }
                continue;
            }
            match t {
                "then" | "do" | "else" | "elif" | "if" | "while" | "until" | "time" | "!" | "{"
                | "}" => continue,
                _ => {}
            }
            words.insert(t.to_string());
            at_command = false;
            match t {
                "env" => {
                    while toks
                        .peek()
                        .is_some_and(|n| n.starts_with('-') || n.contains('='))
                    {
                        toks.next();
                    }
                    at_command = true;
                }
                "command" => {
                    toks.next();
                }
                "ip" if toks.peek() == Some(&"netns") => {
                    toks.next();
                    if toks.peek() == Some(&"exec") {
                        toks.next();
                        toks.next();
                        at_command = true;
                    }
                }
                _ => {}
            }
        }
    }
    words
}

/// The line without `'…'` strings, `"…"` strings that hold no `$(`, and a
/// trailing comment.
fn strip_quotes_and_comment(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                }
                out.push_str(" x ");
            }
            '"' => {
                let mut s = String::new();
                for d in chars.by_ref() {
                    if d == '"' {
                        break;
                    }
                    s.push(d);
                }
                out.push(' ');
                if s.contains("$(") {
                    out.push_str(&s);
                } else {
                    out.push('x');
                }
                out.push(' ');
            }
            '#' if prev.is_whitespace() => break,
            _ => out.push(c),
        }
        prev = c;
    }
    out
}

fn functions(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim_start().split_once("() {"))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

#[test]
fn every_demo_command_is_listed() {
    let mut unlisted = BTreeSet::new();
    for name in ["demo", "build-plugins", "link-ordered"] {
        let text = script(name);
        let fns = functions(&text);
        let words = command_words(&text);
        assert!(
            words.contains("set") && words.contains("cd"),
            "scripts/{name}: parsed no commands: {words:?}"
        );
        for w in words {
            let ours = w.starts_with("scripts/") || w.starts_with("\"$") || w == "x";
            if !(ours
                || fns.contains(&w)
                || SHELL_WORDS.contains(&w.as_str())
                || DEMO_PROGRAMS.contains(&w.as_str()))
            {
                unlisted.insert(format!("scripts/{name}: {w}"));
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "commands not in DEMO_PROGRAMS (add them there and their package to scripts/demo):\n{}",
        unlisted.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_command_scan_finds_what_it_should() {
    let w = command_words(
        "set -e\nx=$(python3 -c 'import json')\nip netns exec n ping -c1 a | sed s/a/b/\n\
         echo \"(not a command)\" && env -i A=1 awk 1 # tr\ncat <<EOF\nperl\nEOF\n",
    );
    for want in ["python3", "ip", "ping", "sed", "awk", "cat", "set", "echo"] {
        assert!(w.contains(want), "{want} missing from {w:?}");
    }
    for not in ["perl", "tr", "not", "a", "import", "-c1"] {
        assert!(!w.contains(not), "{not} wrongly in {w:?}");
    }
}
