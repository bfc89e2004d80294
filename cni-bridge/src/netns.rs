//! Network namespaces: open one by path, run a closure inside it and come
//! back. The switch is per thread and never spans an `.await` (the plugin has
//! no async runtime at all).

use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// A namespace problem; texts follow the reference.
#[derive(Debug, Error)]
pub enum NetnsError {
    /// The path does not exist.
    #[error("failed to open netns {path:?}: failed to Statfs {path:?}: no such file or directory")]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// The path exists but is not a network namespace.
    #[error("unknown FS magic on {path:?}: {magic:x}")]
    NotNetns {
        /// The path.
        path: PathBuf,
        /// Its filesystem magic.
        magic: i64,
    },
    /// A namespace of another kind (`/proc/self/ns/mnt`).
    #[error("{path:?} is a {kind} namespace, not a network namespace")]
    WrongKind {
        /// The path.
        path: PathBuf,
        /// The kind the kernel names it by (`mnt`, `uts`, ...).
        kind: String,
    },
    /// The plugin's own network namespace: configuring it would put the
    /// container's interface and routes on the node itself.
    #[error(
        "{path:?} is the plugin's own network namespace, not a container's: refusing to touch it"
    )]
    Host {
        /// The path.
        path: PathBuf,
    },
    /// Opening or switching failed.
    #[error("failed to {op} netns {path:?}: {}", cni_spec::error::errno_text(*.errno as i32))]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        errno: nix::errno::Errno,
    },
}

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace at `path` (a bind mount or `/proc/<pid>/ns/net`).
    ///
    /// # Errors
    /// Missing path, a path that is not a namespace, or an open failure.
    pub fn open(path: &Path) -> Result<NetNs, NetnsError> {
        // Non-blocking: a FIFO at the path must not hang the plugin.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => NetnsError::Missing {
                    path: path.to_path_buf(),
                },
                _ => NetnsError::Sys {
                    op: "open",
                    path: path.to_path_buf(),
                    errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                },
            })?;
        let st = nix::sys::statfs::fstatfs(&file).map_err(|errno| NetnsError::Sys {
            op: "statfs",
            path: path.to_path_buf(),
            errno,
        })?;
        let magic = st.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(NetnsError::NotNetns {
                path: path.to_path_buf(),
                magic,
            });
        }
        // nsfs names its files `<kind>:[<inode>]`; only `net` will do.
        let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        if let Ok(target) = std::fs::read_link(&fd_path) {
            let target = target.to_string_lossy();
            if let Some((kind, _)) = target.split_once(":[") {
                if kind != "net" {
                    return Err(NetnsError::WrongKind {
                        path: path.to_path_buf(),
                        kind: kind.to_string(),
                    });
                }
            }
        }
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Opens a container's namespace: as [`NetNs::open`], and refused when
    /// it is `home`, the namespace the plugin runs in.
    ///
    /// # Errors
    /// As [`NetNs::open`], or [`NetnsError::Host`].
    pub fn open_container(path: &Path, home: &NetNs) -> Result<NetNs, NetnsError> {
        let ns = NetNs::open(path)?;
        let id = |f: &File| f.metadata().map(|m| (m.dev(), m.ino())).ok();
        match (id(&ns.file), id(&home.file)) {
            (Some(a), Some(b)) if a == b => Err(NetnsError::Host {
                path: path.to_path_buf(),
            }),
            _ => Ok(ns),
        }
    }

    /// The namespace the calling thread is in.
    ///
    /// # Errors
    /// `/proc/thread-self/ns/net` cannot be opened.
    pub fn current() -> Result<NetNs, NetnsError> {
        // The kernel's own link to this thread's network namespace: none of
        // the checks of [`NetNs::open`] can fail on it.
        let path = Path::new("/proc/thread-self/ns/net");
        let file = File::open(path).map_err(|e| NetnsError::Sys {
            op: "open",
            path: path.to_path_buf(),
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the calling thread inside this namespace, then returns
    /// to `home`.
    ///
    /// # Errors
    /// Entering fails. Failing to return is fatal: the process exits rather
    /// than go on in the wrong namespace.
    pub fn run<T>(&self, home: &NetNs, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| NetnsError::Sys {
            op: "enter",
            path: self.path.clone(),
            errno,
        })?;
        let out = f();
        if let Err(e) = setns(home.file.as_fd(), CloneFlags::CLONE_NEWNET) {
            eprintln!("bridge: cannot return to the host network namespace: {e}");
            std::process::abort();
        }
        Ok(out)
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
