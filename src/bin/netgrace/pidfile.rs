//! `--pid-file PATH`: the master's pid, for supervisors and scripts that signal by file
//! (`kill -HUP "$(cat PATH)"`). Written once the service serves, so that a pid in the file means
//! a service that can take the signal; removed at exit.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use log::warn;

/// A pid file this process wrote.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
}

/// Refuses a path that names a live netgrace other than this process: two services told to
/// use one pid file would otherwise take each other's signals. A stale file (its process is
/// gone, or is another program) is fine, and so is our own pid: in a container's fresh PID
/// namespace, a file left by the last run says 1, which is now us.
pub(crate) fn check(path: &Path) -> io::Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(());
    };
    if pid == std::process::id() {
        return Ok(());
    }
    let command = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if command.starts_with("netgrace") {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "pid file {}: netgrace pid {pid} is running and uses it",
                path.display()
            ),
        ));
    }
    Ok(())
}

impl PidFile {
    /// Writes our pid to `path`, whole or not at all: into a file beside it, then renamed over.
    pub(crate) fn write(path: &Path) -> io::Result<PidFile> {
        let mut staged = path.as_os_str().to_owned();
        staged.push(".tmp");
        let staged = PathBuf::from(staged);
        let written = fs::File::create(&staged)
            .and_then(|mut file| writeln!(file, "{}", std::process::id()))
            .and_then(|()| fs::rename(&staged, path));
        if let Err(err) = written {
            let _ = fs::remove_file(&staged);
            return Err(io::Error::new(
                err.kind(),
                format!("write pid file {}: {err}", path.display()),
            ));
        }
        Ok(PidFile {
            path: path.to_owned(),
        })
    }
}

impl Drop for PidFile {
    /// Removed at exit, unless it no longer holds our pid (someone else took the path over).
    fn drop(&mut self) {
        let ours = fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            if let Err(err) = fs::remove_file(&self.path) {
                warn!("remove pid file {}: {err}", self.path.display());
            }
        }
    }
}
