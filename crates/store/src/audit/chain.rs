//! The hash chain, the same on every backend: how an entry links to the one
//! before it, how the whole log is verified, and the head anchor kept outside
//! the database so that cutting off its newest rows shows.

use super::{AuditEntry, AuditReads, AuditWrites, ChainReport};
use crate::{Result, StoreError};
use std::path::Path;
use steward_crypto::token::sha256_hex;
use steward_domain::audit::AUDIT_GENESIS;
use steward_domain::AuditRecord;

/// The hash of entry `id` holding `record` after an entry hashed `prev`.
pub fn entry_hash(record: &AuditRecord, id: i64, prev: &str) -> String {
    sha256_hex(&record.canonical(id, prev))
}

/// Links `record` after the current head and stores it. The caller's write
/// transaction keeps the head from moving between the read and the insert
/// (one writer on SQLite; a transaction-scoped lock on PostgreSQL).
pub async fn append<T: AuditWrites + ?Sized>(tx: &mut T, record: &AuditRecord) -> Result<i64> {
    let (id, prev_hash) = match tx.audit_head().await? {
        Some((id, hash)) => (id + 1, hash),
        None => (1, AUDIT_GENESIS.to_owned()),
    };
    let entry = AuditEntry {
        id,
        hash: entry_hash(record, id, &prev_hash),
        record: record.clone(),
        prev_hash,
    };
    tx.insert_audit_entry(&entry).await?;
    Ok(id)
}

/// Walks the log from the first entry, recomputing every hash and link; reports
/// the first edited, deleted or reordered row, and newest rows cut off behind
/// the anchor at `anchor` (if the store keeps one).
pub async fn verify<T: AuditReads + ?Sized>(
    tx: &mut T,
    anchor: Option<&Path>,
) -> Result<ChainReport> {
    let mut expected_id = 1;
    let mut prev = AUDIT_GENESIS.to_owned();
    let mut entries = 0u64;
    loop {
        let page = tx.audit_page(expected_id - 1, 1000).await?;
        if page.is_empty() {
            let anchored = anchor.and_then(read_anchor);
            let problem = match anchored {
                None => None,
                Some((id, hash)) => anchor_problem(tx, entries, &prev, id, &hash).await?,
            };
            return Ok(ChainReport { entries, problem });
        }
        for e in page {
            let problem = if e.id != expected_id {
                Some(format!(
                    "entry {expected_id} is missing (deleted or renumbered; next present is {})",
                    e.id
                ))
            } else if e.prev_hash != prev {
                Some(format!(
                    "entry {} does not link to entry {} (rows removed, reordered or relinked)",
                    e.id,
                    e.id - 1
                ))
            } else if entry_hash(&e.record, e.id, &e.prev_hash) != e.hash {
                Some(format!(
                    "entry {} was edited: its content no longer matches its hash",
                    e.id
                ))
            } else {
                None
            };
            if problem.is_some() {
                return Ok(ChainReport { entries, problem });
            }
            prev = e.hash;
            expected_id += 1;
            entries += 1;
        }
    }
}

/// After a clean walk of `entries` rows ending in `last_hash`: the anchor may
/// lag (it is written every few seconds) but never lead, and the row it names
/// must still have the hash it recorded.
async fn anchor_problem<T: AuditReads + ?Sized>(
    tx: &mut T,
    entries: u64,
    last_hash: &str,
    id: i64,
    hash: &str,
) -> Result<Option<String>> {
    let entries = i64::try_from(entries).unwrap_or(i64::MAX);
    if id > entries {
        return Ok(Some(format!(
            "entries after {entries} were removed: the head anchor (audit.head) names entry {id}"
        )));
    }
    let differs = if id == entries {
        hash != last_hash
    } else {
        tx.audit_hash(id).await?.as_deref() != Some(hash)
    };
    Ok(differs.then(|| format!("entry {id} differs from the head anchor (audit.head)")))
}

/// Writes the head (last id and hash) to `path` if it moved; atomic by rename.
pub async fn write_anchor<T: AuditReads + ?Sized>(tx: &mut T, path: &Path) -> Result<()> {
    let Some((id, hash)) = tx.audit_head().await? else {
        return Ok(());
    };
    if read_anchor(path).is_some_and(|(i, h)| i == id && h == hash) {
        return Ok(());
    }
    let tmp = path.with_extension("head.new");
    let io = |e: std::io::Error| StoreError::Backend(Box::new(e));
    std::fs::write(&tmp, format!("{id} {hash}\n")).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The anchor file's content: `<id> <hash>`.
fn read_anchor(path: &Path) -> Option<(i64, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    Some((parts.next()?.parse().ok()?, parts.next()?.to_owned()))
}
