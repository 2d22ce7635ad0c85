//! A small SMTP client for the lab's own traffic: the client's submissions,
//! the benchmark's attackers, and the connect-AUTH-disconnect flood that
//! swaks cannot do (leave in the middle of an AUTH exchange). Every read and
//! write has a timeout; the socket is bound to a chosen source address, so
//! call it on a thread inside the namespace that owns that address.

use std::{
    io::{self, BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A server reply: its code and the text of all its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

/// SASL mechanisms the lab's Postfix offers (through Dovecot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mech {
    Plain,
    Login,
}

impl Mech {
    pub fn name(self) -> &'static str {
        match self {
            Mech::Plain => "PLAIN",
            Mech::Login => "LOGIN",
        }
    }
}

/// One SMTP connection.
#[derive(Debug)]
pub struct Session {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

/// Opens a TCP connection from `src` to `dst` within `timeout`. The error
/// keeps its kind: `TimedOut` is what a client of a banned source sees.
pub fn tcp_connect(src: IpAddr, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    sock.connect_timeout(&SockAddr::from(dst), timeout)?;
    Ok(sock.into())
}

impl Session {
    /// Connects and reads the greeting, which must be 220.
    pub fn connect(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Result<Self> {
        let stream =
            tcp_connect(src, dst, timeout).with_context(|| format!("connecting {src} -> {dst}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut s = Self {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        };
        s.expect(220, "greeting")?;
        Ok(s)
    }

    /// Timeout of each later read and write (Dovecot delays a failed AUTH).
    pub fn set_timeout(&self, t: Duration) -> Result<()> {
        self.stream.set_read_timeout(Some(t))?;
        self.stream.set_write_timeout(Some(t))?;
        Ok(())
    }

    /// Reads one (possibly multi-line) reply.
    pub fn reply(&mut self) -> Result<Reply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self
                .reader
                .read_line(&mut line)
                .context("reading a reply")?
                == 0
            {
                bail!("connection closed by the server");
            }
            let l = line.trim_end();
            let code = l.get(..3).and_then(|c| c.parse::<u16>().ok());
            let Some(code) = code else {
                bail!("not an SMTP reply: {l:?}");
            };
            text.push_str(l.get(4..).unwrap_or(""));
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, text });
            }
            text.push('\n');
        }
    }

    fn expect(&mut self, code: u16, what: &str) -> Result<Reply> {
        let r = self.reply()?;
        if r.code != code {
            bail!("{what}: expected {code}, got {} {}", r.code, r.text);
        }
        Ok(r)
    }

    pub fn send_line(&mut self, line: &str) -> Result<()> {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .context("sending a command")
    }

    pub fn command(&mut self, line: &str) -> Result<Reply> {
        self.send_line(line)?;
        self.reply()
    }

    pub fn ehlo(&mut self, name: &str) -> Result<Reply> {
        self.send_line(&format!("EHLO {name}"))?;
        self.expect(250, "EHLO")
    }

    /// A whole AUTH exchange; returns the final reply (235 or 535).
    pub fn auth(&mut self, mech: Mech, user: &str, pass: &str) -> Result<Reply> {
        match mech {
            Mech::Plain => {
                let token = base64(format!("\0{user}\0{pass}").as_bytes());
                self.command(&format!("AUTH PLAIN {token}"))
            }
            Mech::Login => {
                let r = self.command("AUTH LOGIN")?;
                if r.code != 334 {
                    return Ok(r);
                }
                let r = self.command(&base64(user.as_bytes()))?;
                if r.code != 334 {
                    return Ok(r);
                }
                self.command(&base64(pass.as_bytes()))
            }
        }
    }

    /// MAIL, RCPT and DATA of one message with this Subject; returns the
    /// reply to the final dot (250 when queued).
    pub fn message(&mut self, from: &str, to: &str, subject: &str) -> Result<Reply> {
        self.send_line(&format!("MAIL FROM:<{from}>"))?;
        self.expect(250, "MAIL FROM")?;
        self.send_line(&format!("RCPT TO:<{to}>"))?;
        self.expect(250, "RCPT TO")?;
        self.send_line("DATA")?;
        self.expect(354, "DATA")?;
        let body = format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nmx lab message {subject}\r\n.\r\n"
        );
        self.stream
            .write_all(body.as_bytes())
            .context("sending the message")?;
        self.reply()
    }

    /// QUIT and wait for the goodbye.
    pub fn quit(mut self) -> Result<()> {
        self.send_line("QUIT")?;
        self.expect(221, "QUIT").map(drop)
    }

    /// Leaves without QUIT: the server logs "lost connection after <last command>".
    pub fn drop_connection(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Standard base64 with padding (SASL's encoding).
pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(
            base64(b"\0alice@lab.test\0wrong"),
            "AGFsaWNlQGxhYi50ZXN0AHdyb25n"
        );
    }
}
