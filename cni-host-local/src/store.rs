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
//! - `.spare` is the inode of a released attachment, which DEL renames
//!   there instead of freeing it. The next ADD claims it before the lock (a
//!   non-blocking flock on it: concurrent ADDs make new inodes instead), and
//!   under the lock checks it is still that inode, rewrites it and renames
//!   it to its address: no inode is allocated or freed per pod.

use crate::config::StoreLocation;
use crate::error::HostLocalError;
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno as RxErrno;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

mod index;
mod owner_file;

pub use owner_file::OwnerFile;

type Result<T, E = HostLocalError> = std::result::Result<T, E>;

/// Prefix of our attachment index files.
const ATTACHMENT_PREFIX: &str = ".attachment.";
/// A released reservation inode kept for the next ADD, which rewrites and
/// renames it instead of allocating an inode (and DEL renames its index to
/// it instead of freeing one): allocation is the dearest part of a
/// reservation on ext4. Neither plugin reads it as a reservation (its name
/// is no address); it holds the text of its last owner (or of an ADD that
/// wrote it and then failed) until reused.
const SPARE: &str = ".spare";
/// Prefix of temporary files, `.tmp.<pid>.<n>`: only used where the
/// filesystem has no `O_TMPFILE`; a file whose process is gone is a leftover.
const TMP_PREFIX: &str = ".tmp.";
/// Largest reservation file we read; real ones are well under 300 bytes.
const MAX_RESERVATION_LEN: u64 = 4096;

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

/// Writes `content` over the start of `fd`, then cuts what is left of an
/// older, longer content of `old_len` bytes (`None`: unknown, always cut).
/// Cheaper than `O_TRUNC`, which frees and reallocates the block.
fn write_over(fd: impl AsFd, content: &[u8], old_len: Option<u64>) -> rustix::io::Result<()> {
    let mut done = 0;
    while let Some(rest) = content.get(done..).filter(|r| !r.is_empty()) {
        match rustix::io::pwrite(fd.as_fd(), rest, done as u64) {
            Ok(0) => return Err(RxErrno::IO),
            Ok(n) => done += n,
            Err(RxErrno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    if old_len.is_none_or(|old| old > done as u64) {
        rustix::fs::ftruncate(fd.as_fd(), done as u64)?;
    }
    Ok(())
}

/// Opens a store directory itself as an `O_PATH` descriptor, never through
/// a symlink: every later operation is relative to it (no walk of the
/// whole path each time, and no symlink swapped in between).
fn open_dir(dir: &Path) -> Result<OwnedFd, RxErrno> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::open(dir, flags, Mode::empty())
}

/// Opens a store directory, creating it (mode 0755) and its parents when
/// missing.
///
/// # Errors
/// The directory cannot be created, or it is a symlink.
pub fn ensure_dir(dir: &Path) -> Result<OwnedFd> {
    // The usual case, a store that exists: one open and no mkdir, which
    // locks the parent directory even when the name is taken (concurrent
    // ADDs queued on it).
    if let Ok(fd) = open_dir(dir) {
        return Ok(fd);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| HostLocalError::io(format!("mkdir {}", dir.display()), e))?;
    refuse_symlink(dir)?;
    open_dir(dir).map_err(|e| HostLocalError::io(format!("open {}", dir.display()), e))
}

/// One network's store, locked for as long as the value lives.
#[derive(Debug)]
pub struct Store {
    /// `None` only on a read-only filesystem without a lock file, where no
    /// writer can exist. Closing it releases the lock (declared first: it
    /// is closed first).
    _lock: Option<OwnedFd>,
    fd: OwnedFd,
    dir: PathBuf,
    /// The cursor files [`Store::last_reserved`] opened, kept for
    /// [`Store::set_last_reserved`]: (range set, file, its length).
    cursors: RefCell<Vec<(usize, OwnedFd, u64)>>,
}

fn tmp_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{TMP_PREFIX}{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn symlink_error(path: &Path) -> HostLocalError {
    HostLocalError::io(
        format!(
            "open {}: is a symbolic link, which the store never follows",
            path.display()
        ),
        std::io::Error::from_raw_os_error(RxErrno::LOOP.raw_os_error()),
    )
}

/// Waits for the exclusive lock on `lock` (named `path`).
fn flock_exclusive(lock: &OwnedFd, path: &Path) -> Result<()> {
    loop {
        match rustix::fs::flock(lock, FlockOperation::LockExclusive) {
            Ok(()) => return Ok(()),
            Err(RxErrno::INTR) => {}
            Err(e) => return Err(HostLocalError::io(format!("flock {}", path.display()), e)),
        }
    }
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
        let fd = if create {
            ensure_dir(&dir)?
        } else {
            match open_dir(&dir) {
                Ok(fd) => fd,
                Err(_) if !dir.is_dir() => return Ok(None),
                Err(e) => {
                    refuse_symlink(&dir)?;
                    return Err(HostLocalError::io(format!("open {}", dir.display()), e));
                }
            }
        };
        let mut store = Store::unlocked(dir, fd);
        store.lock()?;
        Ok(Some(store))
    }

    /// The store directory `dir`, open as `fd` (from [`ensure_dir`]), not
    /// locked yet: see [`Store::lock`].
    pub fn unlocked(dir: PathBuf, fd: OwnedFd) -> Store {
        Store {
            _lock: None,
            fd,
            dir,
            cursors: RefCell::default(),
        }
    }

    /// Takes the store's lock, waiting for it.
    ///
    /// The lock file is opened read-only (flock needs no more, and a
    /// read-only store can still be checked) and never through a symlink: a
    /// link could point the reference's lock and ours at different files.
    /// On a read-only filesystem without a lock file there is no lock (and
    /// no writer).
    ///
    /// # Errors
    /// The lock file is a symlink, or cannot be created or locked.
    pub fn lock(&mut self) -> Result<()> {
        let lock_path = || self.dir.join("lock");
        let flags = OFlags::RDONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let lock = match rustix::fs::openat(&self.fd, "lock", flags, Mode::from_raw_mode(0o600)) {
            Ok(lock) => lock,
            Err(RxErrno::LOOP) => return Err(symlink_error(&lock_path())),
            Err(RxErrno::ROFS) => return Ok(()),
            Err(e) => {
                return Err(HostLocalError::io(
                    format!("open {}", lock_path().display()),
                    e,
                ))
            }
        };
        flock_exclusive(&lock, &lock_path())?;
        self._lock = Some(lock);
        Ok(())
    }

    /// The network directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The network directory, open.
    pub fn dir_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Tries to reserve `ip` for `owner`. `Ok(false)` when it is taken.
    ///
    /// # Errors
    /// Any failure other than the name existing.
    pub fn try_reserve(&self, owner: &OwnerFile, ip: IpAddr) -> Result<bool> {
        match self.link_owner(owner, &ip.to_string()) {
            Ok(()) => Ok(true),
            Err(RxErrno::EXIST) => Ok(false),
            Err(e) => Err(HostLocalError::io(
                format!("reserve {}", self.ip_path(ip).display()),
                e,
            )),
        }
    }

    /// A [`Prober`] of this store's directory.
    pub fn prober(&self) -> Prober<'_> {
        Prober {
            dir: self.fd.as_fd(),
        }
    }

    /// Removes the store entry `name`; an absent one is fine.
    fn remove(&self, name: &str) -> Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(RxErrno::NOENT) => Ok(()),
            Err(e) => Err(HostLocalError::io(
                format!("remove {}", self.dir.join(name).display()),
                e,
            )),
        }
    }

    /// Removes the reservation of `ip`; an absent file is fine.
    ///
    /// # Errors
    /// Any other failure.
    pub fn release(&self, ip: IpAddr) -> Result<()> {
        self.remove(&ip.to_string())
    }

    /// Reads who holds `ip`, or `None` when it is free.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn owner_of(&self, ip: IpAddr) -> Result<Option<Owner>> {
        let name = ip.to_string();
        let p = || self.dir.join(&name);
        // Never through a symlink, and a FIFO must not block the open.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name.as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(RxErrno::NOENT) => return Ok(None),
            Err(RxErrno::LOOP) => return Ok(Some(Owner::Foreign)),
            Err(e) => return Err(HostLocalError::io(format!("open {}", p().display()), e)),
        };
        let regular = rustix::fs::fstat(&fd)
            .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
            .map_err(|e| HostLocalError::io(format!("stat {}", p().display()), e))?;
        if !regular {
            return Ok(Some(Owner::Foreign));
        }
        let mut buf = Vec::with_capacity(64);
        File::from(fd)
            .take(MAX_RESERVATION_LEN)
            .read_to_end(&mut buf)
            .map_err(|e| HostLocalError::io(format!("read {}", p().display()), e))?;
        Ok(Some(Owner::parse(&String::from_utf8_lossy(&buf))))
    }

    /// The round-robin cursor of range set `idx`. The file stays open for
    /// [`Store::set_last_reserved`].
    pub fn last_reserved(&self, idx: usize) -> Option<IpAddr> {
        let name = format!("last_reserved_ip.{idx}");
        // Read-write, so that moving the cursor needs no second open; where
        // writing is refused (a read-only store), read-only.
        let open = |access| {
            let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            rustix::fs::openat(&self.fd, name.as_str(), flags, Mode::empty())
        };
        let fd = match open(OFlags::RDWR) {
            Err(RxErrno::ACCESS | RxErrno::ROFS | RxErrno::PERM) => open(OFlags::RDONLY),
            other => other,
        };
        // One read: an address is at most 45 bytes, and anything longer is
        // no cursor (only a hint: then none).
        let mut buf = [0u8; 64];
        let read = fd.and_then(|fd| loop {
            match rustix::io::read(&fd, &mut buf[..]) {
                Err(RxErrno::INTR) => {}
                r => break r.map(|n| (fd, n)),
            }
        });
        let n = match read {
            Ok((fd, n)) => {
                if let Ok(mut c) = self.cursors.try_borrow_mut() {
                    c.push((idx, fd, n as u64));
                }
                n
            }
            // A symlink is never followed: the cursor is only a hint.
            Err(RxErrno::LOOP | RxErrno::NOENT) => return None,
            Err(e) => {
                eprintln!(
                    "Error retrieving last reserved ip: {}",
                    os_text(&std::io::Error::from(e))
                );
                return None;
            }
        };
        let text = buf.get(..n).filter(|_| n < buf.len())?;
        std::str::from_utf8(text).ok()?.trim().parse().ok()
    }

    /// Overwrites a small hint file in place (as the reference writes its
    /// cursor). Only the cursor is written this way: a hint, where a torn
    /// one is ignored; a `rename` costs a journal commit inside the lock on
    /// every ADD (measured: about a third of the lock hold time).
    fn overwrite(&self, name: &str, content: &[u8]) -> Result<()> {
        let target = || self.dir.join(name);
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let open = || rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600));
        let file = match open() {
            // A symlink (even a dangling one) is replaced, never written
            // through: the reference would write wherever it points.
            Err(RxErrno::LOOP) => {
                rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).and_then(|()| open())
            }
            other => other,
        };
        file.and_then(|f| write_over(&f, content, None))
            .map_err(|e| HostLocalError::io(format!("write {}", target().display()), e))
    }

    /// Moves the cursor of range set `idx` to `ip`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn set_last_reserved(&self, idx: usize, ip: IpAddr) -> Result<()> {
        let name = format!("last_reserved_ip.{idx}");
        let text = ip.to_string();
        let opened = self
            .cursors
            .try_borrow_mut()
            .ok()
            .and_then(|mut c| c.iter().position(|e| e.0 == idx).map(|i| c.swap_remove(i)));
        let Some((_, fd, old_len)) = opened else {
            return self.overwrite(&name, text.as_bytes());
        };
        match write_over(&fd, text.as_bytes(), Some(old_len)) {
            Ok(()) => Ok(()),
            // Opened read-only (a store that refused writing): the slow way,
            // which reports the real failure.
            Err(RxErrno::BADF) => self.overwrite(&name, text.as_bytes()),
            Err(e) => Err(HostLocalError::io(
                format!("write {}", self.dir.join(&name).display()),
                e,
            )),
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
            let _ = self.remove(n);
        }
    }
}

/// Existence checks of address names relative to the store directory: one
/// `faccessat2`, where a failed reservation costs a `linkat` to fail with
/// `EEXIST`. Used to skip taken addresses in a crowded range; a name that
/// exists, of any kind, is taken for reserving too.
#[derive(Debug)]
pub struct Prober<'a> {
    dir: BorrowedFd<'a>,
}

impl Prober<'_> {
    /// Whether a name for `ip` exists (`false` when unsure: reserving then
    /// tells).
    pub fn exists(&self, ip: IpAddr) -> bool {
        // faccessat2(F_OK): the lookup alone, a quarter cheaper than a stat
        // (measured in a 64 k-entry store; a crowded range probes ~100).
        let exists = rustix::fs::Access::EXISTS;
        rustix::fs::accessat(self.dir, ip.to_string(), exists, AtFlags::SYMLINK_NOFOLLOW).is_ok()
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
    use super::owner_file::Inode;
    use super::*;
    use std::ops::Deref;

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
        let owner = OwnerFile::create(store.dir_fd(), store.dir(), "c1", "eth0")
            .unwrap_or_else(|e| panic!("{e}"));
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

    fn names(dir: &Path) -> Vec<String> {
        let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("{e}"));
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    fn ino_of(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(path).map(|m| m.ino()).unwrap_or(0)
    }

    /// A store whose spare holds `old`, claimed for c1/eth0 (not locked
    /// for real: nothing else runs), and the store's directory.
    fn claimed_spare(old: &str) -> (tempfile::TempDir, Store, PathBuf, OwnerFile) {
        let (d, store) = temp_store();
        let net = d.path().join("net");
        fs::write(net.join(SPARE), old).unwrap_or_else(|e| panic!("{e}"));
        let owner = store
            .owner_file("c1", "eth0")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(owner.state.borrow().deref(), Inode::Spare { .. }),
            "the spare was claimed"
        );
        (d, store, net, owner)
    }

    /// Reserves 10.0.0.2 for `owner`; the reservation file's inode.
    fn reserve_first(store: &Store, net: &Path, owner: OwnerFile) -> u64 {
        let ip: IpAddr = "10.0.0.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(matches!(store.try_reserve(&owner, ip), Ok(true)));
        store.finish(owner);
        let file = net.join("10.0.0.2");
        assert_eq!(fs::read(&file).unwrap_or_default(), b"c1\r\neth0");
        ino_of(&file)
    }

    #[test]
    fn a_claimed_spare_whose_name_vanishes_is_replaced() {
        let (_d, store, net, owner) = claimed_spare("a-longer-old-owner\r\neth1");
        // Before the lock, another plugin removes it (the reference's DEL of
        // the spare's last owner removes files by content).
        fs::remove_file(net.join(SPARE)).unwrap_or_else(|e| panic!("{e}"));
        reserve_first(&store, &net, owner);
        assert_eq!(names(&net), ["10.0.0.2", "lock"], "nothing else left");
    }

    #[test]
    fn a_spare_replaced_before_the_lock_is_not_written_through() {
        let (_d, store, net, owner) = claimed_spare("old\r\neth1");
        // A DEL renames another released attachment over the spare.
        fs::write(net.join("other"), "c9\r\neth0").unwrap_or_else(|e| panic!("{e}"));
        fs::rename(net.join("other"), net.join(SPARE)).unwrap_or_else(|e| panic!("{e}"));
        let new_spare = ino_of(&net.join(SPARE));
        assert_ne!(reserve_first(&store, &net, owner), new_spare);
        assert_eq!(ino_of(&net.join(SPARE)), new_spare, "the new spare stays");
        assert_eq!(fs::read(net.join(SPARE)).unwrap_or_default(), b"c9\r\neth0");
    }

    #[test]
    fn a_spare_claimed_by_another_command_is_not_shared() {
        let (d, store) = temp_store();
        let net = d.path().join("net");
        fs::write(net.join(SPARE), "old\r\neth1").unwrap_or_else(|e| panic!("{e}"));
        let first = store
            .owner_file("c1", "eth0")
            .unwrap_or_else(|e| panic!("{e}"));
        // A second descriptor's flock conflicts as another process's would.
        let second = store
            .owner_file("c2", "eth0")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(first.state.borrow().deref(), Inode::Spare { .. }));
        assert!(matches!(second.state.borrow().deref(), Inode::Open));
        let ips: [IpAddr; 2] = [[10, 0, 0, 2].into(), [10, 0, 0, 3].into()];
        assert!(matches!(store.try_reserve(&second, ips[1]), Ok(true)));
        assert!(matches!(store.try_reserve(&first, ips[0]), Ok(true)));
        store.finish(first);
        store.finish(second);
        assert_eq!(
            fs::read(net.join("10.0.0.2")).unwrap_or_default(),
            b"c1\r\neth0"
        );
        assert_eq!(
            fs::read(net.join("10.0.0.3")).unwrap_or_default(),
            b"c2\r\neth0"
        );
        assert_eq!(names(&net), ["10.0.0.2", "10.0.0.3", "lock"]);
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
