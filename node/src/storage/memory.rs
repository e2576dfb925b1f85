//! An in-memory [`Backend`] for unit tests and simulations: the same semantics as
//! RocksDB's, with nothing durable.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Backend, Batch, Cf, Op, xor_value};
use crate::error::Result;

/// Every column family's records, ordered by (family, key).
pub type Records = BTreeMap<(Cf, Vec<u8>), Vec<u8>>;

/// [`Backend::scan_prefix`] over `records`: for in-memory backends (this one, the
/// simulator's disk).
pub fn scan_records(
    records: &Records,
    cf: Cf,
    prefix: &[u8],
    start: &[u8],
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let from = if start > prefix { start } else { prefix };
    records
        .range((cf, from.to_vec())..)
        .take_while(|((c, k), _)| *c == cf && k.starts_with(prefix))
        .take(limit)
        .map(|((_, k), v)| (k.clone(), v.clone()))
        .collect()
}

/// Applies one batched change to `records`: for in-memory backends.
pub fn apply_op(records: &mut Records, op: &Op) {
    match op {
        Op::Put { cf, key, value } => {
            records.insert((*cf, key.clone()), value.clone());
        }
        Op::Delete { cf, key } => {
            records.remove(&(*cf, key.clone()));
        }
        Op::Xor { cf, key, delta } => {
            let k = (*cf, key.clone());
            let next = xor_value(records.get(&k).map(Vec::as_slice), *delta);
            records.insert(k, next.to_vec());
        }
    }
}

/// Column families as ordered maps behind one lock.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    cfs: Mutex<Records>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Backend for MemoryBackend {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.cfs.lock().unwrap().get(&(cf, key.to_vec())).cloned())
    }

    fn write(&self, batch: Batch, _sync: bool) -> Result<()> {
        let mut records = self.cfs.lock().unwrap();
        for op in batch.ops() {
            apply_op(&mut records, op);
        }
        Ok(())
    }

    fn scan_prefix(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let map = self.cfs.lock().unwrap();
        Ok(scan_records(&map, cf, prefix, start, limit))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
