//! MAC spoof check: nftables `bridge nat` rules that drop frames from the
//! host port whose source MAC is not the container's (the reference's
//! table, chains and comments, so either implementation removes them).

use crate::tools::run;

const TABLE: &str = "bridge nat";

fn ref_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

fn chain(container_id: &str, ifname: &str) -> String {
    format!("cni-br-iface-{}", ref_id(container_id, ifname))
}

fn comment(container_id: &str, ifname: &str) -> String {
    format!("macspoofchk-{}", ref_id(container_id, ifname))
}

/// Installs the rules for the port `host_veth` of container MAC `mac`.
///
/// # Errors
/// nft fails.
pub fn setup(container_id: &str, ifname: &str, host_veth: &str, mac: &str) -> Result<(), String> {
    let ch = chain(container_id, ifname);
    let c = comment(container_id, ifname);
    let script = format!(
        "add table {TABLE}\n\
         add chain {TABLE} PREROUTING {{ type filter hook prerouting priority -300 ; policy accept ; }}\n\
         add chain {TABLE} {ch}\n\
         add chain {TABLE} {ch}-mac\n\
         flush chain {TABLE} {ch}\n\
         flush chain {TABLE} {ch}-mac\n\
         add rule {TABLE} {ch}-mac ether saddr {mac} return comment \"{c}\"\n\
         add rule {TABLE} {ch}-mac drop comment \"{c}\"\n\
         add rule {TABLE} {ch} jump {ch}-mac comment \"{c}\"\n\
         add rule {TABLE} PREROUTING iifname \"{host_veth}\" jump {ch} comment \"{c}\"\n"
    );
    run("nft", &["-f", "-"], Some(&script)).map(|_| ())
}

/// Whether the rules are present.
///
/// # Errors
/// nft fails or the chains are missing.
pub fn check(container_id: &str, ifname: &str) -> Result<(), String> {
    let ch = chain(container_id, ifname);
    run(
        "nft",
        &["list", "chain", "bridge", "nat", &format!("{ch}-mac")],
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("mac spoof check chain {ch}-mac missing: {e}"))
}

/// Removes the rules and chains; the table and base chain stay.
///
/// # Errors
/// nft fails (nothing to remove is success).
pub fn teardown(container_id: &str, ifname: &str) -> Result<(), String> {
    if crate::tools::find("nft").is_none() {
        return Ok(());
    }
    let ch = chain(container_id, ifname);
    let c = comment(container_id, ifname);
    let listing = match run(
        "nft",
        &["-j", "list", "chain", "bridge", "nat", "PREROUTING"],
        None,
    ) {
        Ok(t) => t,
        Err(_) => return Ok(()),
    };
    let v: serde_json::Value =
        serde_json::from_str(&listing).map_err(|e| format!("nft -j output: {e}"))?;
    let mut script = String::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let r = &item["rule"];
        if r["comment"].as_str() == Some(c.as_str()) {
            if let Some(h) = r["handle"].as_u64() {
                script.push_str(&format!("delete rule {TABLE} PREROUTING handle {h}\n"));
            }
        }
    }
    let chains = run("nft", &["list", "table", "bridge", "nat"], None).unwrap_or_default();
    for name in [ch.clone(), format!("{ch}-mac")] {
        if chains.contains(&format!("chain {name} ")) {
            script.push_str(&format!("flush chain {TABLE} {name}\n"));
        }
    }
    for name in [ch.clone(), format!("{ch}-mac")] {
        if chains.contains(&format!("chain {name} ")) {
            script.push_str(&format!("delete chain {TABLE} {name}\n"));
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    run("nft", &["-f", "-"], Some(&script)).map(|_| ())
}
