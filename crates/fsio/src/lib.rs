//! Durable writes, once, for the whole workspace (it sits at the bottom of the crate graph).
//!
//! A reader (another process, or this one after a crash or `kill -9`) must only ever see the old
//! file or the new one, never a torn one. Every writer in the workspace goes through this crate:
//!
//! - [`write_atomic`] / [`write_atomic_with`]: a temporary sibling ([`temp_path`], same folder so the
//!   rename is atomic), written through the [`fault`] budget, `fsync`ed, renamed over the target,
//!   then the folder is `fsync`ed so the rename itself survives a power cut. On any error the
//!   temporary file is removed and the target is untouched.
//! - [`commit_dir`]: a fully written temporary folder replaces a folder (artifacts, reports): the old
//!   one is moved aside, the new one renamed in, the old one removed, the parent `fsync`ed.
//! - [`write_dir_atomic`]: a whole folder of files written that way.
//!
//! [`fault`] simulates a disk that fills up after N bytes, which is how the tests prove the above.

pub mod fault;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A temporary sibling of `path`: `.NAME.tmp-PID` in the same folder (so the rename is atomic, and
/// two processes never share one).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The folder `path` lives in (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// `fsync` of a folder, so that renames and new entries in it are durable. Folders cannot be opened
/// for syncing on every platform; where they cannot, this is a no-op.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically and durably (see the crate docs); creates the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |mut file| {
        file.write_all(bytes)?;
        Ok::<_, io::Error>(file)
    })
}

/// Like [`write_atomic`] for a writer that streams into the file (a Parquet writer, say): `fill`
/// takes the temporary file and hands it back when done. Errors of `fill` come back as they are.
pub fn write_atomic_with<E: From<io::Error>>(
    path: &Path,
    fill: impl FnOnce(fault::BudgetedFile) -> Result<fault::BudgetedFile, E>,
) -> Result<(), E> {
    let dir = parent_of(path);
    fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    let result: Result<(), E> = (|| {
        let file = fill(fault::create(&tmp)?)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the fully written folder `tmp` the folder `dest`, replacing what was there: `dest` is moved
/// to `.NAME.old-PID`, `tmp` renamed to `dest`, the old folder removed, and the parent synced. A
/// reader sees the old folder or the new one; after a crash between the two renames, `dest` is
/// absent (a miss, rebuilt), never mixed.
pub fn commit_dir(tmp: &Path, dest: &Path) -> io::Result<()> {
    let parent = parent_of(dest);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if dest.exists() {
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
        fs::rename(dest, &old)?;
    }
    fs::rename(tmp, dest)?;
    sync_dir(parent)?;
    if old.exists() {
        fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// Writes `files` (relative path, contents) as the whole contents of the folder `dir`, replacing
/// what was there, through a temporary folder and [`commit_dir`]. Each file goes through the
/// [`fault`] budget and is synced. On error nothing of the new folder is left and `dir` is as it was.
pub fn write_dir_atomic(dir: &Path, files: &[(String, Vec<u8>)]) -> io::Result<()> {
    let parent = parent_of(dir);
    fs::create_dir_all(parent)?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    let result = (|| {
        for (rel, contents) in files {
            let path = tmp.join(rel);
            fs::create_dir_all(parent_of(&path))?;
            let mut f = fault::create(&path)?;
            f.write_all(contents)?;
            f.sync_all()?;
        }
        commit_dir(&tmp, dir)
    })();
    if result.is_err() && tmp.exists() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_full_disk_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"old contents").unwrap();
        let err = fault::with_budget(5, || write_atomic(&p, &[7u8; 64])).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC");
        assert_eq!(fs::read(&p).unwrap(), b"old contents");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        // Within the budget it succeeds.
        fault::with_budget(1000, || write_atomic(&p, b"new")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn streaming_writer_errors_come_back_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.parquet");
        let r: Result<(), io::Error> = write_atomic_with(&p, |mut f| {
            f.write_all(b"half")?;
            Err(io::Error::other("encoder failed"))
        });
        assert_eq!(r.unwrap_err().to_string(), "encoder failed");
        assert!(!p.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn folder_writes_are_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report");
        let files = |tag: &str| vec![("index.html".to_string(), tag.as_bytes().to_vec()), ("figures/a.svg".to_string(), vec![b'x'; 100])];
        write_dir_atomic(&out, &files("v1")).unwrap();
        // A disk that fills up mid-folder: the old folder stays whole, no temporary folder remains.
        assert!(fault::with_budget(50, || write_dir_atomic(&out, &files("v2"))).is_err());
        assert_eq!(fs::read(out.join("index.html")).unwrap(), b"v1");
        assert_eq!(fs::read(out.join("figures/a.svg")).unwrap().len(), 100);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "only the report folder");
        write_dir_atomic(&out, &files("v2")).unwrap();
        assert_eq!(fs::read(out.join("index.html")).unwrap(), b"v2");
    }
}
