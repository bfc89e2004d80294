//! A Linux initramfs built in memory: a gzip'd `newc` cpio archive (the
//! format the kernel unpacks into its root filesystem, see the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Host programs are copied with the shared libraries `ldd` names for them
//! and the dynamic loader, at the same paths, so a dynamically linked tool
//! (iproute2's `ip`/`bridge`, Debian's Go plugins) runs in the guest as it
//! does on the host.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One archive member.
#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// The members of an initramfs, keyed by absolute path (parents are added
/// as directories automatically).
#[derive(Debug, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(path: &str) -> String {
        path.trim_start_matches('/').to_string()
    }

    fn parents(&mut self, path: &str) {
        let p = Path::new(path);
        for a in p.ancestors().skip(1) {
            let s = a.to_string_lossy();
            if !s.is_empty() && s != "/" {
                self.entries.entry(Self::key(&s)).or_insert(Entry::Dir);
            }
        }
    }

    /// A directory.
    pub fn dir(&mut self, path: &str) {
        self.parents(path);
        self.entries.insert(Self::key(path), Entry::Dir);
    }

    /// A regular file with `data` and permission bits `mode`.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.parents(path);
        self.entries
            .insert(Self::key(path), Entry::File { data, mode });
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entries
            .insert(Self::key(path), Entry::Symlink(target.to_string()));
    }

    /// A character device node (`/dev/console` must exist before `/init`
    /// runs, or init has no standard streams).
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.parents(path);
        self.entries
            .insert(Self::key(path), Entry::CharDev { major, minor });
    }

    /// Copies the host file `src` to `path` (mode 0755).
    pub fn host_file(&mut self, path: &str, src: &Path) -> Result<(), String> {
        let data = std::fs::read(src).map_err(|e| format!("read {}: {e}", src.display()))?;
        self.file(path, data, 0o755);
        Ok(())
    }

    /// Copies the host program `src` to `path`, plus every library `ldd`
    /// lists for it and its loader at their host paths. A static program
    /// is copied alone.
    pub fn host_program(&mut self, path: &str, src: &Path) -> Result<(), String> {
        self.host_file(path, src)?;
        for lib in shared_libraries(src)? {
            let key = lib.to_string_lossy().into_owned();
            if !self.entries.contains_key(&Self::key(&key)) {
                self.host_file(&key, &lib)?;
            }
        }
        Ok(())
    }

    /// The archive, `newc` cpio, uncompressed.
    pub fn cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (name, e)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match e {
                Entry::Dir => (0o040_755, &[], (0, 0)),
                Entry::File { data, mode } => (0o100_000 | mode, data, (0, 0)),
                Entry::Symlink(t) => (0o120_777, t.as_bytes(), (0, 0)),
                Entry::CharDev { major, minor } => (0o020_600, &[], (*major, *minor)),
            };
            let nlink = if matches!(e, Entry::Dir) { 2 } else { 1 };
            header(&mut out, ino, mode, nlink, data.len(), rdev, name);
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 1, 0, (0, 0), "TRAILER!!!");
        out
    }

    /// The archive, gzip'd (what `-initrd` takes).
    pub fn cpio_gz(&self) -> Result<Vec<u8>, String> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&self.cpio())
            .and_then(|()| gz.finish())
            .map_err(|e| format!("gzip: {e}"))
    }
}

/// One `newc` header plus the NUL-terminated name, padded to 4 bytes.
fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(size).unwrap_or(u32::MAX),
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// The absolute paths of the libraries and loader `ldd` prints for a
/// dynamically linked program; empty for a static one.
pub fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // glibc's ldd exits 1 with "not a dynamic executable" for static ones.
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(format!("ldd {}: {}{err}", program.display(), text));
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("statically linked") {
            return Ok(Vec::new());
        }
        if line.contains("=> not found") {
            return Err(format!("ldd {}: {line}", program.display()));
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`; `linux-vdso.so.1` has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut i = Initramfs::new();
        i.file("/bin/x", b"abc".to_vec(), 0o755);
        let a = i.cpio();
        // "bin" directory first, then "bin/x", then the trailer.
        assert!(a.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&a);
        let bin = text.find("bin\0").expect("bin dir");
        let x = text.find("bin/x\0").expect("bin/x");
        assert!(bin < x);
        assert!(text.contains("TRAILER!!!\0"));
        assert_eq!(a.len() % 4, 0);
        // bin/x: mode 100755, size 3.
        let h = &text[x - 110..x];
        assert_eq!(&h[14..22], "000081ed");
        assert_eq!(&h[54..62], "00000003");
    }

    #[test]
    fn static_and_dynamic_programs() {
        // /bin/sh is dynamically linked on Debian: it needs at least libc.
        let libs = shared_libraries(Path::new("/bin/sh")).expect("ldd /bin/sh");
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
    }
}
