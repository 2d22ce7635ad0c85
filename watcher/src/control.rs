//! Control socket: the CLI talks to the running agent over a root-only unix
//! socket, one JSON request per line and one JSON response per line.
//!
//! Who may ask what: root (or whoever runs the agent) anything; with
//! `[control] readonly_group` configured, a peer whose group or
//! supplementary groups (`SO_PEERGROUPS`, as they were when it connected)
//! include that group may send the requests [`Request::needs`] classifies
//! [`Access::ReadOnly`] (status, list, explain, ping), never a ban, unban,
//! import, allowlist change, reload or stop. The socket is then mode 0660
//! with that group, else 0600; the peer-credential check holds either way.
//!
//! Wire format (serde's externally tagged enums): an [`Envelope`] per line,
//! e.g. `{"pin_dir":"/sys/fs/bpf/fail2xdp","request":"Reload"}` or
//! `{"pin_dir":"...","request":{"Unban":{"target":"192.0.2.7"}}}`; answers
//! `{"Ok":{"message":"..."}}`, `{"Json":{...}}`, `{"Error":{"message":"..."}}`,
//! `{"WrongInstance":{"serves":"..."}}`.
use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::ban::{FromJail, ImportSpec, ManualBan, Origin};

/// One request, with the pin directory the client addresses: an agent
/// serving another instance's pins refuses it instead of acting on the
/// wrong maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub pin_dir: PathBuf,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Status {
        jail: Option<String>,
    },
    /// The agent's own part of the status only (jails, sources, bans made):
    /// cheap enough to poll.
    AgentStatus,
    Explain {
        target: String,
    },
    List,
    Ban(ManualBan),
    /// A ban in a jail's name taking what `take` says from the jail's rules.
    BanFromJail {
        ban: ManualBan,
        take: FromJail,
    },
    Unban {
        target: String,
    },
    /// Lifts one origin's claim on a network (`set JAIL unbanip`): others'
    /// claims keep it banned.
    UnbanOrigin {
        target: String,
        origin: Origin,
    },
    /// `unban --all [--jail J]`: every ban, or every claim of one origin.
    UnbanAll {
        origin: Option<Origin>,
    },
    /// The jails' rules as the running configuration gives them (`get`).
    JailRules,
    /// A blocklist import, sent in parts: `ImportBegin` answers the id the
    /// parts go to, `ImportCommit` bans them all at once.
    ImportBegin(ImportSpec),
    ImportPart {
        id: u64,
        nets: Vec<String>,
    },
    ImportCommit {
        id: u64,
    },
    AllowAdd {
        target: String,
    },
    AllowDel {
        target: String,
    },
    Reload,
    /// Stop the agent (as SIGTERM does).
    Stop,
    /// Is an agent there (and serving these pins)? Answers its version.
    Ping,
}

/// What a peer may do on the socket, and what a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Requests that change nothing: status, list, explain, ping.
    ReadOnly,
    /// Everything: root, or the user the agent runs as.
    Full,
}

impl Request {
    /// The command it comes from, for messages.
    pub fn command(&self) -> &'static str {
        match self {
            Request::Status { .. } | Request::AgentStatus => "status",
            Request::Explain { .. } => "explain",
            Request::List => "list",
            Request::Ban(_) => "ban",
            Request::BanFromJail { .. } => "ban --jail",
            Request::Unban { .. } => "unban",
            Request::UnbanOrigin { .. } => "set JAIL unbanip",
            Request::UnbanAll { .. } => "unban --all",
            Request::JailRules => "get",
            Request::ImportBegin(_) | Request::ImportPart { .. } | Request::ImportCommit { .. } => {
                "ban --file"
            }
            Request::AllowAdd { .. } => "allow add",
            Request::AllowDel { .. } => "allow del",
            Request::Reload => "reload",
            Request::Stop => "detach --stop-agent",
            Request::Ping => "ping",
        }
    }

    /// The access it needs. Every request is named here, without a
    /// wildcard: a new one must be classified.
    pub fn needs(&self) -> Access {
        match self {
            Request::Status { .. }
            | Request::AgentStatus
            | Request::Explain { .. }
            | Request::List
            | Request::JailRules
            | Request::Ping => Access::ReadOnly,
            Request::Ban(_)
            | Request::BanFromJail { .. }
            | Request::Unban { .. }
            | Request::UnbanOrigin { .. }
            | Request::UnbanAll { .. }
            | Request::ImportBegin(_)
            | Request::ImportPart { .. }
            | Request::ImportCommit { .. }
            | Request::AllowAdd { .. }
            | Request::AllowDel { .. }
            | Request::Reload
            | Request::Stop => Access::Full,
        }
    }

    /// Why a peer with `access` may not send it, if it may not.
    pub fn refused_for(&self, access: Access) -> Option<String> {
        (access < self.needs())
            .then(|| format!("read-only access: `{}` needs root", self.command()))
    }
}

/// The group whose members may send read-only requests
/// (`[control] readonly_group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOnlyGroup {
    pub name: String,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Ok {
        message: String,
    },
    Json(serde_json::Value),
    Error {
        message: String,
    },
    /// The agent on this socket serves another pin directory.
    WrongInstance {
        serves: PathBuf,
    },
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response::Ok {
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket (missing, or a stale file): the CLI may
    /// act on the maps and the store itself.
    #[error("no agent is running on {}", path.display())]
    NotRunning { path: PathBuf },
    #[error("another agent already answers on {}", path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket { path: PathBuf },
    #[error("control socket {}: {op}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {}: no answer within {timeout:?}", path.display())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("control socket {}: {message}", path.display())]
    Protocol { path: PathBuf, message: String },
    #[error(
        "the agent answering on {} serves the pins in {}, not {}: name the instance with --instance (or --socket)",
        path.display(), serves.display(), wanted.display()
    )]
    WrongInstance {
        path: PathBuf,
        serves: PathBuf,
        wanted: PathBuf,
    },
}

/// A request line longer than this is refused (and its connection closed):
/// a request is small, and an import part stays below it. It bounds what
/// one connection can make the agent hold.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
pub const MAX_RESPONSE_BYTES: u64 = 512 * 1024 * 1024;
/// How long the client waits for an answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once. When all are taken, the one that has waited
/// longest without sending a request is closed for the newcomer, so idle
/// connections cannot lock the CLI out; connections busy with a request
/// are never cut.
const MAX_CONNECTIONS: usize = 32;
/// A whole request must arrive within this, the first one and each later
/// one on the same connection (a client sending one byte a second does not
/// keep a slot).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping server waits for the requests it is handling to be
/// answered (a `Stop` among them: its caller waits for that answer).
const ANSWER_GRACE: Duration = Duration::from_secs(5);

/// Implemented by the agent. Called on a blocking thread, one call per
/// request; calls from different connections may run concurrently.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> Response;
}

/// The bound control socket. Dropping it removes the socket file (if it is
/// still ours), so a stopped agent leaves no stale socket behind.
#[derive(Debug)]
pub struct Listener {
    /// Non-blocking; `serve` hands a duplicate to tokio, so binding needs
    /// no runtime (the agent binds before it starts any thread).
    inner: std::os::unix::net::UnixListener,
    path: PathBuf,
    ident: (u64, u64),
    readonly: Option<ReadOnlyGroup>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Only remove the file if it is the socket we bound: a later agent may
        // have replaced it.
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.ident
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> ControlError {
    let path = path.to_owned();
    move |source| ControlError::Io { path, op, source }
}

/// Binds the socket at `path` with mode 0600. A stale socket (nobody answers)
/// is removed; if another agent answers, or `path` is not a socket, this fails
/// and leaves the file alone.
pub fn bind(path: &Path) -> Result<Listener, ControlError> {
    bind_with(path, None)
}

/// [`bind`]; with a read-only group the socket is mode 0660 and owned by
/// that group, whose members may then send read-only requests.
pub fn bind_with(path: &Path, readonly: Option<&ReadOnlyGroup>) -> Result<Listener, ControlError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ControlError::NotASocket {
                path: path.to_owned(),
            });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(ControlError::AlreadyRunning {
                    path: path.to_owned(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                log::info!("removing stale control socket {}", path.display());
                std::fs::remove_file(path).map_err(io_err(path, "removing stale socket"))?;
            }
            Err(e) => return Err(io_err(path, "probing existing socket")(e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path, "stat")(e)),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(path, "creating parent directory"))?;
    }
    let inner = std::os::unix::net::UnixListener::bind(path).map_err(io_err(path, "bind"))?;
    inner
        .set_nonblocking(true)
        .map_err(io_err(path, "set non-blocking"))?;
    // Between bind and chmod the socket has the umask's mode; the peer
    // credential check in `serve` closes that window.
    match readonly {
        None => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path, "chmod 0600"))?,
        Some(g) => {
            std::os::unix::fs::chown(path, None, Some(g.gid))
                .map_err(io_err(path, "chown to the read-only group"))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                .map_err(io_err(path, "chmod 0660"))?;
        }
    }
    let m = std::fs::symlink_metadata(path).map_err(io_err(path, "stat"))?;
    Ok(Listener {
        inner,
        path: path.to_owned(),
        ident: (m.dev(), m.ino()),
        readonly: readonly.cloned(),
    })
}

impl Listener {
    /// Serves connections until `shutdown` completes (mini-redis's
    /// `server::run(listener, shutdown)`). Then it stops accepting, removes
    /// the socket file, closes idle connections and waits (up to
    /// ANSWER_GRACE) until every request it was handling is answered: the
    /// process exits soon after, and a request cut off then, `Stop` above
    /// all, left its caller with no answer. Requests addressed to another
    /// pin directory than `serves` are refused unanswered.
    pub async fn serve(
        self,
        handler: Arc<dyn Handler>,
        serves: PathBuf,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ControlError> {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let idle = Arc::new(Idle::default());
        let serves = Arc::new(crate::instance::Instance {
            name: String::new(),
            pin_dir: serves,
            state_dir: PathBuf::new(),
            socket: self.path.clone(),
        });
        // SAFETY: geteuid takes no arguments and cannot fail.
        let me = unsafe { libc::geteuid() };
        let inner = self
            .inner
            .try_clone()
            .and_then(tokio::net::UnixListener::from_std)
            .map_err(io_err(&self.path, "listen"))?;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                a = inner.accept() => a,
            };
            let (stream, _) = match accepted {
                Ok(s) => s,
                // Out of descriptors and similar: wait rather than spin or die.
                Err(e) => {
                    log::warn!("control socket {}: accept: {e}", self.path.display());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Only root (or whoever runs the agent) may steer it; members
            // of the read-only group may look.
            let access = match stream.peer_cred() {
                Ok(c) if c.uid() == 0 || c.uid() == me => Access::Full,
                Ok(c) => match &self.readonly {
                    Some(g) if c.gid() == g.gid || peer_groups(&stream).contains(&g.gid) => {
                        Access::ReadOnly
                    }
                    _ => {
                        log::warn!("control socket: refused uid {}", c.uid());
                        let msg = format!(
                            "uid {} may not use this socket: root only{}",
                            c.uid(),
                            match &self.readonly {
                                Some(g) => format!(", or read-only for group {}", g.name),
                                None => String::new(),
                            }
                        );
                        tokio::spawn(refuse(stream, msg));
                        continue;
                    }
                },
                Err(e) => {
                    log::warn!("control socket: peer credentials: {e}");
                    continue;
                }
            };
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Full: the longest idle connection makes room.
                    idle.evict_oldest();
                    match tokio::time::timeout(
                        Duration::from_secs(1),
                        Arc::clone(&slots).acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(p)) => p,
                        _ => {
                            // Every slot is busy with a request: say so, do not queue.
                            tokio::spawn(refuse(
                                stream,
                                "the agent is busy with other requests; try again".into(),
                            ));
                            continue;
                        }
                    }
                }
            };
            let handler = Arc::clone(&handler);
            let serves = Arc::clone(&serves);
            let idle = Arc::clone(&idle);
            tokio::spawn(async move {
                if let Err(e) = connection(stream, access, handler, &serves, &idle).await {
                    log::debug!("control connection: {e}");
                }
                drop(permit);
            });
        }
        // A connection attempt from now on is refused rather than left
        // unanswered in the backlog.
        drop(inner);
        drop(self);
        idle.close_all();
        let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
        if tokio::time::timeout(ANSWER_GRACE, slots.acquire_many(all))
            .await
            .is_err()
        {
            log::warn!(
                "control socket: stopped with requests still being handled after {} s",
                ANSWER_GRACE.as_secs()
            );
        }
        Ok(())
    }
}

/// Connections waiting for their next request, oldest first, each with the
/// means to close it; once the server stops, none may wait.
#[derive(Default)]
struct Idle {
    next: std::sync::atomic::AtomicU64,
    waiting: std::sync::Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    closed: bool,
    queue: std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>,
}

impl Idle {
    /// None once the server stops: the connection closes instead of waiting.
    /// The flag is read under the lock `close_all` sets it under, so no
    /// connection starts waiting after `close_all` woke the others.
    fn enter(&self) -> Option<(u64, Arc<tokio::sync::Notify>)> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = Arc::new(tokio::sync::Notify::new());
        let mut w = self.waiting.lock().ok()?;
        if w.closed {
            return None;
        }
        w.queue.push_back((id, n.clone()));
        Some((id, n))
    }

    fn close_all(&self) {
        if let Ok(mut w) = self.waiting.lock() {
            w.closed = true;
            for (_, n) in w.queue.drain(..) {
                n.notify_one();
            }
        }
    }

    fn leave(&self, id: u64) {
        if let Ok(mut w) = self.waiting.lock() {
            w.queue.retain(|(i, _)| *i != id);
        }
    }

    fn evict_oldest(&self) {
        let oldest = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.queue.pop_front());
        if let Some((_, n)) = oldest {
            n.notify_one();
        }
    }
}

/// The peer's supplementary groups when it connected (`SO_PEERGROUPS`,
/// Linux 4.13); none when they cannot be read.
fn peer_groups(stream: &tokio::net::UnixStream) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    #[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
    const SO_PEERGROUPS: libc::c_int = 0x3d;
    #[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
    const SO_PEERGROUPS: libc::c_int = 59;
    let mut groups = vec![0 as libc::gid_t; 64];
    for _ in 0..2 {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer holds `len` bytes; the kernel writes at most that.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return groups;
        }
        // ERANGE: `len` now says how much room they need.
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || n <= groups.len()
        {
            break;
        }
        groups.resize(n, 0);
    }
    Vec::new()
}

/// Answers a connection that is not served (every slot is busy with a
/// request, or the peer may not use the socket) and closes it.
async fn refuse(stream: tokio::net::UnixStream, message: String) {
    let (_, mut wr) = stream.into_split();
    let mut out = serde_json::to_vec(&Response::error(message)).unwrap_or_default();
    out.push(b'\n');
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&out)).await;
}

async fn connection(
    stream: tokio::net::UnixStream,
    access: Access,
    handler: Arc<dyn Handler>,
    serves: &crate::instance::Instance,
    idle: &Idle,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = u64::try_from(MAX_REQUEST_BYTES).unwrap_or(u64::MAX) + 1;
        let mut bounded = (&mut rd).take(limit);
        // Idle until the request's first byte arrives (and may be evicted
        // then); the whole request within REQUEST_TIMEOUT either way.
        let Some((id, evicted)) = idle.enter() else {
            return Ok(());
        };
        let read = tokio::select! {
            r = tokio::time::timeout(REQUEST_TIMEOUT, bounded.read_until(b'\n', &mut line)) => r,
            () = evicted.notified() => {
                idle.leave(id);
                return Ok(());
            }
        };
        idle.leave(id);
        let n = match read {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let too_long = line.last() != Some(&b'\n') && line.len() > MAX_REQUEST_BYTES;
        let resp = if too_long {
            Response::error(format!("request longer than {MAX_REQUEST_BYTES} bytes"))
        } else {
            match serde_json::from_slice::<Envelope>(&line) {
                Ok(env) if !serves.same_pins(&env.pin_dir) => Response::WrongInstance {
                    serves: serves.pin_dir.clone(),
                },
                Ok(env) if env.request.needs() > access => {
                    log::warn!(
                        "control socket: refused `{}` to a read-only peer",
                        env.request.command()
                    );
                    Response::error(env.request.refused_for(access).unwrap_or_default())
                }
                Ok(env) => {
                    let h = Arc::clone(&handler);
                    tokio::task::spawn_blocking(move || h.handle(env.request))
                        .await
                        .unwrap_or_else(|e| {
                            Response::error(format!("agent failed handling the request: {e}"))
                        })
                }
                Err(e) => Response::error(format!("bad request: {e}")),
            }
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_else(|_| {
            br#"{"Error":{"message":"the agent produced an unserializable response"}}"#.to_vec()
        });
        out.push(b'\n');
        wr.write_all(&out).await?;
        if too_long {
            // The rest of that line is still in flight; resyncing is not worth it.
            return Ok(());
        }
    }
}

/// The CLI's side: requests to the agent of one instance (its socket, and
/// its pin directory, which the agent checks it serves).
#[derive(Debug, Clone)]
pub struct Client {
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    pub timeout: Duration,
}

impl Client {
    pub fn new(inst: &crate::instance::Instance) -> Self {
        Client {
            socket: inst.socket.clone(),
            pin_dir: inst.pin_dir.clone(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sends one request and waits for its answer.
    pub fn call(&self, req: &Request) -> Result<Response, ControlError> {
        let env = Envelope {
            pin_dir: self.pin_dir.clone(),
            request: req.clone(),
        };
        match call_timeout(&self.socket, &env, self.timeout)? {
            Response::WrongInstance { serves } => Err(ControlError::WrongInstance {
                path: self.socket.clone(),
                serves,
                wanted: self.pin_dir.clone(),
            }),
            r => Ok(r),
        }
    }

    /// The agent's answer, or None when no agent runs on the socket (the
    /// caller then acts on the maps and the store itself).
    pub fn try_call(&self, req: &Request) -> Result<Option<Response>, ControlError> {
        match self.call(req) {
            Ok(r) => Ok(Some(r)),
            Err(ControlError::NotRunning { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Sends one envelope on `path` and waits for the answer, `timeout` for
/// connect, send and answer each.
pub fn call_timeout(
    path: &Path,
    env: &Envelope,
    timeout: Duration,
) -> Result<Response, ControlError> {
    use std::io::ErrorKind as K;
    let not_running = || ControlError::NotRunning {
        path: path.to_owned(),
    };
    let timed_out = |e: std::io::Error, op| {
        if matches!(e.kind(), K::WouldBlock | K::TimedOut) {
            ControlError::Timeout {
                path: path.to_owned(),
                timeout,
            }
        } else {
            io_err(path, op)(e)
        }
    };
    let mut stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), K::NotFound | K::ConnectionRefused) => {
            return Err(not_running());
        }
        Err(e) => return Err(io_err(path, "connect")(e)),
    };
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(io_err(path, "set timeout"))?;
    let mut line = serde_json::to_vec(env).map_err(|e| ControlError::Protocol {
        path: path.to_owned(),
        message: format!("encoding request: {e}"),
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| timed_out(e, "send"))?;
    let mut answer = Vec::new();
    BufReader::new(stream.take(MAX_RESPONSE_BYTES))
        .read_until(b'\n', &mut answer)
        .map_err(|e| timed_out(e, "receive"))?;
    if answer.last() != Some(&b'\n') {
        return Err(ControlError::Protocol {
            path: path.to_owned(),
            message: if answer.is_empty() {
                "the agent closed the connection without answering".into()
            } else {
                "truncated answer".into()
            },
        });
    }
    serde_json::from_slice(&answer).map_err(|e| ControlError::Protocol {
        path: path.to_owned(),
        message: format!("bad answer: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ban::Origin;

    fn every_request() -> Vec<Request> {
        let mb = ManualBan {
            net: "198.51.100.0/24".parse().unwrap(),
            length_secs: Some(600),
            ports: vec![25],
            origin: Origin::Manual,
            reason: None,
            force: false,
            replace: false,
        };
        let spec = ImportSpec {
            origin: Origin::Manual,
            source: "-".into(),
            length_secs: None,
            ports: Vec::new(),
            reason: None,
            force: false,
        };
        let t = || "192.0.2.7".to_string();
        vec![
            Request::Status { jail: None },
            Request::AgentStatus,
            Request::Explain { target: t() },
            Request::List,
            Request::Ban(mb),
            Request::Unban { target: t() },
            Request::ImportBegin(spec),
            Request::ImportPart {
                id: 1,
                nets: vec![t()],
            },
            Request::ImportCommit { id: 1 },
            Request::AllowAdd { target: t() },
            Request::AllowDel { target: t() },
            Request::Reload,
            Request::Stop,
            Request::Ping,
        ]
    }

    #[test]
    fn only_requests_that_change_nothing_are_read_only() {
        let (ro, full): (Vec<_>, Vec<_>) = every_request()
            .into_iter()
            .partition(|r| r.needs() == Access::ReadOnly);
        let cmds = |v: &[Request]| v.iter().map(Request::command).collect::<Vec<_>>();
        assert_eq!(cmds(&ro), ["status", "status", "explain", "list", "ping"]);
        assert_eq!(
            cmds(&full),
            [
                "ban",
                "unban",
                "ban --file",
                "ban --file",
                "ban --file",
                "allow add",
                "allow del",
                "reload",
                "detach --stop-agent"
            ]
        );
    }

    #[test]
    fn a_read_only_peer_is_told_what_needs_root() {
        for r in every_request() {
            assert_eq!(r.refused_for(Access::Full), None, "{r:?}");
            match r.needs() {
                Access::ReadOnly => assert_eq!(r.refused_for(Access::ReadOnly), None),
                Access::Full => assert_eq!(
                    r.refused_for(Access::ReadOnly),
                    Some(format!("read-only access: `{}` needs root", r.command()))
                ),
            }
        }
        assert_eq!(
            Request::Unban {
                target: "192.0.2.7".into()
            }
            .refused_for(Access::ReadOnly)
            .as_deref(),
            Some("read-only access: `unban` needs root")
        );
    }
}
