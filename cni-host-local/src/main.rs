//! The `host-local` binary: everything it needs arrives in `CNI_*` variables
//! and on stdin (see the README); `--help` and `--version` are for people.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(cni_spec::skel::main(
        &cni_host_local::HostLocal,
        &cni_host_local::INFO,
        cni_host_local::HELP,
    ))
}
