//! The RocksDB [`Backend`]: one database per node, one column family per [`Cf`], the
//! write-ahead log always on.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options,
    WriteOptions,
};

use super::{Backend, Cf};
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
        let cf_options = |bloom: bool| {
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
            o
        };
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_max_background_jobs(2);
        db_options.set_keep_log_file_num(4);
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(*cf == Cf::Data)))
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

fn write_options(sync: bool) -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(sync);
    w
}

impl Backend for RocksBackend {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    fn put(&self, cf: Cf, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
        Ok(self
            .db
            .put_cf_opt(self.cf(cf)?, key, value, &write_options(sync))?)
    }

    fn delete(&self, cf: Cf, key: &[u8], sync: bool) -> Result<()> {
        Ok(self
            .db
            .delete_cf_opt(self.cf(cf)?, key, &write_options(sync))?)
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

    fn flush(&self) -> Result<()> {
        self.db.flush_wal(true)?;
        for cf in Cf::ALL {
            self.db.flush_cf(self.cf(cf)?)?;
        }
        Ok(())
    }
}
