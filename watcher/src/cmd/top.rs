//! `fail2xdp top`: a live view, refreshed every second, of what the data
//! plane drops and passes, the banned sources dropping the most right now
//! (from the per-ban counters), bans by origin, failures by jail and map
//! fill. The agent's part comes from the agent (its cheap status); the data
//! plane's is read from the pinned maps, so `top` works with no agent too.
//! Keys: ↑/↓ (k/j) select, s cycles the sort, Enter (e) explains the
//! selected address, Esc closes, q quits.
use std::{
    io::{self, IsTerminal},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fail2xdp::{
    census::DropLedger,
    control::{Client, Request, Response},
    enforcer::{BanInfo, Enforcer, EnforcerError},
    instance::Instance,
    status::{AgentStatus, Status},
};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use super::top_view::{Model, Sort};

pub struct TopOptions {
    pub interval: Duration,
}

/// One look at the instance.
pub struct Look {
    pub at: Instant,
    pub status: Status,
    pub bans: Vec<BanInfo>,
}

/// Reads the instance: the agent's status if one answers, the maps' own.
fn look(inst: &Instance, client: &Client) -> Look {
    let agent: Option<AgentStatus> = match client.try_call(&Request::AgentStatus) {
        Ok(Some(Response::Json(v))) => serde_json::from_value(v).ok(),
        _ => None,
    };
    let status = Status::gather(inst, agent);
    let bans = match Enforcer::open(&inst.pin_dir) {
        Ok(e) => e.list().unwrap_or_default(),
        Err(EnforcerError::NotPinned(_)) | Err(_) => Vec::new(),
    };
    Look {
        at: Instant::now(),
        status,
        bans,
    }
}

pub fn run(inst: &Instance, o: TopOptions) -> Result<ExitCode> {
    if !io::stdout().is_terminal() {
        bail!(
            "top needs a terminal; `fail2xdp status --json` and `list --json` are its pipe-friendly siblings"
        );
    }
    let client = Client::new(inst);
    let mut ledger = DropLedger::default();
    let mut model = Model::default();
    let first = look(inst, &client);
    model.update(&first, &mut ledger);
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let result = (|| -> Result<()> {
        let mut next = Instant::now() + o.interval;
        loop {
            terminal.draw(|f| model.draw(f))?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()?
                    && k.kind != KeyEventKind::Release
                {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    match k.code {
                        _ if ctrl_c => return Ok(()),
                        KeyCode::Char('q') => return Ok(()),
                        KeyCode::Esc if model.explaining() => model.close(),
                        KeyCode::Esc => return Ok(()),
                        KeyCode::Up | KeyCode::Char('k') => model.select(-1),
                        KeyCode::Down | KeyCode::Char('j') => model.select(1),
                        KeyCode::PageUp => model.select(-10),
                        KeyCode::PageDown => model.select(10),
                        KeyCode::Char('s') => model.sort = model.sort.next(),
                        KeyCode::Char('S') => model.sort = Sort::DropsPerSec,
                        KeyCode::Enter | KeyCode::Char('e') => {
                            if model.explaining() {
                                model.close();
                            } else if let Some(net) = model.selected() {
                                let text = match super::show::explanation(inst, net) {
                                    Ok(x) => x.to_string(),
                                    Err(e) => format!("explaining {net}: {e:#}"),
                                };
                                model.explain(net, text);
                            }
                        }
                        _ => {}
                    }
                }
                continue;
            }
            let l = look(inst, &client);
            model.update(&l, &mut ledger);
            next = Instant::now() + o.interval;
        }
    })();
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}
