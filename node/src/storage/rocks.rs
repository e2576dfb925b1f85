//! The RocksDB [`Backend`]: one database per node, one column family per [`Cf`], the
//! write-ahead log always on.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Direction, IteratorMode, MergeOperands,
    Options, ReadOptions, WriteBatch, WriteOptions,
};

use super::{Backend, Batch, Cf, CfProperties, Op, PrefixVisitor, read_u64};
use crate::error::{Error, Result};

/// Tuning of the RocksDB instance.
#[derive(Debug, Clone)]
pub struct RocksOptions {
    /// Shared LRU block cache for all column families, in bytes.
    pub block_cache_bytes: usize,
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// RocksDB with the column families of [`Cf::ALL`].
#[derive(Debug)]
pub struct RocksBackend {
    db: DB,
}

impl RocksBackend {
    /// Opens (or creates) the database in `dir`, creating missing column families.
    pub fn open(dir: &Path, options: &RocksOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let cf_options = |cf: Cf| {
            let bloom = cf == Cf::Data;
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            if bloom {
                table.set_bloom_filter(10.0, false);
            }
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            o.set_level_compaction_dynamic_level_bytes(true);
            if cf == Cf::Tree {
                o.set_merge_operator_associative("ringkv_xor_u64", xor_merge);
            }
            o
        };
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_max_background_jobs(2);
        db_options.set_keep_log_file_num(4);
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(*cf)))
            .collect::<Vec<_>>();
        let db = DB::open_cf_descriptors(&db_options, dir, cfs)?;
        Ok(Self { db })
    }

    fn cf(&self, cf: Cf) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(cf.name())
            .ok_or_else(|| Error::Storage(format!("column family {} is missing", cf.name())))
    }
}

/// The merge operator of [`Cf::Tree`]: [`Op::Xor`]'s operands XORed into the value.
fn xor_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let value = operands.iter().fold(read_u64(existing), |acc, operand| {
        acc ^ read_u64(Some(operand))
    });
    Some(value.to_le_bytes().to_vec())
}

fn write_options(sync: bool) -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(sync);
    w
}

impl Backend for RocksBackend {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<()> {
        let mut wb = WriteBatch::default();
        for op in batch.ops() {
            match op {
                Op::Put { cf, key, value } => wb.put_cf(self.cf(*cf)?, key, value),
                Op::Delete { cf, key } => wb.delete_cf(self.cf(*cf)?, key),
                Op::Xor { cf, key, delta } => {
                    if *cf != Cf::Tree {
                        return Err(Error::Storage(format!(
                            "XOR is defined on the tree column family only, not {}",
                            cf.name()
                        )));
                    }
                    wb.merge_cf(self.cf(*cf)?, key, delta.to_le_bytes())
                }
            }
        }
        Ok(self.db.write_opt(wb, &write_options(sync))?)
    }

    fn scan_prefix(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let from = if start > prefix { start } else { prefix };
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(cf)?, IteratorMode::From(from, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn scan_prefixes(&self, cf: Cf, prefixes: &[&[u8]], visit: PrefixVisitor<'_>) -> Result<()> {
        // One iterator for all the prefixes, not one per prefix: creating one costs
        // more than reading the few records of a segment. Listings read each block
        // once, so they leave the block cache to the foreground.
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf)?, read);
        let mut previous: Option<&[u8]> = None;
        for (i, &prefix) in prefixes.iter().enumerate() {
            // After the records of an earlier, smaller prefix the iterator stands on
            // the first key past them: no seek while that key is not below `prefix`.
            let ascending = previous.is_some_and(|p| p < prefix && !prefix.starts_with(p));
            if !(ascending && it.key().is_none_or(|k| k >= prefix)) {
                it.seek(prefix);
            }
            while let (Some(key), Some(value)) = (it.key(), it.value()) {
                if !key.starts_with(prefix) {
                    break;
                }
                if !visit(i, key, value) {
                    return Ok(());
                }
                it.next();
            }
            it.status()?;
            previous = Some(prefix);
        }
        Ok(())
    }

    fn properties(&self) -> Vec<(Cf, CfProperties)> {
        Cf::ALL
            .iter()
            .filter_map(|&cf| {
                let handle = self.cf(cf).ok()?;
                // An unknown or failing property reads as 0: these are for watching.
                let int = |name: &str| {
                    self.db
                        .property_int_value_cf(handle, name)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                };
                Some((
                    cf,
                    CfProperties {
                        sst_bytes: int("rocksdb.live-sst-files-size"),
                        memtable_bytes: int("rocksdb.size-all-mem-tables"),
                        pending_compaction_bytes: int("rocksdb.estimate-pending-compaction-bytes"),
                        estimated_keys: int("rocksdb.estimate-num-keys"),
                    },
                ))
            })
            .collect()
    }

    fn sync_wal(&self) -> Result<()> {
        Ok(self.db.flush_wal(true)?)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush_wal(true)?;
        for cf in Cf::ALL {
            self.db.flush_cf(self.cf(cf)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_survives_reopen_and_merges_in_any_order() {
        // XORs of one tree value, in batches with records, add up to the XOR of their
        // deltas after a reopen (the merge operator is registered again on open).
        let dir = tempfile::tempdir().unwrap();
        {
            let db = RocksBackend::open(dir.path(), &RocksOptions::default()).unwrap();
            for delta in [0b0011u64, 0b0101, 0b1001] {
                let mut batch = Batch::new();
                batch.put(Cf::Data, format!("k{delta}"), b"v".to_vec());
                batch.xor(Cf::Tree, b"seg".to_vec(), delta);
                db.write(batch, false).unwrap();
            }
        }
        let db = RocksBackend::open(dir.path(), &RocksOptions::default()).unwrap();
        let value = db.get(Cf::Tree, b"seg").unwrap();
        assert_eq!(read_u64(value.as_deref()), 0b0011 ^ 0b0101 ^ 0b1001);
        assert_eq!(db.get(Cf::Data, b"k5").unwrap().as_deref(), Some(&b"v"[..]));
        let mut bad = Batch::new();
        bad.xor(Cf::Data, b"k".to_vec(), 1);
        assert!(
            db.write(bad, false).is_err(),
            "XOR outside the tree family is refused"
        );
    }

    #[test]
    fn prefix_listings_match_the_in_memory_store_in_any_order() {
        // One iterator over many prefixes (ascending, with gaps, empty ones, and out of
        // order) visits exactly what the in-memory store's per-prefix scans visit, and
        // stops where the visitor says.
        let dir = tempfile::tempdir().unwrap();
        let db = RocksBackend::open(dir.path(), &RocksOptions::default()).unwrap();
        let memory = crate::storage::MemoryBackend::new();
        let mut batch = Batch::new();
        for p in [0u8, 1, 2, 4, 7, 8] {
            for k in 0..(p as usize % 3 + 1) {
                batch.put(Cf::Data, vec![p, b'k', k as u8], vec![p, k as u8]);
            }
        }
        batch.put(Cf::Hints, vec![3, 0], b"other family".to_vec());
        for backend in [&db as &dyn Backend, &memory] {
            backend.write(batch.clone(), false).unwrap();
        }
        let collect = |backend: &dyn Backend, prefixes: &[&[u8]], stop_after: usize| {
            let mut seen = Vec::new();
            backend
                .scan_prefixes(Cf::Data, prefixes, &mut |i, k, v| {
                    seen.push((i, k.to_vec(), v.to_vec()));
                    seen.len() < stop_after
                })
                .unwrap();
            seen
        };
        let cases: [&[&[u8]]; 4] = [
            &[&[0], &[1], &[2], &[3], &[4], &[7], &[8], &[9]],
            &[&[1], &[4], &[8]],
            &[&[8], &[1], &[7], &[0]],
            &[&[3], &[5], &[6]],
        ];
        for prefixes in cases {
            for stop_after in [usize::MAX, 3] {
                let ours = collect(&db, prefixes, stop_after);
                assert_eq!(ours, collect(&memory, prefixes, stop_after), "{prefixes:?}");
                assert!(ours.len() <= stop_after);
            }
        }
        assert_eq!(collect(&db, &[&[8], &[1]], usize::MAX).len(), 3 + 2);
    }
}
