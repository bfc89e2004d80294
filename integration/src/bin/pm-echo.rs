//! `pm-echo`: a tiny TCP+UDP responder and client for the portmap traffic
//! tests, run inside test namespaces with `ip netns exec`.
//!
//! ```text
//! pm-echo serve PORT TAG        # TCP and UDP on [::]:PORT (IPv4 too); replies
//!                               # "TAG tcp|udp from PEER-IP" to each client
//! pm-echo ask tcp|udp ADDR PORT [SPORT]
//!                               # prints the reply; exit 1 without one (2 s)
//! pm-echo spray ADDR PORT FIRST-SPORT COUNT
//!                               # one UDP datagram from each of COUNT source
//!                               # ports, no reply awaited (one conntrack
//!                               # entry each at the receiver)
//! ```
#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(2);

fn peer_ip(a: SocketAddr) -> IpAddr {
    match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn serve(port: u16, tag: String) -> Result<(), String> {
    let tcp = TcpListener::bind(("::", port)).map_err(|e| format!("tcp bind: {e}"))?;
    let udp = UdpSocket::bind(("::", port)).map_err(|e| format!("udp bind: {e}"))?;
    let utag = tag.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(
                format!("{utag} udp from {}\n", peer_ip(from)).as_bytes(),
                from,
            );
        }
    });
    for conn in tcp.incoming() {
        let Ok(mut s) = conn else { continue };
        if let Ok(from) = s.peer_addr() {
            let _ = s.write_all(format!("{tag} tcp from {}\n", peer_ip(from)).as_bytes());
        }
    }
    Ok(())
}

fn ask(proto: &str, addr: &str, port: u16, sport: u16) -> Result<String, String> {
    let ip: IpAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let to = SocketAddr::new(ip, port);
    let mut reply = String::new();
    match proto {
        "tcp" => {
            let mut s =
                TcpStream::connect_timeout(&to, WAIT).map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
            s.read_to_string(&mut reply)
                .map_err(|e| format!("read: {e}"))?;
        }
        "udp" => {
            let any: IpAddr = if ip.is_ipv4() { "0.0.0.0" } else { "::" }
                .parse()
                .map_err(|e| format!("{e}"))?;
            let s =
                UdpSocket::bind(SocketAddr::new(any, sport)).map_err(|e| format!("bind: {e}"))?;
            s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
            s.send_to(b"ping", to).map_err(|e| format!("send: {e}"))?;
            let mut buf = [0u8; 512];
            let (n, _) = s.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
            reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        other => return Err(format!("unknown protocol {other}")),
    }
    if reply.is_empty() {
        return Err("empty reply".into());
    }
    Ok(reply)
}

fn spray(addr: &str, port: u16, first: u16, count: u16) -> Result<String, String> {
    let ip: IpAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let any: IpAddr = if ip.is_ipv4() { "0.0.0.0" } else { "::" }
        .parse()
        .map_err(|e| format!("{e}"))?;
    for i in 0..count {
        let sport = first.checked_add(i).ok_or("source ports beyond 65535")?;
        let s = UdpSocket::bind(SocketAddr::new(any, sport))
            .map_err(|e| format!("bind port {sport}: {e}"))?;
        s.send_to(b"ping", SocketAddr::new(ip, port))
            .map_err(|e| format!("send from port {sport}: {e}"))?;
    }
    Ok(String::new())
}

fn port(s: Option<&String>) -> Result<u16, String> {
    s.ok_or("missing port")?
        .parse()
        .map_err(|e| format!("port: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("serve") => port(args.get(1))
            .and_then(|p| serve(p, args.get(2).cloned().unwrap_or_else(|| "pm-echo".into())))
            .map(|()| String::new()),
        Some("ask") => (|| {
            let sport = match args.get(4) {
                Some(_) => port(args.get(4))?,
                None => 0,
            };
            ask(
                args.get(1).map_or("", String::as_str),
                args.get(2).map_or("", String::as_str),
                port(args.get(3))?,
                sport,
            )
        })(),
        Some("spray") => (|| {
            spray(
                args.get(1).map_or("", String::as_str),
                port(args.get(2))?,
                port(args.get(3))?,
                port(args.get(4))?,
            )
        })(),
        _ => Err(
            "usage: pm-echo serve PORT TAG | pm-echo ask tcp|udp ADDR PORT [SPORT] \
                  | pm-echo spray ADDR PORT FIRST-SPORT COUNT"
                .into(),
        ),
    };
    match r {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pm-echo: {e}");
            ExitCode::FAILURE
        }
    }
}
