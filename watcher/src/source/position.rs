//! Where a source has got to, kept across restarts through [`Positions`] (the agent
//! implements it on its state store; this module knows no storage).
//!
//! A position names the lines the consumer is done with, not the lines read: each
//! reader keeps a [`Mark`] per followed file (or one for the journal), and the last
//! chunk of every read carries an [`Ack`] that moves the mark when the chunk is dropped.
//! Chunks still queued when the reader is asked to stop are dropped unread; their acks
//! are ignored, so a restart reads those lines again instead of losing them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Shared;

/// How often a changed position is saved: a `kill -9` repeats at most about this much
/// (plus the reader's wake-up delay) of what was counted.
pub(super) const SAVE_EVERY: Duration = Duration::from_millis(500);

/// A source's position as saved for its next start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The files followed, rotated-away ones still being drained included.
    Files(Vec<FilePosition>),
    /// The cursor of the last journal entry done with.
    Journal { cursor: String },
}

/// One followed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePosition {
    /// Its name when last seen; a file rotated away meanwhile is looked for beside it.
    pub path: PathBuf,
    pub dev: u64,
    pub inode: u64,
    /// Start of the first line not done with.
    pub offset: u64,
    /// `offset` lies inside a line that is not to be read (the reader started at the end
    /// of a file that ended mid-line): skip to the next newline.
    pub mid_line: bool,
    /// The file's first bytes (up to 128), which tell it from a file that got its inode
    /// later, and find the copy of a file truncated meanwhile (copytruncate).
    pub fingerprint: Vec<u8>,
}

pub type PositionError = Box<dyn std::error::Error + Send + Sync>;

/// A source's saved position, e.g. a row of the agent's state store.
pub trait Positions: Send + Sync + std::fmt::Debug {
    /// The position the previous run saved, if any.
    fn load(&self) -> Result<Option<Position>, PositionError>;
    /// Replaces the saved position; durable (survives `kill -9`) when this returns.
    fn save(&self, position: &Position) -> Result<(), PositionError>;
}

/// Where a reader resumes within one file or the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resume {
    File {
        offset: u64,
        mid_line: bool,
        fingerprint: Arc<[u8]>,
    },
    /// `None`: no entry done with yet.
    Cursor(Option<String>),
}

/// The position of one file (or the journal) as far as the consumer is done with it.
pub(super) struct Mark {
    shared: Arc<Shared>,
    at: Mutex<Resume>,
}

impl Mark {
    pub(super) fn new(shared: Arc<Shared>, at: Resume) -> Arc<Self> {
        Arc::new(Mark {
            shared,
            at: Mutex::new(at),
        })
    }

    pub(super) fn get(&self) -> Resume {
        self.at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Moves the mark at once, for a reader with nothing in flight before `at`.
    pub(super) fn set(&self, at: Resume) {
        *self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }
}

/// Moves a mark when the chunk carrying it is done with.
pub(super) struct Ack {
    pub(super) mark: Arc<Mark>,
    pub(super) at: Resume,
}

impl Ack {
    /// The chunk was consumed. After a stop request chunks are only being thrown away,
    /// and the mark stays where the consumer really got to.
    pub(super) fn done(self) {
        if self.mark.shared.stopped() {
            return;
        }
        self.mark.set(self.at);
        // The reader saves changed positions: let it look now rather than at its next poll.
        self.mark.shared.wake();
    }
}

/// Saves a reader's position when it changed, at most every [`SAVE_EVERY`] unless forced.
pub(super) struct Saver {
    positions: Option<Arc<dyn Positions>>,
    saved: Option<Position>,
    last: Option<Instant>,
    /// A failure is reported once, not twice a second.
    failing: bool,
}

impl Saver {
    pub(super) fn new(positions: Option<Arc<dyn Positions>>) -> Self {
        Saver {
            positions,
            saved: None,
            last: None,
            failing: false,
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.positions.is_some()
    }

    /// The position saved by the previous run (`None` without one, or when it cannot be
    /// read: that is logged, and the source starts as on a first start).
    pub(super) fn load(&mut self, name: &str) -> Option<Position> {
        let p = self.positions.as_ref()?;
        match p.load() {
            Ok(pos) => {
                self.saved = pos.clone();
                pos
            }
            Err(e) => {
                log::error!(
                    "{name}: cannot read the saved position, starting without it: {}",
                    chain(&*e)
                );
                None
            }
        }
    }

    /// How long until a save of a changed position is due (zero: now).
    pub(super) fn due_in(&self) -> Duration {
        self.last
            .map_or(Duration::ZERO, |t| SAVE_EVERY.saturating_sub(t.elapsed()))
    }

    /// Saves `now()` if it differs from what was saved and a save is due (or `force`);
    /// `None`: nothing to save yet. Returns whether an unsaved change may be left.
    pub(super) fn maybe_save(
        &mut self,
        name: &str,
        force: bool,
        now: impl FnOnce() -> Option<Position>,
    ) -> bool {
        let Some(p) = self.positions.clone() else {
            return false;
        };
        if !force && !self.due_in().is_zero() {
            return true;
        }
        let Some(pos) = now() else {
            return false;
        };
        if self.saved.as_ref() == Some(&pos) {
            return false;
        }
        self.last = Some(Instant::now());
        match p.save(&pos) {
            Ok(()) => {
                if self.failing {
                    log::info!("{name}: saving the position works again");
                }
                self.failing = false;
                self.saved = Some(pos);
                false
            }
            Err(e) => {
                if !self.failing {
                    log::error!("{name}: cannot save the position: {}", chain(&*e));
                }
                self.failing = true;
                true
            }
        }
    }
}

/// An error with its causes, as anyhow would print them.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
