//! Where each log source had got to, in the same database as the bans: one row per
//! source, written by the source's reader about twice a second while it reads (see
//! `source::Positions`), so a restart, even after `kill -9`, goes on where the last
//! run stopped instead of at the end of the files.
use std::{path::PathBuf, sync::Arc};

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::store::{StateError, Store};
use crate::source::{FilePosition, Position, PositionError, Positions};

/// source key -> JSON of [`Stored`].
const POSITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("positions");

/// The saved positions of every source; [`PositionBook::source`] gives one source's.
#[derive(Debug, Clone)]
pub struct PositionBook {
    store: Arc<Store>,
}

#[expect(
    clippy::result_large_err,
    reason = "the transaction closures speak redb's own error type, boxed by Store"
)]
impl PositionBook {
    /// Creates the table if this store has none yet.
    pub fn open(store: Arc<Store>) -> Result<Self, StateError> {
        store.write(|tx| {
            tx.open_table(POSITIONS)?;
            Ok(())
        })?;
        Ok(PositionBook { store })
    }

    /// The position of the source named `key` (stable across runs, e.g. the source as
    /// the configuration names it).
    pub fn source(&self, key: &str) -> Arc<dyn Positions> {
        Arc::new(SourcePosition {
            store: self.store.clone(),
            key: key.to_string(),
        })
    }

    /// Every saved row, for tests and diagnostics.
    pub fn keys(&self) -> Result<Vec<String>, StateError> {
        self.store.read(|tx| {
            let t = tx.open_table(POSITIONS)?;
            let mut keys = Vec::new();
            for e in t.iter()? {
                keys.push(e?.0.value().to_string());
            }
            Ok(keys)
        })
    }
}

#[derive(Debug)]
struct SourcePosition {
    store: Arc<Store>,
    key: String,
}

#[derive(Debug, thiserror::Error)]
#[error("state store {path}: saved position of {key}")]
struct BadPosition {
    path: PathBuf,
    key: String,
    #[source]
    source: serde_json::Error,
}

#[expect(
    clippy::result_large_err,
    reason = "the transaction closures speak redb's own error type, boxed by Store"
)]
impl Positions for SourcePosition {
    fn load(&self) -> Result<Option<Position>, PositionError> {
        let raw = self.store.read(|tx| {
            let t = tx.open_table(POSITIONS)?;
            Ok(t.get(self.key.as_str())?.map(|v| v.value().to_vec()))
        })?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_slice(&raw).map_err(|source| BadPosition {
            path: self.store.path().to_path_buf(),
            key: self.key.clone(),
            source,
        })?;
        Ok(Some(stored.into()))
    }

    fn save(&self, position: &Position) -> Result<(), PositionError> {
        let bytes = serde_json::to_vec(&Stored::from(position)).map_err(|source| BadPosition {
            path: self.store.path().to_path_buf(),
            key: self.key.clone(),
            source,
        })?;
        self.store.write(|tx| {
            tx.open_table(POSITIONS)?
                .insert(self.key.as_str(), bytes.as_slice())?;
            Ok(())
        })?;
        Ok(())
    }
}

/// The stored form: JSON, so a later version can add fields.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Stored {
    Files { files: Vec<StoredFile> },
    Journal { cursor: String },
}

#[derive(Serialize, Deserialize)]
struct StoredFile {
    path: String,
    dev: u64,
    inode: u64,
    offset: u64,
    #[serde(default)]
    mid_line: bool,
    /// Hex.
    fingerprint: String,
}

impl From<&Position> for Stored {
    fn from(p: &Position) -> Self {
        match p {
            Position::Files(files) => Stored::Files {
                files: files
                    .iter()
                    .map(|f| StoredFile {
                        path: f.path.to_string_lossy().into_owned(),
                        dev: f.dev,
                        inode: f.inode,
                        offset: f.offset,
                        mid_line: f.mid_line,
                        fingerprint: f.fingerprint.iter().map(|b| format!("{b:02x}")).collect(),
                    })
                    .collect(),
            },
            Position::Journal { cursor } => Stored::Journal {
                cursor: cursor.clone(),
            },
        }
    }
}

impl From<Stored> for Position {
    fn from(s: Stored) -> Self {
        match s {
            Stored::Files { files } => Position::Files(
                files
                    .into_iter()
                    .map(|f| FilePosition {
                        path: PathBuf::from(f.path),
                        dev: f.dev,
                        inode: f.inode,
                        offset: f.offset,
                        mid_line: f.mid_line,
                        fingerprint: unhex(&f.fingerprint),
                    })
                    .collect(),
            ),
            Stored::Journal { cursor } => Position::Journal { cursor },
        }
    }
}

/// Bytes of a hex string; a damaged one gives what decodes (a shorter fingerprint
/// only makes the check weaker, never wrong).
fn unhex(s: &str) -> Vec<u8> {
    s.as_bytes()
        .chunks_exact(2)
        .map_while(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_roundtrip_per_source_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Position::Files(vec![
            FilePosition {
                path: "/var/log/mail.log".into(),
                dev: 2049,
                inode: 1234,
                offset: 987_654,
                mid_line: false,
                fingerprint: b"Nov 22 05:27:23 mx postfix/smtpd[1]: \xff\x00".to_vec(),
            },
            FilePosition {
                path: "/var/log/mail.log.1".into(),
                dev: 2049,
                inode: 99,
                offset: 5,
                mid_line: true,
                fingerprint: Vec::new(),
            },
        ]);
        let journal = Position::Journal {
            cursor: "s=5d;i=1;b=01;m=3e8;t=660d6e6b6df77;x=95".into(),
        };
        {
            let book = PositionBook::open(Arc::new(Store::open(dir.path()).expect("store")))
                .expect("book");
            let (a, b) = (
                book.source("files:/var/log/mail.log"),
                book.source("journal"),
            );
            assert_eq!(a.load().expect("load"), None);
            a.save(&files).expect("save");
            b.save(&journal).expect("save");
            assert_eq!(a.load().expect("load"), Some(files.clone()));
        }
        let store = Arc::new(Store::open(dir.path()).expect("reopen"));
        let book = PositionBook::open(store.clone()).expect("book");
        assert_eq!(
            book.source("files:/var/log/mail.log").load().expect("load"),
            Some(files)
        );
        assert_eq!(book.source("journal").load().expect("load"), Some(journal));
        assert_eq!(book.keys().expect("keys").len(), 2);
        // The bans' tables are untouched by it.
        assert_eq!(store.len().expect("len"), 0);
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "the transaction closure speaks redb's own error type"
    )]
    fn a_damaged_row_is_an_error_naming_the_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path()).expect("store"));
        let book = PositionBook::open(store.clone()).expect("book");
        store
            .write(|tx| {
                tx.open_table(POSITIONS)?
                    .insert("files:/x", b"{not json".as_slice())?;
                Ok(())
            })
            .expect("write");
        let e = book.source("files:/x").load().expect_err("damaged");
        assert!(e.to_string().contains("files:/x"), "{e}");
    }
}
