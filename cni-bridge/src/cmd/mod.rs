//! One module per CNI command; orchestration only. The order of ADD
//! follows the reference (section 3.2 of our notes, HEAD variant), with a
//! rollback the reference lacks: an ADD that fails after the veth exists
//! removes it, its masquerade and spoof-check rules, and its IPAM lease.

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
