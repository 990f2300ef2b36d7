//! Private files written safely: every file jaam writes beside the user's
//! (state snapshots, plan files, the daemon's delivery ids) goes through here.
//!
//! # Guarantees
//! - A temporary file is created exclusively (`O_CREAT|O_EXCL`, mode 0600)
//!   under a name nobody can predict: a symlink or file planted at that name
//!   makes the create fail instead of being followed or truncated.
//! - [`write_atomically`] renames the temporary file over the destination, so
//!   an existing destination — a file with looser permissions, or a symlink —
//!   is replaced by a new 0600 file, never written through.
//! - [`open_private`] opens an existing file without following a symlink.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// `O_NOFOLLOW` on Linux and the BSDs (the flag value differs: 0o400000 on
/// Linux, 0x100 on macOS and the BSDs).
#[cfg(target_os = "linux")]
pub(crate) const O_NOFOLLOW: i32 = 0o400_000;
#[cfg(not(target_os = "linux"))]
pub(crate) const O_NOFOLLOW: i32 = 0x100;

/// Creates a new 0600 file beside `path`, named `<path>.<tag>-<random>`.
///
/// # Errors
/// The create failed (including: something already has that name).
pub fn create_temporary(path: &Path, tag: &str) -> std::io::Result<(PathBuf, File)> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{tag}-{}", uuid::Uuid::new_v4().simple()));
    let temporary = PathBuf::from(name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    Ok((temporary, file))
}

/// Writes `bytes` to `path` through a new 0600 file and a rename, after an
/// fsync of the file (and of the directory when `durable`).
///
/// # Errors
/// Any step failed; the temporary file is removed and `path` is untouched.
pub fn write_atomically(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let (temporary, mut file) = create_temporary(path, "tmp")?;
    let written = file
        .write_all(bytes)
        .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    if durable && let Some(directory) = path.parent() {
        let directory = if directory.as_os_str().is_empty() {
            Path::new(".")
        } else {
            directory
        };
        File::open(directory)?.sync_all()?;
    }
    Ok(())
}

/// Opens `path` for appending (creating it 0600), refusing a symlink.
///
/// # Errors
/// The open failed, or `path` is a symlink.
pub fn open_private(path: &Path, append: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(!append)
        .write(true)
        .append(append)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn an_atomic_write_should_replace_a_symlink_and_a_loose_file_with_a_private_one() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "precious").unwrap();
        let path = dir.path().join("plan.json");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_atomically(&path, b"plan", false).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "plan");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());

        let loose = dir.path().join("loose.json");
        std::fs::write(&loose, "old").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&loose, b"new", true).unwrap();
        let mode = std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 3, "no temporary file is left behind");
    }

    #[test]
    fn opening_a_private_file_should_refuse_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "precious").unwrap();
        let path = dir.path().join("journal");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(open_private(&path, true).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    }
}
