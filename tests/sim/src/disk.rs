//! The simulated disk: RocksDB's semantics in memory, with a power cut.
//!
//! Every write lands in the page cache at once (reads see it); a write with `sync`
//! (fsync) makes it and everything before it durable, as an fsync of RocksDB's WAL
//! does. A crash keeps only what was durable. Each boot of a host gets a handle
//! stamped with its boot number: a handle from before the last crash refuses every
//! call, so a task of the crashed process that is still winding down cannot write to
//! the disk of the next one.
//!
//! `--bug lose-acked-writes` makes fsync lie: nothing becomes durable, so a crash
//! loses acknowledged writes. The checker must catch it.

use std::sync::{Arc, Mutex};

use ringkv_node::Error;
use ringkv_node::storage::{Backend, Batch, Cf, Op, Records, apply_op, scan_records};

#[derive(Debug, Default)]
struct State {
    /// What reads see.
    current: Records,
    /// Writes since the last fsync, in order.
    unsynced: Vec<Op>,
    /// What survives a crash.
    durable: Records,
    /// The boot whose handle may use the disk.
    boot: u64,
    /// fsync does nothing (the planted bug).
    lying_fsync: bool,
}

/// One host's disk, kept across its crashes.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    state: Arc<Mutex<State>>,
}

impl Disk {
    pub fn new(lying_fsync: bool) -> Self {
        let disk = Self::default();
        disk.lock().lying_fsync = lying_fsync;
        disk
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handle of boot `boot`, the only one allowed from now on.
    pub fn boot(&self, boot: u64) -> DiskHandle {
        self.lock().boot = boot;
        DiskHandle {
            disk: self.clone(),
            boot,
        }
    }

    /// A power cut: what was not fsync'ed is gone, and no handle works until the next boot.
    pub fn crash(&self) {
        let mut s = self.lock();
        s.unsynced.clear();
        s.current = s.durable.clone();
        s.boot = u64::MAX;
    }

    /// Records held (all column families), for the run's summary.
    pub fn records(&self) -> usize {
        self.lock().current.len()
    }
}

/// A [`Backend`] on a [`Disk`] for one boot of its host.
#[derive(Debug)]
pub struct DiskHandle {
    disk: Disk,
    boot: u64,
}

impl DiskHandle {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, Error> {
        let s = self.disk.lock();
        if s.boot != self.boot {
            return Err(Error::Storage("the disk is gone (its host crashed)".into()));
        }
        Ok(s)
    }

    fn apply(&self, batch: Batch, sync: bool) -> Result<(), Error> {
        let mut s = self.state()?;
        for op in batch.ops() {
            apply_op(&mut s.current, op);
        }
        s.unsynced.extend(batch.ops().iter().cloned());
        if sync && !s.lying_fsync {
            let pending = std::mem::take(&mut s.unsynced);
            for op in &pending {
                apply_op(&mut s.durable, op);
            }
        }
        Ok(())
    }
}

impl Backend for DiskHandle {
    fn get(&self, cf: Cf, key: &[u8]) -> ringkv_node::Result<Option<Vec<u8>>> {
        Ok(self.state()?.current.get(&(cf, key.to_vec())).cloned())
    }

    fn write(&self, batch: Batch, sync: bool) -> ringkv_node::Result<()> {
        self.apply(batch, sync)
    }

    fn scan_prefix(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> ringkv_node::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(scan_records(
            &self.state()?.current,
            cf,
            prefix,
            start,
            limit,
        ))
    }

    fn flush(&self) -> ringkv_node::Result<()> {
        let mut s = self.state()?;
        if !s.lying_fsync {
            s.unsynced.clear();
            s.durable = s.current.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_what_was_synced_and_everything_before_it() {
        // fsync of the log makes earlier unsynced writes durable too; later ones are lost.
        let disk = Disk::new(false);
        let h = disk.boot(1);
        h.put(Cf::Data, b"a", b"1", false).unwrap();
        h.put(Cf::Data, b"b", b"2", true).unwrap();
        h.put(Cf::Data, b"c", b"3", false).unwrap();
        disk.crash();
        assert!(
            h.get(Cf::Data, b"a").is_err(),
            "the old boot's handle is fenced off"
        );
        let h = disk.boot(2);
        assert_eq!(h.get(Cf::Data, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(h.get(Cf::Data, b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(h.get(Cf::Data, b"c").unwrap(), None);
    }

    #[test]
    fn a_lying_fsync_loses_synced_writes() {
        // The planted bug: acknowledged (fsync'ed) writes vanish in a crash.
        let disk = Disk::new(true);
        let h = disk.boot(1);
        h.put(Cf::Data, b"a", b"1", true).unwrap();
        disk.crash();
        assert_eq!(disk.boot(2).get(Cf::Data, b"a").unwrap(), None);
    }
}
