//! The inode a reservation is made of: the store's spare when one is free,
//! else a new anonymous one, written before it gets any address's name and
//! then linked (or, the spare, renamed) under each name under the lock.

use super::{owner_text, tmp_name, write_over, Result, Store, SPARE};
use crate::error::HostLocalError;
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, CWD};
use rustix::io::Errno as RxErrno;
use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once `linkat(AT_EMPTY_PATH)` was refused (no CAP_DAC_READ_SEARCH).
static NO_EMPTY_PATH_LINK: AtomicBool = AtomicBool::new(false);

/// Where an [`OwnerFile`]'s inode stands.
#[derive(Debug)]
pub(super) enum Inode {
    /// Anonymous (`O_TMPFILE`), or already a reservation: each further name
    /// is a link of the open file.
    Open,
    /// A named temporary file in the store (filesystems without
    /// `O_TMPFILE`): linked by this name, which `finish` removes.
    Temporary(String),
    /// The store's spare (this device and inode), claimed before the lock
    /// (flocked, so concurrent ADDs leave it alone) and not written yet.
    Spare { dev: u64, ino: u64 },
    /// The spare, checked and written under the lock: the first reservation
    /// renames it to its address.
    SpareWritten,
}

/// A reservation file's content, ready to be linked under address names.
#[derive(Debug)]
pub struct OwnerFile {
    /// The inode; replaced only when a claimed spare changed hands.
    pub(super) file: RefCell<OwnedFd>,
    /// `<id>\r\n<ifname>`.
    content: String,
    pub(super) state: RefCell<Inode>,
}

/// A regular file with no other name: what a spare must be before anything
/// is written to it (never a FIFO, a device, or a link of a reservation).
fn lone_regular_file(st: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_nlink == 1
}

/// A new inode in the store directory `dirfd` holding `content`, not
/// visible under any address: the error names the syscall that failed.
fn new_inode(
    dirfd: BorrowedFd<'_>,
    content: &str,
) -> Result<(OwnedFd, Inode), (&'static str, RxErrno)> {
    let (file, state) = match anonymous_inode(dirfd) {
        Ok(fd) => (fd, Inode::Open),
        // Filesystems without O_TMPFILE: a named temporary file.
        Err(_) => {
            let name = tmp_name();
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            let mode = Mode::from_raw_mode(0o600);
            let fd =
                rustix::fs::openat(dirfd, name.as_str(), flags, mode).map_err(|e| ("create", e))?;
            (fd, Inode::Temporary(name))
        }
    };
    write_over(&file, content.as_bytes(), Some(0)).map_err(|e| ("write", e))?;
    Ok((file, state))
}

impl OwnerFile {
    fn set_state(&self, state: Inode) -> Result<(), RxErrno> {
        *self.state.try_borrow_mut().map_err(|_| RxErrno::BUSY)? = state;
        Ok(())
    }

    /// Writes (in the store directory `dir`, open as `dirfd`, before any lock
    /// is taken) `<id>\r\n<ifname>` to a new file not yet visible under any
    /// address.
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn create(
        dirfd: BorrowedFd<'_>,
        dir: &Path,
        container_id: &str,
        ifname: &str,
    ) -> Result<OwnerFile> {
        let content = owner_text(container_id, ifname);
        let (file, state) = new_inode(dirfd, &content).map_err(|(what, e)| {
            HostLocalError::io(format!("{what} a reservation file in {}", dir.display()), e)
        })?;
        Ok(OwnerFile {
            file: RefCell::new(file),
            content,
            state: RefCell::new(state),
        })
    }

    /// Claims the store's spare inode, if there is one, for the owner
    /// `<id>\r\n<ifname>`: an exclusive flock on it, taken without waiting,
    /// keeps every concurrent ADD off it (they make new inodes, before the
    /// lock). Nothing is written yet: the store may change until the lock
    /// is taken. `None` when there is no spare, another command holds it,
    /// or it is anything but a regular file with no other name.
    fn claim_spare(dirfd: BorrowedFd<'_>, container_id: &str, ifname: &str) -> Option<OwnerFile> {
        // Non-blocking (a FIFO put there does not hang us) and never a
        // controlling terminal; anything but a regular file is refused below.
        let open =
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let file = rustix::fs::openat(dirfd, SPARE, open, Mode::empty()).ok()?;
        rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).ok()?;
        let st = rustix::fs::fstat(&file).ok().filter(lone_regular_file)?;
        Some(OwnerFile {
            file: RefCell::new(file),
            content: owner_text(container_id, ifname),
            state: RefCell::new(Inode::Spare {
                dev: st.st_dev,
                ino: st.st_ino,
            }),
        })
    }
}

/// A new anonymous inode (mode 0600) in the directory `dirfd`.
fn anonymous_inode(dirfd: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    rustix::fs::openat(dirfd, ".", flags, Mode::from_raw_mode(0o600))
}

impl Store {
    /// Makes `name` (in the store) a link of the owner's inode; fails with
    /// `EEXIST` when the name is taken. Under the lock.
    pub(super) fn link_owner(&self, owner: &OwnerFile, name: &str) -> Result<(), RxErrno> {
        let state = owner.state.try_borrow().map_err(|_| RxErrno::BUSY)?;
        match &*state {
            Inode::Spare { dev, ino } => {
                let (dev, ino) = (*dev, *ino);
                drop(state);
                // Still the spare claimed? Before the lock, a DEL may have
                // renamed another inode over it, or the reference's DEL
                // removed it (it removes every file holding its
                // attachment's text, and a spare holds its last owner's).
                let st = rustix::fs::statat(&self.fd, SPARE, AtFlags::SYMLINK_NOFOLLOW)
                    .ok()
                    .filter(|st| (st.st_dev, st.st_ino) == (dev, ino) && lone_regular_file(st));
                if let Some(st) = st {
                    let file = owner.file.try_borrow().map_err(|_| RxErrno::BUSY)?;
                    let len = u64::try_from(st.st_size).ok();
                    write_over(&*file, owner.content.as_bytes(), len)?;
                    drop(file);
                    owner.set_state(Inode::SpareWritten)?;
                } else {
                    self.renew(owner)?;
                }
                self.link_owner(owner, name)
            }
            // The spare becomes its first reservation by rename, which (with
            // RENAME_NOREPLACE) fails like link when the name is taken.
            Inode::SpareWritten => {
                drop(state);
                let flags = rustix::fs::RenameFlags::NOREPLACE;
                match rustix::fs::renameat_with(&self.fd, SPARE, &self.fd, name, flags) {
                    Ok(()) => owner.set_state(Inode::Open),
                    // Gone although we hold the lock: a new inode serves.
                    Err(RxErrno::NOENT) => {
                        self.renew(owner)?;
                        self.link_owner(owner, name)
                    }
                    Err(e) => Err(e),
                }
            }
            Inode::Temporary(tmp) => {
                rustix::fs::linkat(&self.fd, tmp.as_str(), &self.fd, name, AtFlags::empty())
            }
            Inode::Open => {
                // linkat(2): AT_EMPTY_PATH names the open file itself, with
                // no walk through /proc (a fresh process instantiates its
                // /proc/<pid>/fd entries on each); it needs
                // CAP_DAC_READ_SEARCH, else ENOENT, and then /proc it is.
                let file = owner.file.try_borrow().map_err(|_| RxErrno::BUSY)?;
                if !NO_EMPTY_PATH_LINK.load(Ordering::Relaxed) {
                    let empty = AtFlags::EMPTY_PATH;
                    match rustix::fs::linkat(&*file, "", &self.fd, name, empty) {
                        Err(RxErrno::NOENT | RxErrno::PERM) => {
                            NO_EMPTY_PATH_LINK.store(true, Ordering::Relaxed);
                        }
                        r => return r,
                    }
                }
                let src = format!("/proc/self/fd/{}", file.as_raw_fd());
                let follow = AtFlags::SYMLINK_FOLLOW;
                rustix::fs::linkat(CWD, src.as_str(), &self.fd, name, follow)
            }
        }
    }

    /// A file holding `<id>\r\n<ifname>`, not yet visible under any address:
    /// the store's spare inode when there is one free, else a new one. Needs
    /// no lock (call it before taking it: concurrent ADDs then queue only
    /// for the reservation itself).
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn owner_file(&self, container_id: &str, ifname: &str) -> Result<OwnerFile> {
        match OwnerFile::claim_spare(self.fd.as_fd(), container_id, ifname) {
            Some(owner) => Ok(owner),
            None => OwnerFile::create(self.fd.as_fd(), &self.dir, container_id, ifname),
        }
    }

    /// Gives `owner`, whose claimed spare changed hands, a new inode with
    /// its content. Under the lock.
    fn renew(&self, owner: &OwnerFile) -> Result<(), RxErrno> {
        let (file, state) = new_inode(self.fd.as_fd(), &owner.content).map_err(|(_, e)| e)?;
        *owner.file.try_borrow_mut().map_err(|_| RxErrno::BUSY)? = file;
        owner.set_state(state)
    }

    /// Drops the temporary name of `owner`, if it has one. A claimed spare
    /// never reserved stays the spare (its flock goes with the process).
    pub fn finish(&self, owner: OwnerFile) {
        if let Ok(Inode::Temporary(tmp)) = owner.state.try_borrow().as_deref() {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
        }
    }
}
