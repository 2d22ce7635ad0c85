//! The `/metrics` endpoint: a small HTTP/1.1 server (one request per
//! connection, bounded head, bounded connections), enough for Prometheus,
//! curl and a browser. Off unless asked for; loopback unless the operator
//! says `--metrics-public`.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Where metrics are served, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint(pub SocketAddr);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "--metrics {0}: not a loopback address; metrics tell what this host bans and how busy it is, \
         so serving them beyond this host needs --metrics-public (or serve them on 127.0.0.1)"
    )]
    NotLoopback(SocketAddr),
    #[error("metrics endpoint {addr}: bind")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Endpoint {
    /// `addr`, refused when it is not loopback and `public` is not set.
    pub fn new(addr: SocketAddr, public: bool) -> Result<Endpoint, MetricsError> {
        if !public && !addr.ip().is_loopback() {
            return Err(MetricsError::NotLoopback(addr));
        }
        Ok(Endpoint(addr))
    }

    /// Binds the listening socket (before the agent touches the data plane,
    /// so a port in use refuses the start).
    pub fn bind(&self) -> Result<std::net::TcpListener, MetricsError> {
        let bind_err = |source| MetricsError::Bind {
            addr: self.0,
            source,
        };
        let l = std::net::TcpListener::bind(self.0).map_err(bind_err)?;
        l.set_nonblocking(true).map_err(bind_err)?;
        Ok(l)
    }
}

/// Longest request head read; a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8192;
/// A client that does not send its request (or read the answer) within
/// this long is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once.
const MAX_CONNECTIONS: usize = 8;

/// Serves `GET /metrics` with what `render` makes (called on a blocking
/// thread: it reads the maps) until the future is dropped.
pub async fn serve(
    listener: std::net::TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("metrics endpoint: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // Busy: answer nothing rather than queue scrapes without bound.
            continue;
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(IO_TIMEOUT * 2, answer(stream, render)).await {
                log::debug!("metrics connection: {e}");
            }
            drop(permit);
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too long\n",
            )
            .await;
        }
        let n = tokio::time::timeout(IO_TIMEOUT, stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = tokio::task::spawn_blocking(move || render())
                .await
                .unwrap_or_else(|e| format!("# rendering the metrics failed: {e}\n# EOF\n"));
            let body = if method == "HEAD" {
                String::new()
            } else {
                body
            };
            respond(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
            .await
        }
        ("GET" | "HEAD", "/") => {
            respond(
                &mut stream,
                "200 OK",
                "text/html; charset=utf-8",
                "<html><body><a href=\"/metrics\">fail2xdp metrics</a></body></html>\n",
            )
            .await
        }
        ("GET" | "HEAD", _) => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "not found; try /metrics\n",
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "GET /metrics\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_public() {
        let lo: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        let lo6: SocketAddr = "[::1]:9100".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9100".parse().unwrap();
        let pubv6: SocketAddr = "[2001:db8::1]:9100".parse().unwrap();
        assert!(Endpoint::new(lo, false).is_ok());
        assert!(Endpoint::new(lo6, false).is_ok());
        let e = Endpoint::new(any, false).unwrap_err().to_string();
        assert!(e.contains("--metrics-public"), "{e}");
        assert!(Endpoint::new(pubv6, false).is_err());
        assert!(Endpoint::new(any, true).is_ok());
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let ep = Endpoint::new("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let l = ep.bind().unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(serve(l, Arc::new(|| "x_total 1\n# EOF\n".to_string())));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let m = get("/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
        assert!(m.contains("application/openmetrics-text"), "{m}");
        assert!(m.ends_with("x_total 1\n# EOF\n"), "{m}");
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
