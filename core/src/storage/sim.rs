//! [`SimStorage`]: an in-memory, deterministic file system that loses what was not made durable.
//!
//! # Durability model
//! - Files are inodes; paths name them. Every inode has its *current* content (what reads see), a
//!   *durable* image, and the data operations (`write_all_at`, `set_len`) issued since its last
//!   sync, in order. A successful [`StorageFile::sync`] applies those operations to the durable
//!   image. A failed sync (EIO) *drops* them, as Linux does after an fsync error ("fsyncgate"):
//!   they stay visible to reads until a crash but can no longer survive one, not even through a
//!   later successful sync.
//! - Directory changes (file creation, rename, removal, `mkdir`) are pending per directory until
//!   [`Storage::sync_dir`] of that directory makes them durable.
//! - [`SimStorage::crash`] is a power loss: every inode keeps its durable image plus a random
//!   prefix of its pending operations, the last kept one possibly torn (only a prefix of its bytes
//!   applied); every directory keeps a random prefix of its pending changes. Files whose creation
//!   was lost vanish, renames not kept are undone, removals not kept are undone. Afterwards current
//!   and durable state agree, and every handle opened before the crash fails on every call, so a
//!   stale incarnation cannot write into the new one's files.
//! - [`Storage::remove_dir_all`] is durable at once (a simplification: replica deletion).
//!
//! # Faults
//! [`SimFaults`] (set at any time with [`SimStorage::set_faults`]) fails writes with EIO or
//! ENOSPC at given rates (a failed write may leave a random prefix of its bytes, like a short
//! write), fails syncs with EIO, caps the total size, fills the disk for a while (`disk_full`:
//! growing any file fails with ENOSPC until cleared; [`Storage::available_bytes`] is the
//! free-space probe that sees it), and hands out latencies through
//! [`Storage::injected_latency`]. [`SimStorage::fail_next_write`] / [`SimStorage::fail_next_sync`]
//! are one-shot triggers for deterministic tests.
//!
//! All randomness comes from the seed given to [`SimStorage::new`]; all maps are `BTreeMap`s, so
//! the same seed and the same calls give the same outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Op, Storage, StorageFile};

/// Raw OS error number of EIO.
const EIO: i32 = 5;
/// Raw OS error number of ENOSPC.
const ENOSPC: i32 = 28;

/// Faults the simulated disk injects. `Default` injects none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimFaults {
    /// Probability that a `write_all_at` fails with EIO.
    pub write_eio_rate: f64,
    /// Probability that a `write_all_at` fails with ENOSPC.
    pub write_enospc_rate: f64,
    /// Probability that a file `sync` or a `sync_dir` fails with EIO.
    pub sync_eio_rate: f64,
    /// Latency handed out for writes by [`Storage::injected_latency`]; an empty range means zero.
    pub write_latency: Range<Duration>,
    /// Latency handed out for syncs; an empty range means zero.
    pub sync_latency: Range<Duration>,
    /// Total bytes across all files; growing past it fails with ENOSPC.
    pub capacity_bytes: Option<u64>,
    /// The disk is full: every write or `set_len` that grows a file fails with ENOSPC (a write
    /// still overwrites in place), and [`Storage::available_bytes`] answers 0, until cleared.
    pub disk_full: bool,
}

/// One data operation not yet durable.
#[derive(Debug, Clone)]
enum DataOp {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

impl DataOp {
    fn apply(&self, content: &mut Vec<u8>) {
        match self {
            DataOp::Write { pos, data } => write_into(content, *pos, data),
            DataOp::SetLen(len) => content.resize(usize_len(*len), 0),
        }
    }
}

fn usize_len(len: u64) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

fn write_into(content: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let start = usize_len(pos);
    let end = start.saturating_add(data.len());
    if content.len() < end {
        content.resize(end, 0);
    }
    content[start..end].copy_from_slice(data);
}

#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Data operations since the last sync, in order.
    pending: Vec<DataOp>,
}

/// One directory change not yet durable. Paths are full paths.
#[derive(Debug, Clone)]
enum DirOp {
    /// `path` names `inode` (file creation, or the target side of a cross-directory rename).
    Link {
        path: PathBuf,
        inode: u64,
    },
    Unlink {
        path: PathBuf,
    },
    /// Same-directory rename: atomic.
    Rename {
        from: PathBuf,
        to: PathBuf,
        inode: u64,
    },
    MkDir {
        path: PathBuf,
    },
}

#[derive(Debug)]
struct Inner {
    rng: SmallRng,
    faults: SimFaults,
    /// Bumped by every crash; handles from older generations fail.
    generation: u64,
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    /// Current namespace: file path → inode.
    names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Durable namespace.
    durable_names: BTreeMap<PathBuf, u64>,
    durable_dirs: BTreeSet<PathBuf>,
    /// Pending directory changes, by directory.
    pending_dir_ops: BTreeMap<PathBuf, Vec<DirOp>>,
    /// Open handles per inode of this generation: an unlinked inode lives while a handle does.
    open_handles: BTreeMap<u64, usize>,
    fail_next_write: Vec<String>,
    fail_next_sync: Vec<String>,
    sync_count: u64,
}

/// The simulated disk. See the module docs for its durability model.
pub struct SimStorage {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for SimStorage {
    /// Short on purpose: the contents would drown any assertion message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = lock(&self.inner);
        f.debug_struct("SimStorage")
            .field("generation", &g.generation)
            .field("files", &g.names.len())
            .field("syncs", &g.sync_count)
            .finish()
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file or directory", path.display()))
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn matches_trigger(triggers: &mut Vec<String>, path: &Path) -> bool {
    let p = path.to_string_lossy();
    if let Some(i) = triggers.iter().position(|t| p.contains(t.as_str())) {
        triggers.remove(i);
        return true;
    }
    false
}

impl SimStorage {
    pub fn new(seed: u64) -> Arc<SimStorage> {
        let mut root = BTreeSet::new();
        root.insert(PathBuf::from("/"));
        root.insert(PathBuf::new());
        Arc::new(SimStorage {
            inner: Arc::new(Mutex::new(Inner {
                rng: SmallRng::seed_from_u64(seed),
                faults: SimFaults::default(),
                generation: 0,
                next_inode: 1,
                inodes: BTreeMap::new(),
                names: BTreeMap::new(),
                dirs: root.clone(),
                durable_names: BTreeMap::new(),
                durable_dirs: root,
                pending_dir_ops: BTreeMap::new(),
                open_handles: BTreeMap::new(),
                fail_next_write: Vec::new(),
                fail_next_sync: Vec::new(),
                sync_count: 0,
            })),
        })
    }

    /// Forgets every file and directory, returning their bytes at once: the end of a simulated
    /// run. (A run's leftovers — tasks the runtime never dropped, handles they hold — may
    /// outlive it; without this, every byte a run wrote would too, seed after seed.)
    pub fn wipe(&self) {
        let mut g = lock(&self.inner);
        g.inodes = BTreeMap::new();
        g.names = BTreeMap::new();
        g.durable_names = BTreeMap::new();
        g.pending_dir_ops = BTreeMap::new();
    }

    pub fn set_faults(&self, faults: SimFaults) {
        lock(&self.inner).faults = faults;
    }

    pub fn faults(&self) -> SimFaults {
        lock(&self.inner).faults.clone()
    }

    /// The next write to a file whose path contains `path_substring` fails with EIO.
    pub fn fail_next_write(&self, path_substring: &str) {
        lock(&self.inner).fail_next_write.push(path_substring.to_string());
    }

    /// The next sync of a file (or directory) whose path contains `path_substring` fails with EIO.
    pub fn fail_next_sync(&self, path_substring: &str) {
        lock(&self.inner).fail_next_sync.push(path_substring.to_string());
    }

    /// Injected write and sync failures that have not fired yet.
    pub fn pending_failures(&self) -> usize {
        let g = lock(&self.inner);
        g.fail_next_write.len() + g.fail_next_sync.len()
    }

    /// Disarms every injected write and sync failure that has not fired yet.
    pub fn clear_failures(&self) {
        let mut g = lock(&self.inner);
        g.fail_next_write.clear();
        g.fail_next_sync.clear();
    }

    /// Successful file and directory syncs so far.
    pub fn sync_count(&self) -> u64 {
        lock(&self.inner).sync_count
    }

    /// Crashes so far.
    pub fn generation(&self) -> u64 {
        lock(&self.inner).generation
    }

    /// Length of the durable image of the file now at `path` (`None` if there is none).
    pub fn durable_len(&self, path: &Path) -> Option<u64> {
        let g = lock(&self.inner);
        let inode = g.names.get(path)?;
        g.inodes.get(inode).map(|i| i.durable.len() as u64)
    }

    /// Paths of every file in the current namespace, sorted.
    /// Bytes the disk holds now: every inode's current content, those of removed files still
    /// open included (their space is freed when the last handle closes, as on a real disk).
    pub fn used_bytes(&self) -> u64 {
        total_bytes(&lock(&self.inner))
    }

    pub fn file_names(&self) -> Vec<PathBuf> {
        lock(&self.inner).names.keys().cloned().collect()
    }

    /// Simulates a power loss; see the module docs.
    pub fn crash(&self) {
        let mut g = lock(&self.inner);
        let g = &mut *g;
        // Directories: a random prefix of each one's pending changes.
        let pending = std::mem::take(&mut g.pending_dir_ops);
        for ops in pending.into_values() {
            let keep = g.rng.gen_range(0..=ops.len());
            for op in &ops[..keep] {
                apply_dir_op(&mut g.durable_names, &mut g.durable_dirs, op);
            }
        }
        // Whatever lives in a directory whose creation was lost goes with it.
        let mut dirs: Vec<PathBuf> = g.durable_dirs.iter().cloned().collect();
        dirs.sort_by_key(|d| d.components().count());
        for d in dirs {
            if d.parent().is_some_and(|p| !g.durable_dirs.contains(p)) {
                g.durable_dirs.remove(&d);
            }
        }
        let durable_dirs = &g.durable_dirs;
        g.durable_names.retain(|p, _| durable_dirs.contains(&parent_of(p)));
        // Files: the durable image plus a random prefix of pending operations, the last torn.
        let live: BTreeSet<u64> = g.durable_names.values().copied().collect();
        g.inodes.retain(|id, _| live.contains(id));
        for inode in g.inodes.values_mut() {
            let ops = std::mem::take(&mut inode.pending);
            let keep = g.rng.gen_range(0..=ops.len());
            let mut content = std::mem::take(&mut inode.durable);
            for (i, op) in ops[..keep].iter().enumerate() {
                match op {
                    DataOp::Write { pos, data } if i + 1 == keep => {
                        let torn = g.rng.gen_range(0..=data.len());
                        write_into(&mut content, *pos, &data[..torn]);
                    }
                    op => op.apply(&mut content),
                }
            }
            inode.current = content.clone();
            inode.durable = content;
        }
        g.names = g.durable_names.clone();
        g.dirs = g.durable_dirs.clone();
        g.open_handles.clear();
        g.generation += 1;
    }

    fn sync_fault(g: &mut Inner, path: &Path) -> bool {
        if matches_trigger(&mut g.fail_next_sync, path) {
            return true;
        }
        let rate = g.faults.sync_eio_rate;
        rate > 0.0 && g.rng.gen_bool(rate.min(1.0))
    }

    fn record_dir_op(g: &mut Inner, dir: &Path, op: DirOp) {
        g.pending_dir_ops.entry(dir.to_path_buf()).or_default().push(op);
    }

    /// Drops inodes nothing can reach any more (not named now, durably, or by a pending change).
    fn collect_garbage(g: &mut Inner) {
        let mut live: BTreeSet<u64> = g.names.values().copied().collect();
        live.extend(g.durable_names.values().copied());
        live.extend(g.open_handles.keys().copied());
        for ops in g.pending_dir_ops.values() {
            for op in ops {
                if let DirOp::Link { inode, .. } | DirOp::Rename { inode, .. } = op {
                    live.insert(*inode);
                }
            }
        }
        g.inodes.retain(|id, _| live.contains(id));
    }
}

fn apply_dir_op(names: &mut BTreeMap<PathBuf, u64>, dirs: &mut BTreeSet<PathBuf>, op: &DirOp) {
    match op {
        DirOp::Link { path, inode } => {
            names.insert(path.clone(), *inode);
        }
        DirOp::Unlink { path } => {
            names.remove(path);
        }
        DirOp::Rename { from, to, inode } => {
            names.remove(from);
            names.insert(to.clone(), *inode);
        }
        DirOp::MkDir { path } => {
            dirs.insert(path.clone());
        }
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut g = lock(&self.inner);
        let mut missing = Vec::new();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if g.dirs.contains(d) {
                break;
            }
            if g.names.contains_key(d) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"));
            }
            missing.push(d.to_path_buf());
            cur = d.parent();
        }
        for d in missing.into_iter().rev() {
            g.dirs.insert(d.clone());
            match d.parent().map(Path::to_path_buf) {
                Some(parent) => Self::record_dir_op(&mut g, &parent, DirOp::MkDir { path: d }),
                None => {
                    g.durable_dirs.insert(d);
                }
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let g = lock(&self.inner);
        if !g.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(g.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let g = lock(&self.inner);
        if !g.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let mut names: Vec<String> = g
            .dirs
            .iter()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut g = lock(&self.inner);
        let inode = match g.names.get(path) {
            Some(&inode) => inode,
            None if !create => return Err(not_found(path)),
            None => {
                let parent = parent_of(path);
                if !g.dirs.contains(&parent) {
                    return Err(not_found(&parent));
                }
                if g.dirs.contains(path) {
                    return Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory"));
                }
                let inode = g.next_inode;
                g.next_inode += 1;
                g.inodes.insert(inode, Inode::default());
                g.names.insert(path.to_path_buf(), inode);
                Self::record_dir_op(&mut g, &parent, DirOp::Link { path: path.to_path_buf(), inode });
                inode
            }
        };
        *g.open_handles.entry(inode).or_default() += 1;
        Ok(Arc::new(SimFile {
            inner: Arc::clone(&self.inner),
            inode,
            generation: g.generation,
            path: path.to_path_buf(),
        }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let g = lock(&self.inner);
        Ok(g.names.contains_key(path) || g.dirs.contains(path))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut g = lock(&self.inner);
        if g.names.remove(path).is_none() {
            return Err(not_found(path));
        }
        Self::record_dir_op(&mut g, &parent_of(path), DirOp::Unlink { path: path.to_path_buf() });
        Self::collect_garbage(&mut g);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut g = lock(&self.inner);
        let to_parent = parent_of(to);
        if !g.dirs.contains(&to_parent) {
            return Err(not_found(&to_parent));
        }
        let inode = g.names.remove(from).ok_or_else(|| not_found(from))?;
        g.names.insert(to.to_path_buf(), inode);
        let from_parent = parent_of(from);
        if from_parent == to_parent {
            let op = DirOp::Rename { from: from.to_path_buf(), to: to.to_path_buf(), inode };
            Self::record_dir_op(&mut g, &from_parent, op);
        } else {
            Self::record_dir_op(&mut g, &from_parent, DirOp::Unlink { path: from.to_path_buf() });
            Self::record_dir_op(&mut g, &to_parent, DirOp::Link { path: to.to_path_buf(), inode });
        }
        Self::collect_garbage(&mut g);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut g = lock(&self.inner);
        if !g.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        if Self::sync_fault(&mut g, dir) {
            // Unlike file data, a failed directory sync leaves its changes pending: they may or
            // may not survive a crash.
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let g = &mut *g;
        for op in g.pending_dir_ops.remove(dir).unwrap_or_default() {
            apply_dir_op(&mut g.durable_names, &mut g.durable_dirs, &op);
        }
        g.sync_count += 1;
        Self::collect_garbage(g);
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut g = lock(&self.inner);
        let g = &mut *g;
        let under = |p: &Path| p.starts_with(dir);
        g.names.retain(|p, _| !under(p));
        g.durable_names.retain(|p, _| !under(p));
        g.dirs.retain(|p| !under(p));
        g.durable_dirs.retain(|p| !under(p));
        g.pending_dir_ops.retain(|d, _| !under(d));
        for ops in g.pending_dir_ops.values_mut() {
            ops.retain(|op| match op {
                DirOp::Link { path, .. } | DirOp::Unlink { path } | DirOp::MkDir { path } => !under(path),
                DirOp::Rename { from, to, .. } => !under(from) && !under(to),
            });
        }
        Self::collect_garbage(g);
        Ok(())
    }

    fn available_bytes(&self, _dir: &Path) -> io::Result<Option<u64>> {
        let g = lock(&self.inner);
        if g.faults.disk_full {
            return Ok(Some(0));
        }
        Ok(g.faults.capacity_bytes.map(|cap| cap.saturating_sub(total_bytes(&g))))
    }

    fn injected_latency(&self, op: Op) -> Duration {
        let mut g = lock(&self.inner);
        let range = match op {
            Op::Write => g.faults.write_latency.clone(),
            Op::Sync => g.faults.sync_latency.clone(),
        };
        if range.is_empty() { Duration::ZERO } else { g.rng.gen_range(range) }
    }
}

/// A handle on one inode of a [`SimStorage`], valid until the next crash.
pub struct SimFile {
    inner: Arc<Mutex<Inner>>,
    inode: u64,
    generation: u64,
    /// The path it was opened under (for fault triggers and error messages).
    path: PathBuf,
}

impl SimFile {
    /// Locks the disk and checks the handle predates no crash.
    fn lock(&self) -> io::Result<MutexGuard<'_, Inner>> {
        let g = lock(&self.inner);
        if g.generation != self.generation {
            return Err(io::Error::other(format!("{}: handle from before crash", self.path.display())));
        }
        Ok(g)
    }
}

impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("inode", &self.inode)
            .field("generation", &self.generation)
            .finish()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut g = lock(&self.inner);
        if g.generation != self.generation {
            return;
        }
        if let Some(n) = g.open_handles.get_mut(&self.inode) {
            *n -= 1;
            if *n == 0 {
                g.open_handles.remove(&self.inode);
                SimStorage::collect_garbage(&mut g);
            }
        }
    }
}

fn inode_mut(g: &mut Inner, inode: u64) -> io::Result<&mut Inode> {
    g.inodes.get_mut(&inode).ok_or_else(|| io::Error::other("inode vanished"))
}

fn total_bytes(g: &Inner) -> u64 {
    g.inodes.values().map(|i| i.current.len() as u64).sum()
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut g = self.lock()?;
        Ok(inode_mut(&mut g, self.inode)?.current.len() as u64)
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut g = self.lock()?;
        let content = &inode_mut(&mut g, self.inode)?.current;
        let start = usize_len(pos);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| content.get(start..end))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of file"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        let mut g = self.lock()?;
        let g = &mut *g;
        let cur_len = inode_mut(g, self.inode)?.current.len() as u64;
        let end = pos.saturating_add(data.len() as u64);
        let growth = end.saturating_sub(cur_len);
        let mut error = None;
        let mut written = data.len();
        let triggered = matches_trigger(&mut g.fail_next_write, &self.path);
        if triggered || (g.faults.write_eio_rate > 0.0 && g.rng.gen_bool(g.faults.write_eio_rate.min(1.0))) {
            error = Some(EIO);
        } else if g.faults.write_enospc_rate > 0.0 && g.rng.gen_bool(g.faults.write_enospc_rate.min(1.0)) {
            error = Some(ENOSPC);
        }
        if g.faults.disk_full && error.is_none() && growth > 0 {
            error = Some(ENOSPC);
            // Overwriting in place needs no new blocks; only the growth is refused.
            written = usize_len(cur_len.saturating_sub(pos)).min(data.len());
        }
        if let Some(cap) = g.faults.capacity_bytes
            && error.is_none()
            && growth > 0
        {
            let total = total_bytes(g);
            if total + growth > cap {
                error = Some(ENOSPC);
                // What fits is written, like a short write on a full disk.
                let room = cap.saturating_sub(total);
                written = usize_len((cur_len.saturating_sub(pos)).saturating_add(room)).min(data.len());
            }
        }
        if error.is_some() {
            written = g.rng.gen_range(0..=written);
        }
        if written > 0 {
            let op = DataOp::Write { pos, data: data[..written].to_vec() };
            let inode = inode_mut(g, self.inode)?;
            op.apply(&mut inode.current);
            inode.pending.push(op);
        }
        match error {
            Some(code) => Err(io::Error::from_raw_os_error(code)),
            None => Ok(()),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut g = self.lock()?;
        let g = &mut *g;
        let cur_len = inode_mut(g, self.inode)?.current.len() as u64;
        if g.faults.disk_full && len > cur_len {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        if let Some(cap) = g.faults.capacity_bytes
            && len > cur_len
            && total_bytes(g) + (len - cur_len) > cap
        {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let op = DataOp::SetLen(len);
        let inode = inode_mut(g, self.inode)?;
        op.apply(&mut inode.current);
        inode.pending.push(op);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut g = self.lock()?;
        let g = &mut *g;
        if SimStorage::sync_fault(g, &self.path) {
            // fsyncgate: the unsynced operations can no longer become durable.
            inode_mut(g, self.inode)?.pending.clear();
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let inode = inode_mut(g, self.inode)?;
        for op in std::mem::take(&mut inode.pending) {
            op.apply(&mut inode.durable);
        }
        g.sync_count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn content(s: &SimStorage, path: &str) -> Option<Vec<u8>> {
        crate::storage::read_whole(s, &p(path)).expect("read")
    }

    fn setup(seed: u64) -> Arc<SimStorage> {
        let s = SimStorage::new(seed);
        s.create_dir_all(&p("/d")).expect("mkdir");
        s.sync_dir(&p("/")).expect("sync root");
        s
    }

    /// Protects the core promise of the simulated disk: synced data and synced names survive.
    #[test]
    fn synced_data_and_names_survive_a_crash() {
        for seed in 0..50 {
            let s = setup(seed);
            let f = s.open(&p("/d/a"), true).expect("open");
            f.write_all_at(0, b"hello").expect("write");
            f.sync().expect("sync");
            s.sync_dir(&p("/d")).expect("sync dir");
            f.write_all_at(5, b" world").expect("write");
            s.crash();
            let c = content(&s, "/d/a").expect("file survives");
            assert!(c.starts_with(b"hello"), "seed {seed}: {c:?}");
            assert!(b"hello world".starts_with(&c), "seed {seed}: only a prefix of the write: {c:?}");
            assert_eq!(s.durable_len(&p("/d/a")), Some(c.len() as u64));
        }
    }

    /// Protects the directory model: an unsynced creation may vanish, and across seeds both
    /// outcomes happen.
    #[test]
    fn unsynced_creation_may_vanish() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..40 {
            let s = setup(seed);
            let f = s.open(&p("/d/a"), true).expect("open");
            f.write_all_at(0, b"x").expect("write");
            f.sync().expect("sync");
            s.crash();
            outcomes.insert(s.exists(&p("/d/a")).expect("exists"));
        }
        assert_eq!(outcomes.len(), 2, "both survival and loss must be possible");
    }

    /// Protects write_atomic's guarantee under the model: old or new contents, never a mix.
    #[test]
    fn write_atomic_is_all_or_nothing() {
        for seed in 0..50 {
            let s = setup(seed);
            crate::storage::write_atomic(&*s, &p("/d"), "f", b"old").expect("write old");
            let f = s.open(&p("/d/f.tmp"), true).expect("open");
            f.write_all_at(0, b"new!").expect("write");
            f.sync().expect("sync");
            drop(f);
            s.rename(&p("/d/f.tmp"), &p("/d/f")).expect("rename");
            s.crash();
            let c = content(&s, "/d/f").expect("exists");
            assert!(c == b"old" || c == b"new!", "seed {seed}: {c:?}");
        }
    }

    /// Protects POSIX unlink semantics the log relies on: a sync plan holding a handle of a file
    /// that a purge removed meanwhile still succeeds.
    #[test]
    fn removed_file_stays_usable_through_open_handle() {
        let s = setup(2);
        let f = s.open(&p("/d/a"), true).expect("open");
        f.write_all_at(0, b"abc").expect("write");
        s.remove(&p("/d/a")).expect("remove");
        s.sync_dir(&p("/d")).expect("sync dir");
        f.write_all_at(3, b"d").expect("write after unlink");
        f.sync().expect("sync after unlink");
        assert_eq!(f.len().expect("len"), 4);
        drop(f);
        assert!(s.file_names().is_empty());
    }

    /// Protects against a stale node writing into the next incarnation's files.
    #[test]
    fn handles_from_before_a_crash_fail() {
        let s = setup(1);
        let f = s.open(&p("/d/a"), true).expect("open");
        s.crash();
        assert!(f.write_all_at(0, b"x").is_err());
        assert!(f.len().is_err());
        assert!(f.sync().is_err());
    }

    /// Protects the fsyncgate model: after a failed sync the data is visible but cannot survive a
    /// crash, even if a later sync succeeds.
    #[test]
    fn failed_sync_drops_pending_writes() {
        let s = setup(3);
        let f = s.open(&p("/d/a"), true).expect("open");
        s.sync_dir(&p("/d")).expect("sync dir");
        f.write_all_at(0, b"lost").expect("write");
        s.fail_next_sync("/d/a");
        let e = f.sync().expect_err("sync fails");
        assert_eq!(e.raw_os_error(), Some(EIO));
        assert_eq!(f.len().expect("len"), 4);
        f.sync().expect("later sync succeeds");
        assert_eq!(s.durable_len(&p("/d/a")), Some(0));
        s.crash();
        assert_eq!(content(&s, "/d/a"), Some(Vec::new()));
    }

    /// Protects the disk-full fault: while it lasts, growing a file fails with ENOSPC (kind
    /// StorageFull) and the probe answers 0; overwriting in place still works; once cleared,
    /// writes succeed again.
    #[test]
    fn disk_full_refuses_growth_until_cleared() {
        let s = setup(3);
        let f = s.open(&p("/d/a"), true).unwrap();
        f.write_all_at(0, b"0123").unwrap();
        s.set_faults(SimFaults { disk_full: true, ..SimFaults::default() });
        assert_eq!(s.available_bytes(&p("/d")).unwrap(), Some(0));
        let e = f.write_all_at(4, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.set_len(10).unwrap_err().kind(), io::ErrorKind::StorageFull);
        f.write_all_at(0, b"ab").unwrap();
        assert_eq!(f.len().unwrap(), 4);
        s.set_faults(SimFaults::default());
        assert_eq!(s.available_bytes(&p("/d")).unwrap(), None);
        f.write_all_at(4, b"x").unwrap();
        assert_eq!(content(&s, "/d/a").unwrap(), b"ab23x");
    }

    /// Protects the free-space probe: a capped disk reports what is left, and a removed file's
    /// bytes count until its last handle closes.
    #[test]
    fn available_bytes_follow_usage_and_open_handles() {
        let s = setup(4);
        s.set_faults(SimFaults { capacity_bytes: Some(100), ..SimFaults::default() });
        let f = s.open(&p("/d/a"), true).unwrap();
        f.write_all_at(0, &[7; 30]).unwrap();
        assert_eq!(s.available_bytes(&p("/d")).unwrap(), Some(70));
        s.remove_dir_all(&p("/d")).unwrap();
        assert_eq!(s.used_bytes(), 30, "an open handle keeps a removed file's blocks");
        drop(f);
        assert_eq!(s.used_bytes(), 0);
        assert_eq!(s.available_bytes(&p("/d")).unwrap(), Some(100));
    }

    /// Protects the capacity limit: writes past it fail with ENOSPC.
    #[test]
    fn capacity_is_enforced() {
        let s = setup(4);
        s.set_faults(SimFaults { capacity_bytes: Some(10), ..SimFaults::default() });
        let f = s.open(&p("/d/a"), true).expect("open");
        f.write_all_at(0, b"12345678").expect("fits");
        let e = f.write_all_at(8, b"abcdef").expect_err("does not fit");
        assert_eq!(e.raw_os_error(), Some(ENOSPC));
        assert!(f.len().expect("len") <= 10);
        f.write_all_at(0, b"overwrite").expect("overwriting needs no room");
    }

    /// Protects determinism: the same seed and calls give the same surviving bytes.
    #[test]
    fn same_seed_same_outcome() {
        let run = |seed| {
            let s = setup(seed);
            s.set_faults(SimFaults { write_eio_rate: 0.2, ..SimFaults::default() });
            let f = s.open(&p("/d/a"), true).expect("open");
            for i in 0..20u8 {
                let _ = f.write_all_at(u64::from(i) * 3, &[i; 3]);
            }
            s.crash();
            content(&s, "/d/a")
        };
        for seed in 0..10 {
            assert_eq!(run(seed), run(seed));
        }
    }

    /// Protects renames and removals not made durable: they are undone by a crash (sometimes).
    #[test]
    fn unsynced_removal_can_be_undone() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..40 {
            let s = setup(seed);
            let f = s.open(&p("/d/a"), true).expect("open");
            f.write_all_at(0, b"keep").expect("write");
            f.sync().expect("sync");
            s.sync_dir(&p("/d")).expect("sync dir");
            s.remove(&p("/d/a")).expect("remove");
            assert!(!s.exists(&p("/d/a")).expect("exists"));
            s.crash();
            let c = content(&s, "/d/a");
            assert!(c.is_none() || c.as_deref() == Some(&b"keep"[..]));
            outcomes.insert(c.is_some());
        }
        assert_eq!(outcomes.len(), 2);
    }
}
