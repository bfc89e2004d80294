//! resolv.conf parsing for the result's `dns`.

use cni_spec::Dns;

/// Parses resolv.conf text: `nameserver`, `domain` (last wins), `search` and
/// `options`; comments (`#`, `;`), blank lines, other keywords and lines with
/// fewer than two fields are skipped.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(key), rest) = (fields.next(), fields) else {
            continue;
        };
        let rest: Vec<String> = rest.map(str::to_string).collect();
        if rest.is_empty() {
            continue;
        }
        match key {
            "nameserver" => dns.nameservers.push(rest[0].clone()),
            "domain" => dns.domain = rest[0].clone(),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_fields() {
        let d = parse_resolv_conf(
            "# comment\n; also\nnameserver 192.0.2.3\nnameserver 2001:db8::53\n\
             domain a.example\ndomain ex.example\nsearch a.example b.example\n\
             options ndots:5 timeout:1\nsortlist x\nnameserver\n",
        );
        assert_eq!(d.nameservers, ["192.0.2.3", "2001:db8::53"]);
        assert_eq!(d.domain, "ex.example");
        assert_eq!(d.search, ["a.example", "b.example"]);
        assert_eq!(d.options, ["ndots:5", "timeout:1"]);
    }

    #[test]
    fn empty() {
        assert!(parse_resolv_conf("").is_empty());
    }
}
