//! [`FsStorage`]: the real file system behind the [`Storage`] seam.
//!
//! Positional I/O (`pread`/`pwrite` through [`FileExt`]), `fdatasync` for [`StorageFile::sync`],
//! and directory fsync (open the directory, `fsync` it) for [`Storage::sync_dir`]. It holds no
//! state: paths are used as given.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{Storage, StorageFile};

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStorage;

impl FsStorage {
    pub fn new() -> Arc<FsStorage> {
        Arc::new(FsStorage)
    }
}

/// An open file of [`FsStorage`].
#[derive(Debug)]
struct FsFile {
    file: File,
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        list_where(dir, |t| t.is_file())
    }

    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        list_where(dir, |t| t.is_dir())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).create(create).open(path)?;
        Ok(Arc::new(FsFile { file }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn available_bytes(&self, dir: &Path) -> io::Result<Option<u64>> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `c_path` is a valid NUL-terminated string and `st` points to writable memory
        // of the right type; statvfs writes only into it.
        let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statvfs returned 0, so it filled `st`.
        let st = unsafe { st.assume_init() };
        #[allow(clippy::useless_conversion)] // the field widths differ between platforms
        let bytes = u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize));
        Ok(Some(bytes))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // `Path::parent` of a relative name is the empty path: the current directory.
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        File::open(dir)?.sync_all()
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

impl StorageFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    fn write_all_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, pos)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Names of the entries of `dir` whose file type passes `keep`, sorted.
fn list_where(dir: &Path, keep: impl Fn(&fs::FileType) -> bool) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !keep(&entry.file_type()?) {
            continue;
        }
        // Names that are not UTF-8 are not Keel's; skip them rather than fail.
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protects the trait contract the log relies on: positional I/O, sorted listing of regular
    /// files only, rename replacing the target, NotFound without `create`.
    #[test]
    fn fs_storage_basic_contract() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p");
        let s = FsStorage;
        s.create_dir_all(&dir).expect("mkdir");
        s.create_dir_all(&dir.join("sub")).expect("mkdir sub");
        let b = s.open(&dir.join("b"), true).expect("open b");
        b.write_all_at(3, b"xyz").expect("write");
        assert_eq!(b.len().expect("len"), 6);
        let mut buf = [9u8; 6];
        b.read_exact_at(0, &mut buf).expect("read");
        assert_eq!(&buf, b"\0\0\0xyz");
        assert_eq!(b.read_exact_at(4, &mut buf).map_err(|e| e.kind()), Err(io::ErrorKind::UnexpectedEof));
        b.set_len(4).expect("set_len");
        b.sync().expect("sync");
        s.open(&dir.join("a"), true).expect("open a");
        assert_eq!(s.list(&dir).expect("list"), vec!["a".to_string(), "b".to_string()]);
        s.rename(&dir.join("b"), &dir.join("a")).expect("rename");
        s.sync_dir(&dir).expect("sync dir");
        assert_eq!(s.list(&dir).expect("list"), vec!["a".to_string()]);
        assert_eq!(s.open(&dir.join("a"), false).expect("open").len().expect("len"), 4);
        assert_eq!(s.open(&dir.join("zz"), false).map(|_| ()).map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
        assert!(s.exists(&dir.join("a")).expect("exists"));
        s.remove(&dir.join("a")).expect("remove");
        assert!(!s.exists(&dir.join("a")).expect("exists"));
        s.remove_dir_all(&dir).expect("rmdir");
        assert!(!s.exists(&dir).expect("exists"));
    }
}
