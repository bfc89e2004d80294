//! GC's list of attachments to keep (`cni.dev/valid-attachments`).
//!
//! GC frees whatever the list does not name, so reading it errs on the side
//! of keeping: an entry without `ifname` keeps every attachment of its
//! container ID (the spec makes both keys required, so such an entry is
//! malformed, and freeing a live pod's address is an outage), and an entry
//! without `containerID` could mean anything, so the whole list is refused
//! and nothing is freed.

use crate::json::{JsonTypeError, Obj};
use serde_json::Value;
use std::collections::HashSet;
use thiserror::Error;

/// The two keys GC's list may come under: the spec's, and the 1.1.0 tag's
/// older name (libcni sends both).
pub const KEYS: [&str; 2] = ["cni.dev/valid-attachments", "cni.dev/attachments"];

/// Why a valid-attachments list was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AttachmentsError {
    /// A key or an entry of the wrong JSON type.
    #[error(transparent)]
    Type(#[from] JsonTypeError),
    /// An entry without a container ID: it could stand for any attachment.
    #[error("{0}: no containerID; refusing to collect anything")]
    NoContainerId(String),
}

/// The attachments GC must keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidAttachments {
    /// Entries naming both the container ID and the interface.
    exact: HashSet<(String, String)>,
    /// Container IDs of entries without an `ifname`: every interface kept.
    whole: HashSet<String>,
    /// Every container ID listed.
    ids: HashSet<String>,
}

impl ValidAttachments {
    /// Reads the list from a network configuration. `None` when neither key
    /// is present.
    ///
    /// # Errors
    /// A key or entry of the wrong type, or an entry without `containerID`.
    pub fn from_conf(conf: Obj<'_>) -> Result<Option<Self>, AttachmentsError> {
        let mut any = false;
        let mut out = ValidAttachments::default();
        for key in KEYS {
            let Some(list) = conf.array(key)? else {
                continue;
            };
            any = true;
            for (i, item) in list.iter().enumerate() {
                let path = format!("{key}[{i}]");
                out.add_entry(item, &path)?;
            }
        }
        Ok(any.then_some(out))
    }

    fn add_entry(&mut self, item: &Value, path: &str) -> Result<(), AttachmentsError> {
        let o = Obj::of(item, path)?;
        let text = |k: &str| -> Result<String, JsonTypeError> {
            Ok(o.str(k)?.unwrap_or_default().trim().to_string())
        };
        let id = text("containerID")?;
        if id.is_empty() {
            return Err(AttachmentsError::NoContainerId(path.to_string()));
        }
        let ifname = text("ifname")?;
        self.ids.insert(id.clone());
        if ifname.is_empty() {
            self.whole.insert(id);
        } else {
            self.exact.insert((id, ifname));
        }
        Ok(())
    }

    /// Whether the attachment `(id, ifname)` is to be kept.
    pub fn keeps(&self, id: &str, ifname: &str) -> bool {
        self.whole.contains(id) || self.exact.contains(&(id.to_string(), ifname.to_string()))
    }

    /// Whether any kept attachment has container ID `id` (for state that
    /// records only the ID).
    pub fn keeps_id(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Whether every interface of `id` is kept (an entry without `ifname`).
    pub fn keeps_whole(&self, id: &str) -> bool {
        self.whole.contains(id)
    }

    /// Every container ID listed.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(String::as_str)
    }

    /// The entries that name an interface, as (container ID, ifname).
    pub fn exact(&self) -> impl Iterator<Item = (&str, &str)> {
        self.exact.iter().map(|(i, f)| (i.as_str(), f.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> Result<Option<ValidAttachments>, AttachmentsError> {
        let map = v.as_object().cloned().unwrap_or_default();
        ValidAttachments::from_conf(Obj::new(&map, ""))
    }

    #[test]
    fn absent_keys_give_none() {
        assert_eq!(read(json!({"name": "n"})), Ok(None));
    }

    #[test]
    fn an_entry_without_ifname_keeps_every_interface() {
        let v = read(json!({"cni.dev/valid-attachments": [
            {"containerID": "c1"},
            {"containerID": "c2", "ifname": "eth0"},
            {"containerID": " c3 ", "ifname": ""}
        ]}))
        .ok()
        .flatten()
        .unwrap_or_default();
        assert!(v.keeps("c1", "eth0") && v.keeps("c1", "net1"));
        assert!(v.keeps("c2", "eth0") && !v.keeps("c2", "eth1"));
        assert!(v.keeps("c3", "eth9"));
        assert!(!v.keeps("c4", "eth0"));
        assert!(v.keeps_id("c2") && !v.keeps_whole("c2") && v.keeps_whole("c1"));
        assert_eq!(v.exact().count(), 1);
    }

    #[test]
    fn both_keys_are_merged() {
        let v = read(json!({
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
            "cni.dev/attachments": [{"containerID": "b", "ifname": "eth0"}]
        }))
        .ok()
        .flatten()
        .unwrap_or_default();
        assert!(v.keeps("a", "eth0") && v.keeps("b", "eth0"));
    }

    #[test]
    fn an_entry_without_container_id_refuses_the_list() {
        for entry in [json!({"ifname": "eth0"}), json!({"containerID": "  "})] {
            let e = read(json!({"cni.dev/valid-attachments": [
                {"containerID": "a", "ifname": "eth0"}, entry
            ]}));
            assert_eq!(
                e,
                Err(AttachmentsError::NoContainerId(
                    "cni.dev/valid-attachments[1]".into()
                ))
            );
        }
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(matches!(
            read(json!({"cni.dev/valid-attachments": {"containerID": "a"}})),
            Err(AttachmentsError::Type(_))
        ));
        assert!(matches!(
            read(json!({"cni.dev/valid-attachments": [{"containerID": 5}]})),
            Err(AttachmentsError::Type(_))
        ));
    }
}
