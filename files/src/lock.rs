//! An exclusive lock on a directory, so two processes never write one run directory.
//!
//! The lock is an OS file lock (`flock` on Unix, `LockFileEx` on Windows, through std's
//! `File::try_lock`) on `<dir>/rxla.lock`, which also holds the holder's pid. The OS drops
//! the lock when its process dies, however it dies, so a lock left by a killed process is
//! never held: the next process takes it over and learns the dead holder's pid from the file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside the locked directory.
pub const LOCK_FILE: &str = "rxla.lock";

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
    /// The pid a previous holder left in the file: it died without releasing (kill -9).
    pub took_over_from: Option<u32>,
}

impl DirLock {
    /// Locks `dir` (which must exist), or fails with [`Error::Locked`] naming the holder's pid.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening lock file {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    dir: dir.display().to_string(),
                    pid: read_pid(&mut file),
                })
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e))
            }
        }
        let took_over_from = read_pid(&mut file).filter(|&p| p != std::process::id());
        let pid = format!("{}\n", std::process::id());
        (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(pid.as_bytes())?;
            file.flush()
        })()
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(DirLock {
            file,
            path,
            took_over_from,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    /// A clean exit empties the file, so only a holder that died leaves its pid behind. The
    /// file itself stays: deleting it would let a waiting process lock an unlinked file.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Locks `path` (created if missing) exclusively, waiting while another process holds it
/// (a line on stderr says for what). The lock lasts as long as the returned file is open.
pub fn wait_for_lock(path: &Path, holder: &str) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(format!("opening lock file {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(TryLockError::WouldBlock) => eprintln!("rxla: waiting for {holder}"),
        Err(TryLockError::Error(e)) => {
            return Err(Error::io(format!("locking {}", path.display()), e))
        }
    }
    file.lock()
        .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
    Ok(file)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_a_dead_holder_is_taken_over() {
        let dir = std::env::temp_dir().join(format!("rxla-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = DirLock::acquire(&dir).unwrap();
        assert_eq!(a.took_over_from, None);
        // A second open file description is refused even within one process.
        match DirLock::acquire(&dir) {
            Err(Error::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(a);
        let b = DirLock::acquire(&dir).unwrap();
        assert_eq!(b.took_over_from, None, "a clean release leaves no pid");
        drop(b);
        // What a killed holder leaves: its pid in an unlocked file.
        std::fs::write(dir.join(LOCK_FILE), "4194304\n").unwrap();
        let c = DirLock::acquire(&dir).unwrap();
        assert_eq!(c.took_over_from, Some(4194304));
        let text = std::fs::read_to_string(c.path()).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn waiting_lock_waits_for_the_holder() {
        let dir = std::env::temp_dir().join(format!("rxla-wait-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pkg.lock");
        let held = wait_for_lock(&p, "test").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        let waiter = std::thread::spawn(move || {
            let _l = wait_for_lock(&p2, "the holder").unwrap();
            tx.send(()).unwrap();
        });
        // Still held: the waiter cannot have the lock yet.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("the waiter gets the lock once it is released");
        waiter.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
