//! A ban closes the TCP connections its source has open (`close_connections`,
//! on by default), and only those: a clean source's connection and one on a
//! port the ban does not cover stay open; a blocklist (`ban --file`) closes
//! its sources' too. Real sockets between the lab's
//! namespaces, a real agent (root; `cargo build -p fail2xdp` first).

use std::{
    io::{ErrorKind, Read as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fail2xdp_tests::{Lab, NetnsPair};
use socket2::{Domain, Socket, Type};

const CLEAN_V4: &str = "192.0.2.3";

/// An accepted connection as the server holds it, and the client's end.
struct Conn {
    server: TcpStream,
    _client: TcpStream,
    what: String,
}

impl Conn {
    /// Still open: nothing to read yet, no error, no end of stream.
    fn open(&self) -> bool {
        let mut buf = [0u8; 1];
        // The client never writes: any answer (end of stream, data, an
        // error but a timeout) means the connection is over.
        match fail2xdp_tests::interrupted::retry(|| (&self.server).read(&mut buf)) {
            Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            Ok(_read) => false,
        }
    }
}

/// Connects from `src` (an address of the sending namespace) to `port` of
/// the receiving side, and accepts on `listener`.
fn connect(
    pair: &NetnsPair,
    listener: &TcpListener,
    src: IpAddr,
    dst: IpAddr,
    port: u16,
) -> Result<Conn> {
    let client = pair
        .send_ns
        .run(move || -> Result<TcpStream> {
            let s = Socket::new(
                Domain::for_address(SocketAddr::new(src, 0)),
                Type::STREAM,
                None,
            )?;
            s.bind(&SocketAddr::new(src, 0).into())?;
            s.connect_timeout(&SocketAddr::new(dst, port).into(), Duration::from_secs(5))?;
            Ok(s.into())
        })?
        .with_context(|| format!("connecting from {src} to port {port}"))?;
    let (server, peer) = listener.accept().context("accepting")?;
    if peer.ip() != src && peer.ip().to_canonical() != src {
        bail!("accepted {peer}, expected a connection from {src}");
    }
    server.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(Conn {
        server,
        _client: client,
        what: format!("{src} -> port {port}"),
    })
}

fn listen(pair: &NetnsPair, addr: &str) -> Result<TcpListener> {
    let addr: SocketAddr = addr.parse()?;
    pair.recv_ns
        .run(move || TcpListener::bind(addr))?
        .with_context(|| format!("listening on {addr}"))
}

/// Waits until `closed` are closed (within 5 s of the ban), then checks
/// that `open` still are.
fn expect(lab: &Lab, closed: &[&Conn], open: &[&Conn]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(c) = closed.iter().find(|c| c.open()) {
        if Instant::now() > deadline {
            bail!(
                "{} still open 5 s after its source's ban; agent log:\n{}",
                c.what,
                lab.agent.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in open {
        if !c.open() {
            bail!(
                "{} was closed, though no ban covers it; agent log:\n{}",
                c.what,
                lab.agent.log()
            );
        }
    }
    Ok(())
}

#[test]
fn a_ban_closes_its_sources_open_connections_and_no_other() -> Result<()> {
    let lab = Lab::start()?;
    let pair = &lab.pair;
    pair.send_ns.ip(&[
        "addr",
        "add",
        &format!("{CLEAN_V4}/24"),
        "dev",
        &pair.send_if,
    ])?;
    let (v4, v6) = (
        IpAddr::V4(NetnsPair::SEND_V4),
        IpAddr::V6(NetnsPair::SEND_V6),
    );
    let (to4, to6) = (
        IpAddr::V4(NetnsPair::RECV_V4),
        IpAddr::V6(NetnsPair::RECV_V6),
    );
    let smtp = listen(pair, "0.0.0.0:2525")?;
    let imap = listen(pair, "0.0.0.0:2526")?;
    let dual = listen(pair, "[::]:2527")?;
    let a_smtp = connect(pair, &smtp, v4, to4, 2525)?;
    let a_imap = connect(pair, &imap, v4, to4, 2526)?;
    // An IPv4 peer of a dual-stack listener: a mapped address in the dump.
    let a_dual = connect(pair, &dual, v4, to4, 2527)?;
    let clean = connect(pair, &smtp, CLEAN_V4.parse()?, to4, 2525)?;
    let b_v6 = connect(pair, &dual, v6, to6, 2527)?;
    expect(&lab, &[], &[&a_smtp, &a_imap, &a_dual, &clean, &b_v6])?;

    // A ban of one port closes that port's connection only.
    lab.agent
        .ban(&v4.to_string(), &["--for", "1h", "--ports", "2526"])?;
    expect(&lab, &[&a_imap], &[&a_smtp, &a_dual, &clean, &b_v6])?;

    // Every port: the rest of that source's, the clean one stays.
    lab.agent.ban(&v4.to_string(), &["--for", "1h"])?;
    expect(&lab, &[&a_smtp, &a_dual], &[&clean, &b_v6])?;

    lab.agent.ban(&v6.to_string(), &["--for", "1h"])?;
    expect(&lab, &[&b_v6], &[&clean])?;

    // A blocklist (`ban --file`) closes its sources' connections too.
    let dir = tempfile::tempdir()?;
    let list = dir.path().join("blocklist.txt");
    std::fs::write(&list, format!("# test list\n{CLEAN_V4}\n198.51.100.0/24\n"))?;
    lab.agent
        .cli(&["ban", "--file", &list.to_string_lossy(), "--for", "1h"])?;
    expect(&lab, &[&clean], &[])?;

    let st = lab.agent.status_json()?;
    let c = &st["agent"]["connections"];
    assert_eq!(c["closed"], 5, "{st}");
    assert!(c["problem"].is_null(), "{st}");
    let log = lab.agent.log();
    assert!(
        log.contains("closed 1 open connection(s) of banned 192.0.2.1/32"),
        "{log}"
    );
    let text = lab.agent.cli(&["status"])?;
    assert!(
        text.contains("open connections of banned sources: closed (5 so far)"),
        "{text}"
    );
    Ok(())
}
