//! Links: read, create (bridge, veth), change, delete.

use super::{link_decode, Netlink, Request, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoBridgePort, InfoData,
    InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::os::fd::{AsRawFd, BorrowedFd};

/// What we read of a link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    /// ifindex.
    pub index: u32,
    /// Name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, ...).
    pub kind: Option<String>,
    /// Hardware address.
    pub mac: Vec<u8>,
    /// MTU.
    pub mtu: u32,
    /// Master (bridge) index.
    pub master: Option<u32>,
    /// Promiscuity counter.
    pub promiscuity: u32,
    /// Administratively up.
    pub up: bool,
    /// Operationally up.
    pub oper_up: bool,
    /// `IFLA_LINK`: the peer's index for a veth.
    pub peer_index: Option<u32>,
    /// The bridge's `vlan_filtering`.
    pub vlan_filtering: Option<bool>,
    /// The bridge port's hairpin flag.
    pub hairpin: Option<bool>,
    /// The bridge port's isolated flag.
    pub isolated: Option<bool>,
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Link {
    /// The MAC as text.
    pub fn mac_text(&self) -> String {
        mac_string(&self.mac)
    }
}

/// A veth pair to create from the host side, its peer placed directly in
/// another namespace.
#[derive(Debug)]
pub struct VethSpec<'a> {
    /// Host-side name.
    pub host_name: &'a str,
    /// Peer (container-side) name.
    pub peer_name: &'a str,
    /// Namespace of the peer.
    pub peer_netns: BorrowedFd<'a>,
    /// MTU of both ends (0: kernel default).
    pub mtu: u32,
    /// The peer's MAC, if set.
    pub peer_mac: Option<Vec<u8>>,
    /// The bridge to enslave the host side to, in the same request.
    pub master: Option<u32>,
    /// Create the host side up (the peer stays down).
    pub up: bool,
    /// One TX and one RX queue on each end. The kernel's default is one per
    /// CPU, of which it then uses one; shrinking the count of a registered
    /// device waits for an RCU grace period under the RTNL lock, twice per
    /// pair. Either way one queue of each kind is in use.
    pub single_queue: bool,
}

/// The request of [`Netlink::set_up`], for a [`Netlink::batch`].
pub(crate) fn set_up_request(index: u32) -> Request {
    let mut m = link_msg(index);
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    Request {
        op: format!("set link {index} up"),
        msg: RouteNetlinkMessage::SetLink(m),
        flags: 0,
    }
}

fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

impl Netlink {
    /// Looks a link up by name; `None` when it does not exist.
    ///
    /// # Errors
    /// Any failure other than "no such device".
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(m, || format!("get link {name}"))
    }

    /// Looks a link up by index.
    ///
    /// # Errors
    /// Any failure other than "no such device".
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        self.get_link(link_msg(index), || format!("get link {index}"))
    }

    fn get_link(&mut self, m: LinkMessage, op: impl Fn() -> String) -> Result<Option<Link>> {
        match self.request_raw(&op, RouteNetlinkMessage::GetLink(m), 0) {
            Ok(replies) => link_decode::links(&replies).next().transpose(),
            Err(e) if matches!(e.errno(), Some(nix::errno::Errno::ENODEV)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    ///
    /// # Errors
    /// The dump fails.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.request_raw(
            || "list links".into(),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        link_decode::links(&replies).collect()
    }

    /// `ip link add <name> type bridge [mtu N] [vlan_filtering 1]`; an
    /// existing link of that name is left alone (`EEXIST` is not an error).
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn create_bridge(
        &mut self,
        name: &str,
        mtu: u32,
        vlan_filtering: bool,
        mac: [u8; 6],
    ) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        // An address given at creation is pinned (it never follows a port's)
        // and the bridge ID is derived from it at once; setting the kernel's
        // own random address again afterwards pins it but leaves the bridge
        // ID at zero and the operstate unknown.
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        if mtu != 0 {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
        if vlan_filtering {
            info.push(LinkInfo::Data(InfoData::Bridge(vec![
                InfoBridge::VlanFiltering(true),
            ])));
        }
        m.attributes.push(LinkAttribute::LinkInfo(info));
        match self.ack(
            || format!("could not add {name:?}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST) => Ok(()),
            r => r,
        }
    }

    /// `ip link add <host> [mtu N] [master M] [up] type veth peer name <peer>
    /// netns <fd> [address MAC]`, in one request.
    ///
    /// # Errors
    /// The kernel refuses (`EEXIST` when a name is taken).
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(spec.peer_name.to_string()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(spec.peer_netns.as_raw_fd()));
        if spec.mtu != 0 {
            peer.attributes.push(LinkAttribute::Mtu(spec.mtu));
        }
        if let Some(mac) = &spec.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.clone()));
        }
        if spec.single_queue {
            peer.attributes.push(LinkAttribute::NumTxQueues(1));
            peer.attributes.push(LinkAttribute::NumRxQueues(1));
        }
        let mut m = LinkMessage::default();
        if spec.up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        m.attributes
            .push(LinkAttribute::IfName(spec.host_name.to_string()));
        if spec.mtu != 0 {
            m.attributes.push(LinkAttribute::Mtu(spec.mtu));
        }
        if spec.single_queue {
            m.attributes.push(LinkAttribute::NumTxQueues(1));
            m.attributes.push(LinkAttribute::NumRxQueues(1));
        }
        if let Some(master) = spec.master {
            // The kernel enslaves a new link after registering it, and
            // unregisters it again when that fails.
            m.attributes.push(LinkAttribute::Controller(master));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.ack(
            || format!("create veth {} (peer {})", spec.host_name, spec.peer_name),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn set(&mut self, op: impl Fn() -> String, m: LinkMessage) -> Result<()> {
        self.ack(op, RouteNetlinkMessage::SetLink(m), 0)
    }

    /// `ip link set <index> up`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.run(set_up_request(index))
    }

    /// `ip link set <index> down`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn set_down(&mut self, index: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.header.flags = LinkFlags::empty();
        m.header.change_mask = LinkFlags::Up;
        self.set(|| format!("set link {index} down"), m)
    }

    /// `ip link set <index> promisc on`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn set_promisc(&mut self, index: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.header.flags = LinkFlags::Promisc;
        m.header.change_mask = LinkFlags::Promisc;
        self.set(|| format!("set link {index} promisc on"), m)
    }

    /// `ip link set <index> master <master>`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Controller(master));
        self.set(|| format!("set link {index} master {master}"), m)
    }

    /// `ip link set <index> address <mac>`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn set_mac(&mut self, index: u32, mac: &[u8]) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.set(
            || format!("set link {index} address {}", mac_string(mac)),
            m,
        )
    }

    /// `ip link set <index> type bridge_slave hairpin <h> isolated <i>`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn set_port_flags(
        &mut self,
        index: u32,
        hairpin: bool,
        isolated: Option<bool>,
    ) -> Result<()> {
        let mut flags = vec![InfoBridgePort::HairpinMode(hairpin)];
        if let Some(i) = isolated {
            flags.push(InfoBridgePort::Isolated(i));
        }
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(flags)),
        ]));
        self.ack(
            || format!("set bridge port {index} hairpin {hairpin}"),
            RouteNetlinkMessage::NewLink(m),
            0,
        )
    }

    /// `bridge vlan add vid <vid> dev <index> [pvid] [untagged] master`.
    ///
    /// # Errors
    /// The kernel refuses (no VLAN filtering support gives `EOPNOTSUPP`).
    pub fn add_port_vlan(&mut self, index: u32, vid: u16, pvid_untagged: bool) -> Result<()> {
        let mut m = link_msg(index);
        m.header.interface_family = AddressFamily::Bridge;
        let mut flags = BridgeVlanInfoFlags::empty();
        if pvid_untagged {
            flags |= BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged;
        }
        m.attributes
            .push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(
                BridgeVlanInfo { flags, vid },
            )]));
        self.set(|| format!("add vlan {vid} to port {index}"), m)
    }

    /// `bridge vlan del vid <vid> dev <index> master`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn del_port_vlan(&mut self, index: u32, vid: u16) -> Result<()> {
        let mut m = link_msg(index);
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes
            .push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(
                BridgeVlanInfo {
                    flags: BridgeVlanInfoFlags::empty(),
                    vid,
                },
            )]));
        self.ack(
            || format!("delete vlan {vid} from port {index}"),
            RouteNetlinkMessage::DelLink(m),
            0,
        )
    }

    /// `ip link del <name>`, in one request (no lookup first).
    ///
    /// # Errors
    /// The kernel refuses (`ENODEV` when there is no such link).
    pub fn del_link_by_name(&mut self, name: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.ack(
            || format!("delete link {name}"),
            RouteNetlinkMessage::DelLink(m),
            0,
        )
    }

    /// `ip link del <index>`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        self.ack(
            || format!("delete link {index}"),
            RouteNetlinkMessage::DelLink(link_msg(index)),
            0,
        )
    }
}
