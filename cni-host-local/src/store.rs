//! The on-disk store, byte-compatible with the reference's:
//!
//! ```text
//! <dataDir>/<network>/lock                 flock(2) target
//! <dataDir>/<network>/<ip>                 "<containerID>\r\n<ifname>" (legacy: "<containerID>")
//! <dataDir>/<network>/last_reserved_ip.<N> the round-robin cursor of range set N
//! ```
//!
//! so the reference plugin and ours can share a dataDir, even at once: both
//! take the same flock before touching the directory, and a reservation is
//! won by creating its file exclusively. Differences, all invisible to the
//! reference:
//! - a [`Store`] holds the lock for the whole command, not per range set;
//! - a reservation file appears complete or not at all: its content is
//!   written to an anonymous `O_TMPFILE` inode first and then linked under
//!   the address's name (`link` fails if the name exists, like `O_EXCL`); a
//!   killed process leaves no empty or half-written file (plugins#498);
//! - `.attachment.<id>:<ifname>` indexes an attachment of ours: it is one
//!   more hard link of the attachment's reservation inode (so it costs no
//!   inode, reads like a reservation, and the reference's DEL removes it with
//!   the rest), and the inode's `user.k8s-shims.ips` xattr lists the
//!   addresses. DEL and the duplicate check use it instead of reading every
//!   reservation (the reference reads them all); an address counts only when
//!   its file is the same inode. Without the xattr (a filesystem without
//!   user xattrs) the directory listing's inode numbers find them.

use crate::config::StoreLocation;
use crate::error::HostLocalError;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag, AT_FDCWD};
use nix::unistd::linkat;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno as RxErrno;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

type Result<T, E = HostLocalError> = std::result::Result<T, E>;

/// Prefix of our attachment index files.
const ATTACHMENT_PREFIX: &str = ".attachment.";
/// Prefix of temporary files, `.tmp.<pid>.<n>`: only used where the
/// filesystem has no `O_TMPFILE`; a file whose process is gone is a leftover.
const TMP_PREFIX: &str = ".tmp.";
/// Largest reservation file we read; real ones are well under 300 bytes.
const MAX_RESERVATION_LEN: u64 = 4096;
/// The xattr of a reservation inode listing the attachment's addresses.
const IPS_XATTR: &str = "user.k8s-shims.ips";
/// Set once `linkat(AT_EMPTY_PATH)` was refused (no CAP_DAC_READ_SEARCH).
static NO_EMPTY_PATH_LINK: AtomicBool = AtomicBool::new(false);

/// The text of an OS error the way the reference prints it (`no such file or
/// directory`).
pub fn os_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => cni_spec::error::errno_text(n),
        None => e.to_string(),
    }
}

/// The content identifying an attachment in a reservation file.
pub fn owner_text(container_id: &str, ifname: &str) -> String {
    format!("{}\r\n{}", container_id.trim(), ifname)
}

/// Who holds a reservation, read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// `<id>\r\n<ifname>`.
    Attachment {
        /// Container ID.
        id: String,
        /// Interface name.
        ifname: String,
    },
    /// A legacy file holding only the container ID; it matches every ifname.
    Legacy(String),
    /// An empty file (left by a killed reference plugin): no owner.
    Nobody,
    /// Not a regular file (a directory, symlink, FIFO...): neither plugin
    /// wrote it, so it is not read, not released, and its address stays
    /// taken.
    Foreign,
}

impl Owner {
    /// Parses whitespace-trimmed file content, as the reference compares it.
    pub fn parse(content: &str) -> Owner {
        let t = content.trim();
        if t.is_empty() {
            return Owner::Nobody;
        }
        match t.split_once("\r\n") {
            Some((id, ifname)) => Owner::Attachment {
                id: id.to_string(),
                ifname: ifname.to_string(),
            },
            None => Owner::Legacy(t.to_string()),
        }
    }
}

/// A reservation file's content, ready to be linked under address names.
#[derive(Debug)]
pub struct OwnerFile {
    file: File,
    /// Named fallback when the filesystem has no `O_TMPFILE`.
    named: Option<PathBuf>,
}

impl OwnerFile {
    /// Writes (in `dir`, before any lock is taken) `<id>\r\n<ifname>` to a file not yet visible under any address.
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn create(dir: &Path, container_id: &str, ifname: &str) -> Result<OwnerFile> {
        let content = owner_text(container_id, ifname);
        let anon = OpenOptions::new()
            .write(true)
            .mode(0o600)
            .custom_flags(OFlag::O_TMPFILE.bits())
            .open(dir);
        let (mut file, named) = match anon {
            Ok(f) => (f, None),
            // Filesystems without O_TMPFILE: a named temporary file.
            Err(_) => {
                let p = dir.join(tmp_name());
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&p)
                    .map_err(|e| HostLocalError::io(format!("create {}", p.display()), e))?;
                (f, Some(p))
            }
        };
        file.write_all(content.as_bytes())
            .map_err(|e| HostLocalError::io(format!("write {}", dir.display()), e))?;
        Ok(OwnerFile { file, named })
    }
}

/// Creates a store directory (mode 0755) and its parents.
///
/// # Errors
/// The directory cannot be created.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    // The usual case, a store that exists: one stat and no mkdir, which
    // locks the parent directory even when the name is taken (concurrent
    // ADDs queued on it). A symlink goes the long way and is refused by
    // [`Store::lock`].
    if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| HostLocalError::io(format!("mkdir {}", dir.display()), e))
}

/// One network's store, locked for as long as the value lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// `None` only on a read-only filesystem without a lock file, where no
    /// writer can exist.
    _lock: Option<Flock<File>>,
}

fn tmp_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{TMP_PREFIX}{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Lists `ips` in the owner inode's xattr. Best effort: without it,
/// [`Store::indexed`] falls back to the directory listing.
fn set_ips_xattr(owner: &OwnerFile, ips: &[IpAddr]) {
    let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
    let _ = rustix::fs::fsetxattr(
        &owner.file,
        IPS_XATTR,
        list.join(",").as_bytes(),
        rustix::fs::XattrFlags::empty(),
    );
}

/// `flags` as the raw bits `OpenOptionsExt::custom_flags` takes.
fn libc_flag(flags: OFlags) -> i32 {
    flags.bits() as i32
}

fn symlink_error(path: &Path) -> HostLocalError {
    HostLocalError::io(
        format!(
            "open {}: is a symbolic link, which the store never follows",
            path.display()
        ),
        std::io::Error::from_raw_os_error(Errno::ELOOP as i32),
    )
}

/// Refuses a network directory that is a symlink.
fn refuse_symlink(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(symlink_error(dir)),
        Ok(_) => Ok(()),
        Err(e) => Err(HostLocalError::io(format!("stat {}", dir.display()), e)),
    }
}

impl Store {
    /// Opens the store, creating its directory when `create` is set, and
    /// takes the lock. Returns `None` when the directory does not exist and
    /// `create` is not set (nothing to release or check).
    ///
    /// # Errors
    /// The directory or lock file cannot be created or locked.
    pub fn open(loc: &StoreLocation, create: bool) -> Result<Option<Store>> {
        let dir = loc.data_dir.join(&loc.network);
        if create {
            ensure_dir(&dir)?;
        } else if !dir.is_dir() {
            return Ok(None);
        }
        Store::lock(dir).map(Some)
    }

    /// Takes the lock of an existing store directory, waiting for it.
    ///
    /// The lock file is opened read-only (flock needs no more, and a
    /// read-only store can still be checked) and never through a symlink: a
    /// link could point the reference's lock and ours at different files.
    ///
    /// # Errors
    /// The network directory or the lock file is a symlink, or the lock
    /// file cannot be created or locked.
    pub fn lock(dir: PathBuf) -> Result<Store> {
        refuse_symlink(&dir)?;
        let lock_path = dir.join("lock");
        let flags = OFlags::RDONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut file = match rustix::fs::open(&lock_path, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => File::from(fd),
            Err(RxErrno::LOOP) => return Err(symlink_error(&lock_path)),
            Err(RxErrno::ROFS) => return Ok(Store { dir, _lock: None }),
            Err(e) => {
                return Err(HostLocalError::io(
                    format!("open {}", lock_path.display()),
                    e,
                ))
            }
        };
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(l) => break l,
                Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => {
                    return Err(HostLocalError::io(
                        format!("flock {}", lock_path.display()),
                        e,
                    ))
                }
            }
        };
        Ok(Store {
            dir,
            _lock: Some(lock),
        })
    }

    /// The network directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Tries to reserve `ip` for `owner`. `Ok(false)` when it is taken.
    ///
    /// # Errors
    /// Any failure other than the name existing.
    pub fn try_reserve(&self, owner: &OwnerFile, ip: IpAddr) -> Result<bool> {
        let target = self.ip_path(ip);
        match self.link_owner(owner, &target) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(HostLocalError::io(
                format!("reserve {}", target.display()),
                e,
            )),
        }
    }

    /// A [`Prober`] of this store's directory.
    ///
    /// # Errors
    /// The directory cannot be opened.
    pub fn prober(&self) -> Result<Prober> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::open(&self.dir, flags, Mode::empty())
            .map(|dir| Prober { dir })
            .map_err(|e| HostLocalError::io(format!("open {}", self.dir.display()), e))
    }

    /// Makes `target` a link of the owner's inode; fails with `EEXIST` when
    /// the name is taken.
    fn link_owner(&self, owner: &OwnerFile, target: &Path) -> Result<(), Errno> {
        match &owner.named {
            None => {
                // linkat(2): AT_EMPTY_PATH names the open file itself, with
                // no walk through /proc (a fresh process instantiates its
                // /proc/<pid>/fd entries on each); it needs
                // CAP_DAC_READ_SEARCH, else ENOENT, and then /proc it is.
                if !NO_EMPTY_PATH_LINK.load(Ordering::Relaxed) {
                    match linkat(
                        owner.file.as_fd(),
                        "",
                        AT_FDCWD,
                        target,
                        AtFlags::AT_EMPTY_PATH,
                    ) {
                        Err(Errno::ENOENT | Errno::EPERM) => {
                            NO_EMPTY_PATH_LINK.store(true, Ordering::Relaxed);
                        }
                        r => return r,
                    }
                }
                let src = format!("/proc/self/fd/{}", owner.file.as_raw_fd());
                linkat(
                    AT_FDCWD,
                    src.as_str(),
                    AT_FDCWD,
                    target,
                    AtFlags::AT_SYMLINK_FOLLOW,
                )
            }
            Some(p) => linkat(AT_FDCWD, p, AT_FDCWD, target, AtFlags::empty()),
        }
    }

    /// Drops the temporary name of `owner`, if it has one.
    pub fn finish(&self, owner: OwnerFile) {
        if let Some(p) = owner.named {
            let _ = fs::remove_file(p);
        }
    }

    /// Removes the reservation of `ip`; an absent file is fine.
    ///
    /// # Errors
    /// Any other failure.
    pub fn release(&self, ip: IpAddr) -> Result<()> {
        let p = self.ip_path(ip);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(HostLocalError::io(format!("remove {}", p.display()), e)),
        }
    }

    /// Reads who holds `ip`, or `None` when it is free.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn owner_of(&self, ip: IpAddr) -> Result<Option<Owner>> {
        let p = self.ip_path(ip);
        // Never through a symlink, and a FIFO must not block the open.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(&p, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(RxErrno::NOENT) => return Ok(None),
            Err(RxErrno::LOOP) => return Ok(Some(Owner::Foreign)),
            Err(e) => return Err(HostLocalError::io(format!("open {}", p.display()), e)),
        };
        let regular = rustix::fs::fstat(&fd)
            .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
            .map_err(|e| HostLocalError::io(format!("stat {}", p.display()), e))?;
        if !regular {
            return Ok(Some(Owner::Foreign));
        }
        let mut buf = Vec::with_capacity(64);
        File::from(fd)
            .take(MAX_RESERVATION_LEN)
            .read_to_end(&mut buf)
            .map_err(|e| HostLocalError::io(format!("read {}", p.display()), e))?;
        Ok(Some(Owner::parse(&String::from_utf8_lossy(&buf))))
    }

    /// The round-robin cursor of range set `idx`.
    pub fn last_reserved(&self, idx: usize) -> Option<IpAddr> {
        let p = self.dir.join(format!("last_reserved_ip.{idx}"));
        let read = OpenOptions::new()
            .read(true)
            .custom_flags(libc_flag(OFlags::NOFOLLOW))
            .open(&p)
            .and_then(|mut f| {
                // One read: an address is at most 45 bytes, and anything
                // longer is no cursor (only a hint: then none).
                let mut buf = [0u8; 64];
                let n = f.read(&mut buf)?;
                Ok(if n < buf.len() {
                    buf.get(..n).unwrap_or_default().to_vec()
                } else {
                    Vec::new()
                })
            });
        match read {
            Ok(b) => std::str::from_utf8(&b).ok()?.trim().parse().ok(),
            // A symlink is never followed: the cursor is only a hint.
            Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => None,
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => {
                eprintln!("Error retrieving last reserved ip: {e}");
                None
            }
        }
    }

    /// Overwrites a small hint file in place (as the reference writes its
    /// cursor). Only the cursor and our index are written this way: both are
    /// hints, a torn one is ignored or verified against the reservation
    /// files, and a `rename` costs a journal commit inside the lock on every
    /// ADD (measured: about a third of the lock hold time).
    fn overwrite(&self, name: &str, content: &[u8]) -> Result<()> {
        let target = self.dir.join(name);
        // Write over the old content, then cut what is left of it: cheaper
        // than O_TRUNC, which frees and reallocates the block.
        let open = || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc_flag(OFlags::NOFOLLOW))
                .open(&target)
        };
        let file = match open() {
            // A symlink (even a dangling one) is replaced, never written
            // through: the reference would write wherever it points.
            Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
                fs::remove_file(&target).and_then(|()| open())
            }
            other => other,
        };
        file.and_then(|mut f| {
            f.write_all(content)?;
            f.set_len(content.len() as u64)
        })
        .map_err(|e| HostLocalError::io(format!("write {}", target.display()), e))
    }

    /// Moves the cursor of range set `idx` to `ip`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn set_last_reserved(&self, idx: usize, ip: IpAddr) -> Result<()> {
        self.overwrite(
            &format!("last_reserved_ip.{idx}"),
            ip.to_string().as_bytes(),
        )
    }

    fn attachment_name(container_id: &str, ifname: &str) -> Option<String> {
        let name = format!("{ATTACHMENT_PREFIX}{}:{ifname}", container_id.trim());
        // NAME_MAX; a longer ID simply goes without an index entry.
        (name.len() <= 255).then_some(name)
    }

    /// The addresses our index says the attachment holds, each verified to
    /// be a link of the index's own inode. Empty when there is no index.
    ///
    /// # Errors
    /// The index exists but cannot be read, or the fallback listing fails.
    pub fn indexed(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        let Some(name) = Self::attachment_name(container_id, ifname) else {
            return Ok(Vec::new());
        };
        let path = self.dir.join(name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(HostLocalError::io(format!("stat {}", path.display()), e)),
        };
        let same = |ip: &IpAddr| {
            fs::symlink_metadata(self.ip_path(*ip))
                .is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev())
        };
        let mut buf = [0u8; 2048];
        match rustix::fs::getxattr(&path, IPS_XATTR, &mut buf[..]) {
            Ok(n) => Ok(String::from_utf8_lossy(&buf[..n])
                .split(',')
                .filter_map(|s| s.parse().ok())
                .filter(same)
                .collect()),
            // No xattr support (or none written): the listing's inode
            // numbers tell which names are links of this inode.
            Err(_) => {
                let rd = fs::read_dir(&self.dir)
                    .map_err(|e| HostLocalError::io(format!("list {}", self.dir.display()), e))?;
                Ok(rd
                    .filter_map(|e| e.ok())
                    .filter(|e| e.ino() == meta.ino())
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect())
            }
        }
    }

    /// Records that the attachment owning `owner` holds `ips`: the address
    /// list goes into the inode's xattr, and the index name becomes one more
    /// link of the inode.
    ///
    /// When the attachment already has an index (a runtime repeated ADD, e.g.
    /// with another requested address), the addresses it lists are adopted:
    /// their files become links of the new inode too, so one DEL releases
    /// every address the attachment holds. The old index goes first, so a
    /// crash midway leaves a DEL that reads every file by content.
    ///
    /// # Errors
    /// The index link cannot be made, or an older address cannot be adopted.
    pub fn index(
        &self,
        owner: &OwnerFile,
        container_id: &str,
        ifname: &str,
        ips: &[IpAddr],
    ) -> Result<()> {
        let Some(name) = Self::attachment_name(container_id, ifname) else {
            return Ok(());
        };
        let target = self.dir.join(name);
        set_ips_xattr(owner, ips);
        match self.link_owner(owner, &target) {
            Err(Errno::EEXIST) => {}
            Ok(()) => return Ok(()),
            Err(e) => return Err(HostLocalError::io(format!("link {}", target.display()), e)),
        }
        let older = self.indexed(container_id, ifname)?;
        fs::remove_file(&target)
            .map_err(|e| HostLocalError::io(format!("remove {}", target.display()), e))?;
        let mut all = ips.to_vec();
        for ip in older {
            if !all.contains(&ip) {
                self.adopt(owner, ip)?;
                all.push(ip);
            }
        }
        set_ips_xattr(owner, &all);
        self.link_owner(owner, &target)
            .map_err(|e| HostLocalError::io(format!("link {}", target.display()), e))
    }

    /// Replaces the reservation file of `ip` by a link of `owner`'s inode
    /// (same content), atomically.
    fn adopt(&self, owner: &OwnerFile, ip: IpAddr) -> Result<()> {
        let tmp = self.dir.join(tmp_name());
        let target = self.ip_path(ip);
        self.link_owner(owner, &tmp)
            .map_err(|e| HostLocalError::io(format!("link {}", tmp.display()), e))?;
        fs::rename(&tmp, &target).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            HostLocalError::io(format!("rename {}", target.display()), e)
        })
    }

    /// Forgets an attachment's index entry.
    pub fn unindex(&self, container_id: &str, ifname: &str) {
        if let Some(name) = Self::attachment_name(container_id, ifname) {
            let _ = fs::remove_file(self.dir.join(name));
        }
    }

    /// Every file name in the directory, classified.
    ///
    /// # Errors
    /// The directory cannot be listed.
    pub fn entries(&self) -> Result<Entries> {
        let mut out = Entries::default();
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| HostLocalError::io(format!("list {}", self.dir.display()), e))?;
        for ent in rd {
            let ent =
                ent.map_err(|e| HostLocalError::io(format!("list {}", self.dir.display()), e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Ok(ip) = name.parse::<IpAddr>() {
                out.ips.push(ip);
            } else if let Some(rest) = name.strip_prefix(ATTACHMENT_PREFIX) {
                if let Some((id, ifname)) = rest.split_once(':') {
                    out.attachments.push((id.to_string(), ifname.to_string()));
                }
            } else if name.starts_with(TMP_PREFIX) {
                out.temporaries.push(name.to_string());
            }
        }
        Ok(out)
    }

    /// The set of reserved addresses, from names alone.
    ///
    /// # Errors
    /// The directory cannot be listed.
    pub fn reserved(&self) -> Result<HashSet<IpAddr>> {
        Ok(self.entries()?.ips.into_iter().collect())
    }

    /// Removes leftover temporary files: those whose writer process is gone.
    pub fn remove_temporaries(&self, names: &[String]) {
        for n in names {
            let pid = n
                .strip_prefix(TMP_PREFIX)
                .and_then(|r| r.split('.').next())
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if pid.is_some_and(|p| Path::new("/proc").join(p).exists()) {
                continue;
            }
            let _ = fs::remove_file(self.dir.join(n));
        }
    }
}

/// Existence checks of address names relative to the store directory: one
/// `fstatat` from an open directory, where reserving walks both full paths
/// (and `/proc/self/fd`) to fail with `EEXIST`. Used to skip taken
/// addresses in a crowded range; a name that exists, of any kind, is taken
/// for reserving too.
#[derive(Debug)]
pub struct Prober {
    dir: OwnedFd,
}

impl Prober {
    /// Whether a name for `ip` exists (`false` when unsure: reserving then
    /// tells).
    pub fn exists(&self, ip: IpAddr) -> bool {
        rustix::fs::statat(
            &self.dir,
            ip.to_string(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }
}

/// A classified directory listing.
#[derive(Debug, Default)]
pub struct Entries {
    /// Reservation files (names that are addresses).
    pub ips: Vec<IpAddr>,
    /// Our index entries, as (container ID, ifname).
    pub attachments: Vec<(String, String)>,
    /// Leftover temporary files.
    pub temporaries: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert_eq!(
            Owner::parse("  ctr5\r\neth0  \n"),
            Owner::Attachment {
                id: "ctr5".into(),
                ifname: "eth0".into()
            }
        );
        assert_eq!(Owner::parse("dummy"), Owner::Legacy("dummy".into()));
        assert_eq!(Owner::parse(" \n"), Owner::Nobody);
    }

    /// A store `net` in a new temporary data directory.
    fn temp_store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let loc = StoreLocation {
            data_dir: d.path().to_path_buf(),
            network: "net".into(),
        };
        let store = Store::open(&loc, true)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("open"));
        (d, store)
    }

    #[test]
    fn reserve_link_and_release() {
        let (d, store) = temp_store();
        let owner = OwnerFile::create(store.dir(), "c1", "eth0").unwrap_or_else(|e| panic!("{e}"));
        let ip: IpAddr = "10.0.0.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(matches!(store.try_reserve(&owner, ip), Ok(true)));
        assert!(matches!(store.try_reserve(&owner, ip), Ok(false)));
        store.finish(owner);
        let bytes = fs::read(d.path().join("net/10.0.0.2")).unwrap_or_default();
        assert_eq!(bytes, b"c1\r\neth0");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(d.path().join("net/10.0.0.2"))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        store
            .set_last_reserved(0, ip)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.last_reserved(0), Some(ip));
        let e = store.entries().unwrap_or_default();
        assert_eq!(e.ips, vec![ip]);
        assert!(e.temporaries.is_empty());
        store.release(ip).unwrap_or_else(|e| panic!("{e}"));
        store.release(ip).unwrap_or_else(|e| panic!("{e}"));
        assert!(store.reserved().unwrap_or_default().is_empty());
    }

    #[test]
    fn the_cursor_is_one_short_read_or_none() {
        let (d, store) = temp_store();
        let cursor = d.path().join("net/last_reserved_ip.0");
        assert_eq!(store.last_reserved(0), None, "absent");
        let v6 = "fd00:1234:5678:9abc:def0:1234:5678:9abc";
        for (content, want) in [
            (format!("{v6}\n"), v6.parse().ok()),
            (" 10.1.2.3 \n".to_string(), "10.1.2.3".parse().ok()),
            // An address followed by more than a cursor can hold is junk,
            // as the reference (which parses the whole file) finds it.
            (format!("10.1.2.3{}x", " ".repeat(60)), None),
            ("\u{ff}10.1.2.3".to_string(), None),
            (String::new(), None),
        ] {
            fs::write(&cursor, &content).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(store.last_reserved(0), want, "{content:?}");
        }
    }
}
