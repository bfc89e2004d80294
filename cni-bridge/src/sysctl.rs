//! `/proc/sys` reads and writes. `/proc/sys/net` shows the namespace of the
//! thread that opens the file, so callers switch namespace first.

use std::io;

fn path(key: &str) -> String {
    format!("/proc/sys/{key}")
}

/// Reads a sysctl, trimmed.
///
/// # Errors
/// The key does not exist or cannot be read.
pub fn read(key: &str) -> io::Result<String> {
    std::fs::read_to_string(path(key)).map(|s| s.trim().to_string())
}

/// Writes a sysctl.
///
/// # Errors
/// The key does not exist or cannot be written.
pub fn write(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(path(key), value)
}

/// Writes a sysctl only when it differs (the reference does so for
/// forwarding and disable_ipv6, avoiding needless writes).
///
/// # Errors
/// The key cannot be read or written.
pub fn ensure(key: &str, value: &str) -> io::Result<()> {
    if read(key)? == value {
        return Ok(());
    }
    write(key, value)
}
