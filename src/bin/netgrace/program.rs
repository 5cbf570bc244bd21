//! Which program file a worker is started from.
//!
//! The path this process was started from, so that installing a new binary there and sending
//! SIGHUP upgrades the workers. Not `/proc/self/exe`: once the file is replaced, that names the
//! old, deleted one ("... (deleted)"). But argv[0] is whatever the starter chose (`exec -a NAME`
//! sets it freely), and the file it names receives the live listening socket; so at startup it
//! must be the very file that is running (same device and inode), or restarts are refused.

use std::env;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The running executable on Linux, which exec(2) can start even once its path has been
/// replaced or removed.
const RUNNING: &str = "/proc/self/exe";

/// Where workers come from.
#[derive(Debug)]
pub(crate) struct Program {
    /// The file to run for every worker.
    pub(crate) path: PathBuf,
    /// `None` when SIGHUP may start workers from a new file at `path`; otherwise why not.
    pub(crate) restarts_refused: Option<String>,
}

impl Program {
    /// Resolves argv[0] now, while the working directory and `PATH` are the ones it was meant
    /// for, and checks that it names the running file.
    pub(crate) fn from_argv0() -> Program {
        let Some(path) = argv0_path() else {
            return Program::running("argv[0] names no program file");
        };
        let running = env::current_exe();
        if running.is_ok_and(|running| same_file(&path, &running)) {
            Program {
                path,
                restarts_refused: None,
            }
        } else {
            Program::running(&format!(
                "argv[0] resolves to {}, which is not the running program file",
                path.display()
            ))
        }
    }

    /// Workers from the running file itself; no upgrade is possible.
    fn running(why: &str) -> Program {
        let path = if cfg!(target_os = "linux") {
            PathBuf::from(RUNNING)
        } else {
            env::current_exe().unwrap_or_else(|_| PathBuf::from("netgrace"))
        };
        Program {
            path,
            restarts_refused: Some(why.to_string()),
        }
    }
}

fn argv0_path() -> Option<PathBuf> {
    let arg0 = PathBuf::from(env::args_os().next()?);
    if arg0.components().count() > 1 {
        // A path: make it absolute now, while the working directory is the one it was meant for.
        return Some(env::current_dir().map_or(arg0.clone(), |dir| dir.join(&arg0)));
    }
    // A bare name was found on PATH by whoever started us; find it the same way.
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(&arg0))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}
