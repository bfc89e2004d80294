//! The `bridge` binary: everything it needs arrives in `CNI_*` variables
//! and on stdin (see the README); `--help` and `--version` are for people.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(cni_spec::skel::main(
        &cni_bridge::Bridge,
        &cni_bridge::INFO,
        cni_bridge::HELP,
    ))
}
