//! One module per CNI command; orchestration only. The order of ADD
//! follows the reference (section 3.2 of our notes, HEAD variant), with a
//! rollback the reference lacks: an ADD that fails after the veth exists
//! removes it, its masquerade and spoof-check rules, and its IPAM lease.
//! Where the kernel takes several steps in one request, ADD merges them: the
//! veth is created up and enslaved, the container's addresses, up and routes
//! go in one batch, and the container interface's sysctls that do not depend
//! on its addresses are written in the same visit to its namespace as the
//! socket is opened (before IPAM, not after: the end state is the same).

mod add;
mod check;
mod del;
mod gc;

pub use add::add;
pub use check::check;
pub use del::del;
pub use gc::{gc, status};

use crate::error::BridgeError;

pub(crate) type Result<T, E = BridgeError> = std::result::Result<T, E>;

/// Wraps a netlink error with what was being done.
pub(crate) fn nl(
    context: impl Into<String>,
) -> impl FnOnce(crate::netlink::NetlinkError) -> BridgeError {
    BridgeError::netlink(context)
}
