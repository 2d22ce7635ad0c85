//! What `fail2xdp top` shows: rates from two looks at the instance, and
//! their drawing (ratatui).
use std::{collections::HashMap, time::Instant};

use fail2xdp::{
    addr::{IpNet, format_duration},
    census::{DropLedger, Family, Group},
    enforcer::MapFill,
    state::printable,
    status::{Counters, ProtectionState},
};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap},
};

use super::top::Look;

/// How the banned sources are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Dropping the most right now.
    #[default]
    DropsPerSec,
    /// Dropped the most since banned.
    Drops,
    /// Least time left first.
    Remaining,
    Address,
}

impl Sort {
    pub fn next(self) -> Sort {
        match self {
            Sort::DropsPerSec => Sort::Drops,
            Sort::Drops => Sort::Remaining,
            Sort::Remaining => Sort::Address,
            Sort::Address => Sort::DropsPerSec,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Sort::DropsPerSec => "drops/s",
            Sort::Drops => "drops",
            Sort::Remaining => "remaining",
            Sort::Address => "address",
        }
    }
}

/// One banned source.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub net: IpNet,
    pub origin: String,
    pub per_sec: f64,
    pub drops: u64,
    pub remaining_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JailRow {
    pub name: String,
    pub per_sec: f64,
    pub failures: u64,
    pub bans: usize,
    pub tracked: usize,
}

/// Rows of the banned-sources table at most (the busiest, in the sort).
const MAX_ROWS: usize = 500;

#[derive(Default)]
pub struct Model {
    pub sort: Sort,
    title: String,
    problems: Vec<String>,
    state: Option<ProtectionState>,
    agent: bool,
    pass_pps: f64,
    drop_pps: f64,
    pass_bps: f64,
    drop_bps: f64,
    sources: Vec<Source>,
    origins: Vec<((String, Family), Group)>,
    jails: Vec<JailRow>,
    maps: Vec<MapFill>,
    prev: Option<(Instant, Counters, HashMap<String, u64>)>,
    selected: Option<IpNet>,
    table: TableState,
    explain: Option<(IpNet, String)>,
}

fn rate(now: u64, before: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        now.saturating_sub(before) as f64 / secs
    }
}

impl Model {
    /// Takes a new look: rates against the previous one.
    pub fn update(&mut self, l: &Look, ledger: &mut DropLedger) {
        let st = &l.status;
        let counters = st.data_plane.counters.unwrap_or_default();
        let failures: HashMap<String, u64> = st
            .agent
            .iter()
            .flat_map(|a| a.jails.iter().map(|j| (j.name.clone(), j.failures)))
            .collect();
        let secs = self
            .prev
            .as_ref()
            .map_or(0.0, |(t, _, _)| l.at.duration_since(*t).as_secs_f64());
        let (pc, pf) = match &self.prev {
            Some((_, c, f)) => (*c, f.clone()),
            None => (counters, failures.clone()),
        };
        self.pass_pps = rate(counters.pass_pkts, pc.pass_pkts, secs);
        self.drop_pps = rate(counters.drop_pkts, pc.drop_pkts, secs);
        self.pass_bps = rate(counters.pass_bytes, pc.pass_bytes, secs) * 8.0;
        self.drop_bps = rate(counters.drop_bytes, pc.drop_bytes, secs) * 8.0;
        let first = self.prev.is_none();
        let rates = ledger.update(&l.bans);
        self.sources = rates
            .into_iter()
            .map(|r| Source {
                net: r.net,
                origin: r.origin,
                // The first look has no interval: nothing is "now" yet.
                per_sec: if first { 0.0 } else { rate(r.delta, 0, secs) },
                drops: r.drops,
                remaining_secs: r.remaining_secs,
            })
            .collect();
        self.origins = ledger.groups(&l.bans).into_iter().collect();
        self.jails = st
            .agent
            .iter()
            .flat_map(|a| a.jails.iter())
            .map(|j| JailRow {
                name: j.name.clone(),
                per_sec: rate(
                    j.failures,
                    pf.get(&j.name).copied().unwrap_or(j.failures),
                    secs,
                ),
                failures: j.failures,
                bans: j.current_bans,
                tracked: j.tracked_hosts,
            })
            .collect();
        self.maps = st.data_plane.maps.clone();
        self.state = Some(st.protection.state);
        self.problems = st.protection.problems.clone();
        self.agent = st.agent.is_some();
        self.title = match &st.agent {
            Some(a) => format!(
                "fail2xdp top: instance {}, agent pid {} up {}",
                st.instance.name,
                a.pid,
                format_duration(std::time::Duration::from_secs(a.uptime_secs))
            ),
            None => format!(
                "fail2xdp top: instance {}, no agent runs (bans and counters from the maps)",
                st.instance.name
            ),
        };
        self.prev = Some((l.at, counters, failures));
        self.order();
    }

    fn order(&mut self) {
        let key = self.sort;
        self.sources.sort_by(|a, b| match key {
            Sort::DropsPerSec => b.per_sec.total_cmp(&a.per_sec).then(b.drops.cmp(&a.drops)),
            Sort::Drops => b.drops.cmp(&a.drops),
            Sort::Remaining => a
                .remaining_secs
                .unwrap_or(u64::MAX)
                .cmp(&b.remaining_secs.unwrap_or(u64::MAX)),
            Sort::Address => a.net.cmp(&b.net),
        });
        self.sources.truncate(MAX_ROWS);
        let idx = self
            .selected
            .and_then(|n| self.sources.iter().position(|s| s.net == n));
        match idx {
            Some(i) => self.table.select(Some(i)),
            None if self.sources.is_empty() => {
                self.table.select(None);
                self.selected = None;
            }
            None => {
                self.table.select(Some(0));
                self.selected = Some(self.sources[0].net);
            }
        }
    }

    pub fn select(&mut self, by: i64) {
        if self.sources.is_empty() {
            return;
        }
        let cur = self.table.selected().unwrap_or(0) as i64;
        let i = (cur + by).clamp(0, self.sources.len() as i64 - 1) as usize;
        self.table.select(Some(i));
        self.selected = Some(self.sources[i].net);
    }

    pub fn selected(&self) -> Option<IpNet> {
        self.selected
    }

    pub fn explain(&mut self, net: IpNet, text: String) {
        self.explain = Some((net, text));
    }

    pub fn explaining(&self) -> bool {
        self.explain.is_some()
    }

    pub fn close(&mut self) {
        self.explain = None;
    }

    pub fn draw(&mut self, f: &mut Frame) {
        // Sorting may have changed with a key press since the last look.
        self.order();
        let [head, traffic, middle, bottom, keys] = Layout::vertical([
            Constraint::Length(1 + self.problems.len().min(3) as u16),
            Constraint::Length(3),
            Constraint::Min(6),
            Constraint::Length((self.jails.len().max(self.maps.len()) as u16 + 3).min(14)),
            Constraint::Length(1),
        ])
        .areas(f.area());
        self.draw_head(f, head);
        self.draw_traffic(f, traffic);
        let [sources, origins] =
            Layout::horizontal([Constraint::Percentage(68), Constraint::Percentage(32)])
                .areas(middle);
        self.draw_sources(f, sources);
        self.draw_origins(f, origins);
        let [jails, maps] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
                .areas(bottom);
        self.draw_jails(f, jails);
        self.draw_maps(f, maps);
        f.render_widget(
            Paragraph::new(format!(
                " q quit  ↑/↓ select  s sort ({})  Enter explain  Esc close",
                self.sort.label()
            ))
            .style(Style::default().add_modifier(Modifier::REVERSED)),
            keys,
        );
        if let Some((net, text)) = &self.explain {
            let area = centered(f.area(), 80, 70);
            f.render_widget(Clear, area);
            f.render_widget(
                // Line by line: newlines stay, anything else a log line
                // carried in is escaped.
                Paragraph::new(
                    text.lines()
                        .map(|l| Line::from(printable(l).into_owned()))
                        .collect::<Vec<_>>(),
                )
                .wrap(Wrap { trim: false })
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(format!(" explain {net} (Esc closes) ")),
                ),
                area,
            );
        }
    }

    fn draw_head(&self, f: &mut Frame, area: Rect) {
        let (label, color) = match self.state {
            Some(ProtectionState::Enforcing) => ("enforcing", Color::Green),
            Some(ProtectionState::Degraded) => ("DEGRADED", Color::Yellow),
            Some(ProtectionState::Off) | None => ("OFF", Color::Red),
        };
        let mut lines = vec![Line::from(vec![
            Span::raw(format!("{}  protection: ", self.title)),
            Span::styled(
                label,
                Style::default().fg(color).add_modifier(Modifier::BOLD),
            ),
        ])];
        for p in self.problems.iter().take(3) {
            lines.push(Line::from(format!("  ! {p}")));
        }
        f.render_widget(Paragraph::new(lines), area);
    }

    fn draw_traffic(&self, f: &mut Frame, area: Rect) {
        let text = format!(
            "passed {:>10.0} pkt/s {:>12}   dropped {:>10.0} pkt/s {:>12}",
            self.pass_pps,
            bits(self.pass_bps),
            self.drop_pps,
            bits(self.drop_bps)
        );
        f.render_widget(
            Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" XDP ")),
            area,
        );
    }

    fn draw_sources(&mut self, f: &mut Frame, area: Rect) {
        let rows = self.sources.iter().map(|s| {
            Row::new(vec![
                Cell::from(net_text(&s.net)),
                Cell::from(printable(&s.origin).into_owned()),
                Cell::from(format!("{:.0}", s.per_sec)),
                Cell::from(s.drops.to_string()),
                Cell::from(s.remaining_secs.map_or_else(
                    || "permanent".into(),
                    |r| format_duration(std::time::Duration::from_secs(r.max(1))),
                )),
            ])
        });
        let t = Table::new(
            rows,
            [
                Constraint::Min(18),
                Constraint::Length(18),
                Constraint::Length(10),
                Constraint::Length(12),
                Constraint::Length(12),
            ],
        )
        .header(
            Row::new(vec!["ADDRESS", "ORIGIN", "DROPS/S", "DROPS", "REMAINING"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ")
        .block(Block::default().borders(Borders::ALL).title(format!(
            " banned sources ({}), by {} ",
            self.sources.len(),
            self.sort.label()
        )));
        f.render_stateful_widget(t, area, &mut self.table);
    }

    fn draw_origins(&self, f: &mut Frame, area: Rect) {
        let rows = self.origins.iter().map(|((o, fam), g)| {
            Row::new(vec![
                Cell::from(printable(o).into_owned()),
                Cell::from(fam.as_str()),
                Cell::from(g.active.to_string()),
                Cell::from(g.dropped.to_string()),
            ])
        });
        let t = Table::new(
            rows,
            [
                Constraint::Min(10),
                Constraint::Length(5),
                Constraint::Length(8),
                Constraint::Length(12),
            ],
        )
        .header(
            Row::new(vec!["ORIGIN", "FAM", "BANS", "DROPPED"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" bans by origin "),
        );
        f.render_widget(t, area);
    }

    fn draw_jails(&self, f: &mut Frame, area: Rect) {
        let title = if self.agent {
            " jails "
        } else {
            " jails (no agent runs) "
        };
        let rows = self.jails.iter().map(|j| {
            Row::new(vec![
                Cell::from(j.name.clone()),
                Cell::from(format!("{:.1}", j.per_sec)),
                Cell::from(j.failures.to_string()),
                Cell::from(j.bans.to_string()),
                Cell::from(j.tracked.to_string()),
            ])
        });
        let t = Table::new(
            rows,
            [
                Constraint::Min(12),
                Constraint::Length(11),
                Constraint::Length(10),
                Constraint::Length(6),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new(vec!["JAIL", "FAILURES/S", "FAILURES", "BANS", "TRACKED"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::ALL).title(title));
        f.render_widget(t, area);
    }

    fn draw_maps(&self, f: &mut Frame, area: Rect) {
        let rows = self.maps.iter().map(|m| {
            let pct = 100.0 * m.entries as f64 / f64::from(m.capacity.max(1));
            Row::new(vec![
                Cell::from(m.map.to_string()),
                Cell::from(format!("{}/{}", m.entries, m.capacity)),
                Cell::from(format!("{pct:.1}%")),
            ])
            .style(if pct >= 90.0 {
                Style::default().fg(Color::Red)
            } else {
                Style::default()
            })
        });
        let t = Table::new(
            rows,
            [
                Constraint::Length(10),
                Constraint::Min(12),
                Constraint::Length(7),
            ],
        )
        .header(
            Row::new(vec!["MAP", "ENTRIES", "FILL"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::ALL).title(" map fill "));
        f.render_widget(t, area);
    }
}

fn net_text(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn bits(bps: f64) -> String {
    match bps {
        b if b >= 1e9 => format!("{:.2} Gbit/s", b / 1e9),
        b if b >= 1e6 => format!("{:.2} Mbit/s", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kbit/s", b / 1e3),
        b => format!("{b:.0} bit/s"),
    }
}

/// A rectangle of `w`% by `h`% in the middle of `r`.
fn centered(r: Rect, w: u16, h: u16) -> Rect {
    let [_, mid, _] = Layout::vertical([
        Constraint::Percentage((100 - h) / 2),
        Constraint::Percentage(h),
        Constraint::Percentage((100 - h) / 2),
    ])
    .areas(r);
    let [_, c, _] = Layout::horizontal([
        Constraint::Percentage((100 - w) / 2),
        Constraint::Percentage(w),
        Constraint::Percentage((100 - w) / 2),
    ])
    .areas(mid);
    c
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use fail2xdp::{addr::PortSet, enforcer::BanInfo, instance::Instance, status::Status};
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;

    fn ban(net: &str, drops: u64) -> BanInfo {
        BanInfo {
            net: net.parse().unwrap(),
            jail: "sasl".into(),
            remaining: Some(Duration::from_secs(600)),
            expired: false,
            created: SystemTime::now(),
            ports: PortSet::all(),
            drops,
        }
    }

    fn look(at: Instant, bans: Vec<BanInfo>) -> Look {
        let dir = std::env::temp_dir().join("f2x-top-view-test-none");
        let inst = Instance::named("t").unwrap().with(Some(dir), None, None);
        Look {
            at,
            status: Status::gather(&inst, None),
            bans,
        }
    }

    /// The busiest source right now is first, whatever it dropped before.
    #[test]
    fn busiest_now_first_and_sorts_cycle() {
        let mut m = Model::default();
        let mut ledger = DropLedger::default();
        let t0 = Instant::now();
        m.update(
            &look(
                t0,
                vec![ban("203.0.113.1/32", 1000), ban("203.0.113.2/32", 0)],
            ),
            &mut ledger,
        );
        m.update(
            &look(
                t0 + Duration::from_secs(2),
                vec![ban("203.0.113.1/32", 1002), ban("203.0.113.2/32", 400)],
            ),
            &mut ledger,
        );
        assert_eq!(m.sources[0].net.to_string(), "203.0.113.2/32");
        assert_eq!(m.sources[0].per_sec, 200.0);
        // The selection stays on its address as rows move.
        assert_eq!(m.selected().unwrap().to_string(), "203.0.113.1/32");
        m.select(-1);
        assert_eq!(m.selected().unwrap().to_string(), "203.0.113.2/32");
        m.sort = m.sort.next();
        m.order();
        assert_eq!(m.sources[0].net.to_string(), "203.0.113.1/32", "by drops");
        // The selection follows its address, not its row.
        assert_eq!(m.selected().unwrap().to_string(), "203.0.113.2/32");

        let mut term = Terminal::new(TestBackend::new(120, 30)).unwrap();
        term.draw(|f| m.draw(f)).unwrap();
        let screen: String = term
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        assert!(screen.contains("203.0.113.1"), "{screen}");
        assert!(screen.contains("by drops"), "{screen}");
        assert!(screen.contains("no agent runs"), "{screen}");
    }
}
