//! Names and directories of a test's own under the system's temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A name no other test, in this process or another, uses at the same time: `what`, this
/// process's pid and a counter.
pub fn unique_name(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("netgrace-{what}-{}-{n}", std::process::id())
}

/// A new empty directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A directory whose name is [`unique_name`]`(name)`.
    #[track_caller]
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(name));
        fs::create_dir(&path).unwrap_or_else(|err| panic!("create {}: {err}", path.display()));
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A leftover directory in the temporary directory is harmless; failing the test for it is not.
        let _ = fs::remove_dir_all(&self.0);
    }
}
