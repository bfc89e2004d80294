//! Our index of attachments: `.attachment.<id>:<ifname>`, one more hard
//! link of the attachment's reservation inode, whose xattr lists its
//! addresses; DEL reads it instead of every reservation.

use super::{tmp_name, OwnerFile, Result, Store, ATTACHMENT_PREFIX, SPARE};
use crate::error::HostLocalError;
use rustix::fs::AtFlags;
use rustix::io::Errno as RxErrno;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::DirEntryExt;

/// The xattr of a reservation inode listing the attachment's addresses.
const IPS_XATTR: &str = "user.k8s-shims.ips";

/// Lists `ips` in the owner inode's xattr. Best effort: without it,
/// [`Store::indexed`] falls back to the directory listing.
fn set_ips_xattr(owner: &OwnerFile, ips: &[IpAddr]) {
    let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
    let Ok(file) = owner.file.try_borrow() else {
        return;
    };
    let _ = rustix::fs::fsetxattr(
        &*file,
        IPS_XATTR,
        list.join(",").as_bytes(),
        rustix::fs::XattrFlags::empty(),
    );
}

impl Store {
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
        let path = self.dir.join(&name);
        let meta = match rustix::fs::statat(&self.fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(m) => m,
            Err(RxErrno::NOENT) => return Ok(Vec::new()),
            Err(e) => return Err(HostLocalError::io(format!("stat {}", path.display()), e)),
        };
        let same = |ip: &IpAddr| {
            rustix::fs::statat(&self.fd, ip.to_string(), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|m| m.st_ino == meta.st_ino && m.st_dev == meta.st_dev)
        };
        let mut buf = [0u8; 2048];
        match rustix::fs::lgetxattr(&path, IPS_XATTR, &mut buf[..]) {
            Ok(n) => Ok(String::from_utf8_lossy(buf.get(..n).unwrap_or_default())
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
                    .filter(|e| e.ino() == meta.st_ino)
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
        let link_error =
            |e| HostLocalError::io(format!("link {}", self.dir.join(&name).display()), e);
        set_ips_xattr(owner, ips);
        match self.link_owner(owner, &name) {
            Err(RxErrno::EXIST) => {}
            Ok(()) => return Ok(()),
            Err(e) => return Err(link_error(e)),
        }
        let older = self.indexed(container_id, ifname)?;
        rustix::fs::unlinkat(&self.fd, name.as_str(), AtFlags::empty()).map_err(|e| {
            HostLocalError::io(format!("remove {}", self.dir.join(&name).display()), e)
        })?;
        let mut all = ips.to_vec();
        for ip in older {
            if !all.contains(&ip) {
                self.adopt(owner, ip)?;
                all.push(ip);
            }
        }
        set_ips_xattr(owner, &all);
        self.link_owner(owner, &name).map_err(link_error)
    }

    /// Replaces the reservation file of `ip` by a link of `owner`'s inode
    /// (same content), atomically.
    fn adopt(&self, owner: &OwnerFile, ip: IpAddr) -> Result<()> {
        let tmp = tmp_name();
        self.link_owner(owner, &tmp).map_err(|e| {
            HostLocalError::io(format!("link {}", self.dir.join(&tmp).display()), e)
        })?;
        rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, ip.to_string()).map_err(|e| {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            HostLocalError::io(format!("rename {}", self.ip_path(ip).display()), e)
        })
    }

    /// Forgets an attachment's index entry.
    pub fn unindex(&self, container_id: &str, ifname: &str) {
        if let Some(name) = Self::attachment_name(container_id, ifname) {
            let _ = self.remove(&name);
        }
    }

    /// Forgets an attachment's index entry once all its addresses are
    /// released: its inode, now named by the index alone, becomes the spare
    /// (replacing an older one).
    pub fn unindex_to_spare(&self, container_id: &str, ifname: &str) {
        if let Some(name) = Self::attachment_name(container_id, ifname) {
            if rustix::fs::renameat(&self.fd, name.as_str(), &self.fd, SPARE).is_err() {
                let _ = self.remove(&name);
            }
        }
    }
}
