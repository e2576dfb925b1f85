//! The identity a node gossips under, and the generation counter that lets a
//! restarted node come back at once.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};

use crate::{Error, Result};

/// Who a cluster member is: its node id, where peers reach it and which
/// generation of it this is.
///
/// foca keys members by [`foca::Identity::addr`], the advertised cluster
/// address, because that is all a seed address tells a joiner (see
/// `Core::announce_to_seeds`). Two identities at one address are resolved by
/// [`foca::Identity::win_addr_conflict`]: the higher generation wins, so a
/// restarted node replaces its old self instead of being refused as a member
/// that is already down.
#[derive(Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub(crate) struct NodeIdentity {
    /// The node's `--id`.
    pub(crate) id: String,
    /// Advertised address for UDP gossip and TCP peer RPC.
    pub(crate) cluster: SocketAddr,
    /// Advertised `host:port` of the node's HTTP API.
    pub(crate) http: String,
    /// Bumped at every start (persisted) and every [`foca::Identity::renew`].
    pub(crate) generation: u64,
}

impl fmt::Debug for NodeIdentity {
    // Compact, because foca's tracing prints identities in every event.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.id, self.cluster, self.generation)
    }
}

impl NodeIdentity {
    /// A stand-in for a seed whose id we do not know yet: foca accepts an
    /// `Announce` addressed to any identity with the receiver's address.
    pub(crate) fn seed(cluster: SocketAddr) -> Self {
        Self {
            id: String::new(),
            cluster,
            http: String::new(),
            generation: 0,
        }
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    /// Called by foca when the cluster declared this identity down (e.g. after
    /// a long pause): the next generation rejoins immediately. The driver
    /// persists it on foca's `Rejoin` notification.
    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation.checked_add(1)?,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.cluster
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Total order, so both sides of a conflict agree on the winner even in
        // the impossible case of one generation reused with other metadata.
        (self.generation, &self.id, &self.http)
            > (adversary.generation, &adversary.id, &adversary.http)
    }
}

/// Reads the generation stored at `path` (0 when the file does not exist yet),
/// stores the next one durably and returns it.
///
/// Bumping *before* use means a node restarted with the same data dir always
/// gossips a generation the cluster has never seen.
pub(crate) fn next_generation(path: &Path) -> Result<u64> {
    let previous = read_generation(path)?;
    let next = previous
        .checked_add(1)
        .ok_or_else(|| Error::GenerationCorrupt {
            path: path.to_owned(),
            content: previous.to_string(),
        })?;
    write_generation(path, next)?;
    Ok(next)
}

fn read_generation(path: &Path) -> Result<u64> {
    let content = match fs::read_to_string(path) {
        Ok(content) => content,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(io_error(path, source)),
    };
    content
        .trim()
        .parse()
        .map_err(|_| Error::GenerationCorrupt {
            path: path.to_owned(),
            content: content.chars().take(64).collect(),
        })
}

/// Writes `generation` to `path` atomically: write a temp file, fsync it,
/// rename it over the old one, fsync the directory so the rename survives a
/// crash.
pub(crate) fn write_generation(path: &Path, generation: u64) -> Result<()> {
    let tmp = temp_path(path);
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        writeln!(file, "{generation}")?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| io_error(path, source))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::GenerationIo {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    fn identity(generation: u64) -> NodeIdentity {
        NodeIdentity {
            id: "n1".into(),
            cluster: "127.0.0.1:7001".parse().unwrap(),
            http: "127.0.0.1:8001".into(),
            generation,
        }
    }

    #[test]
    fn renew_bumps_generation_and_wins_the_conflict() {
        // A renewed identity keeps id and addresses and beats its predecessor,
        // as foca requires of `renew`.
        let old = identity(7);
        let new = old.renew().unwrap();
        assert_eq!(new.generation, 8);
        assert_eq!((new.id.as_str(), new.addr()), ("n1", old.addr()));
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        assert!(identity(u64::MAX).renew().is_none());
    }

    #[test]
    fn generation_file_counts_up_across_starts() {
        // Each start reads, bumps and durably stores the generation.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gossip.generation");
        assert_eq!(next_generation(&path).unwrap(), 1);
        assert_eq!(next_generation(&path).unwrap(), 2);
        write_generation(&path, 41).unwrap();
        assert_eq!(next_generation(&path).unwrap(), 42);
        assert_eq!(fs::read_to_string(&path).unwrap(), "42\n");
        assert!(!temp_path(&path).exists(), "temp file renamed away");
    }

    #[test]
    fn corrupt_generation_file_is_an_error() {
        // A generation file that is not a number stops the start instead of
        // silently reusing generation 1.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gossip.generation");
        fs::write(&path, "not a number").unwrap();
        assert!(matches!(
            next_generation(&path),
            Err(Error::GenerationCorrupt { .. })
        ));
    }
}
