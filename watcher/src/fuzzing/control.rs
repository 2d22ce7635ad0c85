//! The control socket's protocol: request lines decoded as the server does
//! (size limit, [`Envelope`], the pin directory check), answered by the
//! agent's own handler (a dry-run agent: every request runs, nothing is
//! written), and answers encoded and decoded as the client does.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use crate::{
    agent::{Agent, Engine},
    ban::{BanService, Persist, describe},
    control::{Envelope, MAX_REQUEST_BYTES, Request, Response},
    instance::Instance,
};

/// The pin directory the fuzzed agent serves: not a bpffs directory and
/// never created, so whatever reads maps finds none.
pub const PINS: &str = "/nonexistent/f2x-fuzz/pins";

fn agent() -> &'static Arc<Agent> {
    static AGENT: OnceLock<Arc<Agent>> = OnceLock::new();
    AGENT.get_or_init(|| {
        let cfg = crate::config::builtin().expect("the built-in configuration");
        let service = Arc::new(BanService::new(
            None,
            None,
            Persist::Sync,
            Engine::policy(&cfg),
            Vec::new(),
        ));
        let engine = Engine::new(cfg, Arc::clone(&service));
        // The run loop's ends of these channels: nobody listens.
        let (resync, _) = tokio::sync::mpsc::unbounded_channel();
        let (stop, _) = tokio::sync::mpsc::unbounded_channel();
        let base = Path::new(PINS).parent().unwrap_or(Path::new("/"));
        let instance = Instance {
            name: "f2x-fuzz".into(),
            pin_dir: PathBuf::from(PINS),
            state_dir: base.join("state"),
            socket: base.join("control.sock"),
        };
        Arc::new(Agent::new(
            instance,
            engine,
            service,
            None,
            Vec::new(),
            resync,
            stop,
        ))
    })
}

pub(super) fn prepare() {
    let _ = agent();
}

/// Input: what a client sends on one connection (request lines).
pub fn control(data: &[u8]) {
    let agent = agent();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let resp = answer(agent, line);
        // The client reads the answer line back.
        let wire = serde_json::to_vec(&resp).expect("an answer encodes");
        assert!(!wire.contains(&b'\n'), "an answer spans lines");
        let back: Response = serde_json::from_slice(&wire).expect("an answer decodes");
        assert_eq!(back, resp, "the answer changes on the wire");
    }
}

fn answer(agent: &Arc<Agent>, line: &[u8]) -> Response {
    if line.len() > MAX_REQUEST_BYTES {
        return Response::error("request too long");
    }
    let env = match serde_json::from_slice::<Envelope>(line) {
        Ok(env) => env,
        Err(e) => return Response::error(format!("bad request: {e}")),
    };
    // What the client sends decodes to what it meant.
    let wire = serde_json::to_vec(&env).expect("a request encodes");
    let back: Envelope = serde_json::from_slice(&wire).expect("an encoded request decodes");
    assert_eq!(back, env, "the request changes on the wire");
    if !agent.instance.same_pins(&env.pin_dir) {
        return Response::WrongInstance {
            serves: agent.instance.pin_dir.clone(),
        };
    }
    // A dry-run agent refuses bans before looking at them: what an agent
    // with maps would do with one goes through the ban service here.
    match &env.request {
        Request::Ban(mb) => {
            if let Ok(order) = mb.order() {
                for o in agent.service.ban(vec![order]) {
                    let _ = describe(&o);
                }
            }
        }
        Request::ImportBegin(spec) if spec.check().is_ok() => {
            let _ = agent.service.import(spec, &[]);
        }
        _ => {}
    }
    agent.apply(env.request)
}
