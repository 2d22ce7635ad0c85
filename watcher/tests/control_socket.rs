//! Control socket: permissions, stale/live socket handling, NotRunning,
//! request/response roundtrip, bad input, timeouts.
use std::{
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fail2xdp::{
    ban::{ManualBan, Origin},
    control::{self, Client, ControlError, Envelope, Handler, Request, Response},
};

/// The pin directory the test servers serve.
const PINS: &str = "/sys/fs/bpf/f2x-control-test";

fn client(path: &Path) -> Client {
    Client {
        socket: path.to_owned(),
        pin_dir: PINS.into(),
        timeout: control::DEFAULT_TIMEOUT,
    }
}

fn call(path: &Path, req: &Request) -> Result<Response, ControlError> {
    client(path).call(req)
}

/// Answers every request with the request itself as JSON and records it.
#[derive(Default)]
struct Echo {
    seen: Mutex<Vec<Request>>,
}

impl Handler for Echo {
    fn handle(&self, req: Request) -> Response {
        self.seen.lock().unwrap().push(req.clone());
        match req {
            Request::Reload => Response::ok("reloaded"),
            Request::Unban { target } if target == "bad" => Response::error("no such ban"),
            Request::Status { jail: Some(j) } if j == "slow" => {
                std::thread::sleep(Duration::from_secs(3));
                Response::ok("late")
            }
            other => Response::Json(serde_json::to_value(other).unwrap()),
        }
    }
}

/// An agent-side server on its own runtime thread; dropping it stops the
/// server (and removes the socket).
struct Server {
    rt: Option<tokio::runtime::Runtime>,
    handler: Arc<Echo>,
    path: PathBuf,
}

impl Server {
    fn start(path: &Path) -> Result<Server, ControlError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handler = Arc::new(Echo::default());
        let listener = {
            let _g = rt.enter();
            control::bind(path)?
        };
        let h: Arc<dyn Handler> = handler.clone();
        // Stopped by dropping the runtime.
        let forever = std::future::pending();
        rt.spawn(async move { listener.serve(h, PINS.into(), forever).await });
        Ok(Server {
            rt: Some(rt),
            handler,
            path: path.to_owned(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn sock(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("agent.sock")
}

/// Stops the server it answers when asked to, as the agent does.
struct Stopper(Mutex<Option<tokio::sync::oneshot::Sender<()>>>);

impl Handler for Stopper {
    fn handle(&self, req: Request) -> Response {
        if req != Request::Stop {
            return Response::ok("");
        }
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(());
        }
        // The agent's loop is already winding down while this answer is
        // still on its way: give it the head start it had in CI.
        std::thread::sleep(Duration::from_millis(100));
        Response::ok("stopping")
    }
}

/// `detach --stop-agent` failed in CI with "the agent closed the connection
/// without answering": the run loop ended on the `Stop` it was handling and
/// the process exited before the answer was written. The runtime here is
/// dropped the moment `serve` returns, as the process exits then.
#[test]
fn a_stop_is_answered_before_the_server_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = {
        let _g = rt.enter();
        control::bind(&path).unwrap()
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let h: Arc<dyn Handler> = Arc::new(Stopper(Mutex::new(Some(tx))));
    let serving = std::thread::spawn(move || {
        let shutdown = async {
            let _ = rx.await;
        };
        let r = rt.block_on(listener.serve(h, PINS.into(), shutdown));
        drop(rt);
        r
    });
    // An idle connection must not hold the stop up for its request timeout.
    let idle = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let t = Instant::now();
    assert_eq!(
        call(&path, &Request::Stop).unwrap(),
        Response::ok("stopping")
    );
    serving.join().unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        matches!(
            call(&path, &Request::Ping),
            Err(ControlError::NotRunning { .. })
        ),
        "the socket still answers after the server stopped"
    );
    drop(idle);
}

#[test]
fn roundtrip_of_every_request_kind() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&sock(&dir)).unwrap();
    let reqs = [
        Request::Status { jail: None },
        Request::Status {
            jail: Some("postfix".into()),
        },
        Request::Explain {
            target: "192.0.2.7".into(),
        },
        Request::Ban(ManualBan {
            net: "198.51.100.0/24".parse().unwrap(),
            length_secs: Some(600),
            ports: vec![25, 587],
            origin: Origin::Manual,
            reason: Some("spam run \"quoted\"\nnewline".into()),
            force: true,
            replace: false,
        }),
        Request::Unban {
            target: "2001:db8::1".into(),
        },
        Request::List,
    ];
    for r in &reqs {
        let back = call(&srv.path, r).unwrap();
        assert_eq!(back, Response::Json(serde_json::to_value(r).unwrap()));
    }
    assert_eq!(
        call(&srv.path, &Request::Reload).unwrap(),
        Response::ok("reloaded")
    );
    assert_eq!(
        call(
            &srv.path,
            &Request::Unban {
                target: "bad".into()
            }
        )
        .unwrap(),
        Response::error("no such ban")
    );
    let seen = srv.handler.seen.lock().unwrap();
    assert_eq!(&seen[..reqs.len()], &reqs[..]);
}

#[test]
fn socket_is_root_only_and_removed_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let srv = Server::start(&path).unwrap();
    let m = std::fs::metadata(&path).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    drop(srv);
    assert!(!path.exists(), "stopped agent left its socket behind");
    assert!(matches!(
        call(&path, &Request::List),
        Err(ControlError::NotRunning { .. })
    ));
}

#[test]
fn not_running_when_absent_or_stale() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    assert!(matches!(
        call(&path, &Request::Reload),
        Err(ControlError::NotRunning { .. })
    ));
    // A socket file nobody listens on (agent killed with SIGKILL).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    assert!(matches!(
        call(&path, &Request::Reload),
        Err(ControlError::NotRunning { .. })
    ));
    // try_call maps that to "no agent".
    assert!(client(&path).try_call(&Request::List).unwrap().is_none());
    // A new agent replaces the stale socket and answers.
    let _srv = Server::start(&path).unwrap();
    assert!(client(&path).try_call(&Request::List).unwrap().is_some());
}

/// `--pin-dir X ban ADDR` talked to whatever agent listened on the socket:
/// with two instances the ban went to the other one's maps. The agent now
/// refuses a request addressed to pins it does not serve, before its
/// handler sees it.
#[test]
fn a_request_for_another_instances_pins_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&sock(&dir)).unwrap();
    let other = Client {
        pin_dir: "/sys/fs/bpf/some-other-instance".into(),
        ..client(&srv.path)
    };
    match other.call(&Request::List) {
        Err(e @ ControlError::WrongInstance { .. }) => {
            let m = e.to_string();
            assert!(m.contains(PINS) && m.contains("some-other-instance"), "{m}");
        }
        other => panic!("served another instance's request: {other:?}"),
    }
    assert!(srv.handler.seen.lock().unwrap().is_empty());
    // The same pins, spelled with a trailing slash, are this instance's.
    let same = Client {
        pin_dir: format!("{PINS}/").into(),
        ..client(&srv.path)
    };
    assert!(same.call(&Request::List).is_ok());
}

#[test]
fn second_agent_is_refused_and_first_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let _first = Server::start(&path).unwrap();
    match Server::start(&path) {
        Err(ControlError::AlreadyRunning { .. }) => {}
        Err(e) => panic!("expected AlreadyRunning, got {e}"),
        Ok(_) => panic!("second agent bound a live socket"),
    }
    assert_eq!(
        call(&path, &Request::Reload).unwrap(),
        Response::ok("reloaded")
    );
}

#[test]
fn a_regular_file_at_the_socket_path_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    std::fs::write(&path, b"precious").unwrap();
    match Server::start(&path) {
        Err(ControlError::NotASocket { .. }) => {}
        Err(e) => panic!("expected NotASocket, got {e}"),
        Ok(_) => panic!("replaced a regular file"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn garbage_and_oversized_requests_get_errors_not_a_dead_agent() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&sock(&dir)).unwrap();
    let s = std::os::unix::net::UnixStream::connect(&srv.path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    for bad in [
        "{not json}\n",
        "{\"Ban\":{}}\n",
        "\"Nope\"\n",
        "\u{0}\u{1}\n",
    ] {
        w.write_all(bad.as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        let resp: Response = serde_json::from_str(&line).unwrap();
        assert!(matches!(resp, Response::Error { .. }), "{bad:?} -> {line}");
    }
    // Same connection still serves a good request.
    let good = serde_json::to_string(&Envelope {
        pin_dir: PINS.into(),
        request: Request::Reload,
    })
    .unwrap();
    w.write_all(format!("{good}\n").as_bytes()).unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(
        serde_json::from_str::<Response>(&line).unwrap(),
        Response::ok("reloaded")
    );

    // An endless line is cut off with an error; the agent keeps serving others.
    let huge = vec![b'a'; control::MAX_REQUEST_BYTES * 4];
    let _ = w.write_all(&huge);
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("longer than"), "{line}");
    assert_eq!(
        call(&srv.path, &Request::Reload).unwrap(),
        Response::ok("reloaded")
    );
}

#[test]
fn slow_agent_times_out_instead_of_hanging_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&sock(&dir)).unwrap();
    let t = Instant::now();
    let slow = Client {
        timeout: Duration::from_millis(300),
        ..client(&srv.path)
    };
    let r = slow.call(&Request::Status {
        jail: Some("slow".into()),
    });
    assert!(matches!(r, Err(ControlError::Timeout { .. })), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
    // Meanwhile other clients are served.
    assert_eq!(
        call(&srv.path, &Request::Reload).unwrap(),
        Response::ok("reloaded")
    );
}

/// Child side of `other_users_cannot_steer_the_agent`, run as uid 65534.
#[test]
#[ignore = "helper process for other_users_cannot_steer_the_agent"]
fn unprivileged_client() {
    let path = std::env::var("FAIL2XDP_CTL_CHILD_SOCK").expect(
        "the client half of other_users_cannot_steer_the_agent, run by it with FAIL2XDP_CTL_CHILD_SOCK set",
    );
    let env = Envelope {
        pin_dir: PINS.into(),
        request: Request::Reload,
    };
    match control::call_timeout(Path::new(&path), &env, Duration::from_secs(5)) {
        Ok(r) => println!("\nANSWERED {r:?}"),
        Err(ControlError::NotRunning { .. }) => println!("\nNOTRUNNING"),
        Err(e) => println!("\nREFUSED {e}"),
    }
}

fn run_as_nobody(exe: &Path, path: &Path) -> String {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "unprivileged_client",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FAIL2XDP_CTL_CHILD_SOCK", path)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| {
            l.starts_with("ANSWERED") || l.starts_with("NOTRUNNING") || l.starts_with("REFUSED")
        })
        .unwrap_or_else(|| {
            panic!(
                "child said nothing: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

#[test]
fn other_users_cannot_steer_the_agent() {
    assert_eq!(
        // SAFETY: geteuid takes no arguments and cannot fail.
        unsafe { libc::geteuid() },
        0,
        "this test needs root, to run its client as uid 65534 (cargo xtask test runs as root)"
    );
    // The client runs as uid 65534, which cannot reach a test binary under a
    // 0700 home: it runs a copy in a directory everybody may enter.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("control-socket-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = sock(&dir);
    let srv = Server::start(&path).unwrap();
    // Mode 0600: connect itself is refused, and that is an error, not "no agent".
    let r = run_as_nobody(&exe, &path);
    assert!(r.starts_with("REFUSED"), "{r}");
    // Even if the socket were world-writable (the instant between bind and
    // chmod), the peer check refuses to serve another user: it says so
    // (the one answer it gets), and the handler never runs.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = run_as_nobody(&exe, &path);
    assert!(
        r.starts_with("REFUSED")
            || (r.starts_with("ANSWERED Error") && r.contains("uid 65534 may not use this socket")),
        "{r}"
    );
    assert!(
        srv.handler.seen.lock().unwrap().is_empty(),
        "handler ran for uid 65534"
    );
}

/// Raises this process's descriptor limit to `n` (up to the hard limit).
fn allow_fds(n: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = n.min(r.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

/// 32 idle connections made `status` wait 31.5 s (and the CLI fall back to
/// map-only output): the accept loop waited for a free slot. Now 1,000
/// connections that send nothing cannot lock a client out, a 10 MB
/// request is cut off at the limit, and the agent goes on answering.
#[test]
fn idle_floods_and_huge_requests_cannot_stall_the_socket() {
    use std::io::{BufRead, BufReader, Write};
    allow_fds(4096);
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&sock(&dir)).unwrap();
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(std::os::unix::net::UnixStream::connect(&srv.path).unwrap());
    }
    let t = Instant::now();
    for _ in 0..5 {
        assert_eq!(
            call(&srv.path, &Request::Reload).unwrap(),
            Response::ok("reloaded")
        );
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "5 requests behind 1,000 idle connections took {:?}",
        t.elapsed()
    );
    drop(idle);

    // 10 MB in one line: refused at the limit, the connection closed.
    let s = std::os::unix::net::UnixStream::connect(&srv.path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            if w.write_all(&chunk).is_err() {
                break; // closed by the agent: what it should do
            }
        }
    });
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("longer than"), "{line}");
    writer.join().unwrap();
    assert_eq!(
        call(&srv.path, &Request::Reload).unwrap(),
        Response::ok("reloaded")
    );
}
