//! The `portmap` binary: everything it needs arrives in `CNI_*` variables
//! and on stdin (see the README); `--help` and `--version` are for people.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(cni_spec::skel::main(
        &cni_portmap::Portmap,
        &cni_portmap::INFO,
        cni_portmap::HELP,
    ))
}
