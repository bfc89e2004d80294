//! One module per CNI command; orchestration only.

mod add;
mod check;
mod del;
mod gc;

pub use add::add;
pub use check::check;
pub use del::del;
pub use gc::gc;

use crate::error::PortmapError;

pub(crate) type Result<T, E = PortmapError> = std::result::Result<T, E>;
