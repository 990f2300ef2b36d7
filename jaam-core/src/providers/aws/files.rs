//! An instance's `files`: written over SSM Run Command, not user data.
//!
//! User data runs once, at the first boot, and EC2 cannot change it without
//! a stop (Terraform replaces the instance); it is also capped at 16 KB. So
//! an `instance` may name `files` (absolute path → content) that jaam writes
//! on the running instance itself, and a `files_command` run after they
//! changed (a `site` reloads nginx, systemd and the log agent there). A
//! change of either is an update **in place**.
//!
//! # On the instance
//! The files travel in the same SSM command as the deploy (after the wait
//! for the boot script), gzip-compressed and base64-encoded, together with
//! their version: the first 16 hex digits of a SHA-256 over every path, mode
//! and content and the command ([`version`]). The instance keeps the version
//! it has in `/opt/jaam/files.version`; when that differs, each file is
//! written beside its path and renamed over it (a reader sees the old file
//! or the new one), then `files_command` runs, then the new version is
//! recorded. So every deploy command carries its files: an instance that
//! missed a delivery (a crash between the command and the state write, a
//! replacement, a restore) gets them with its next deploy, and one that has
//! them skips the writing.
//!
//! # Modes
//! Files are root's. One whose content starts with `#!` is installed 0755;
//! every other one 0600 (configuration read by root: nginx's master,
//! systemd, the log agent, and the env file the deploy script reads).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use sha2::Digest as _;

use crate::value::Value;

/// Where the instance records the version of the files it has.
pub const VERSION_FILE: &str = "/opt/jaam/files.version";

/// `files` as written: absolute paths, one line each, no `..` step.
///
/// # Errors
/// The first path that is not such a path, named.
pub fn check(value: &Value) -> std::result::Result<(), String> {
    let Value::Map(files) = value else {
        return Ok(());
    };
    for path in files.keys() {
        let fine = path.starts_with('/')
            && path.len() > 1
            && !path.ends_with('/')
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-@+".contains(c))
            && !path.split('/').any(|step| step == ".." || step == ".");
        if !fine {
            return Err(format!(
                "file path `{path}` must be absolute, with letters, digits and `/._-@+` only and no `.` or `..` step"
            ));
        }
    }
    Ok(())
}

/// The mode a file is installed with.
pub fn mode(content: &str) -> &'static str {
    if content.starts_with("#!") {
        "0755"
    } else {
        "0600"
    }
}

/// The version of `files` and `command`: what the instance compares.
pub fn version(files: &BTreeMap<String, String>, command: Option<&str>) -> String {
    let mut digest = sha2::Sha256::new();
    for (path, content) in files {
        digest.update(path.as_bytes());
        digest.update([0]);
        digest.update(mode(content).as_bytes());
        digest.update([0]);
        digest.update(content.len().to_le_bytes());
        digest.update(content.as_bytes());
    }
    digest.update(command.unwrap_or_default().as_bytes());
    hex::encode(digest.finalize())[..16].to_owned()
}

fn packed(content: &str) -> String {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(content.as_bytes())
        .expect("writing to memory");
    let bytes = encoder.finish().expect("writing to memory");
    let text = aws_smithy_types::base64::encode(bytes);
    // 76 columns, as base64(1) writes: short lines in the command.
    let mut out = String::with_capacity(text.len() + text.len() / 76 + 1);
    for chunk in text.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out
}

/// The shell lines that bring the instance to `files` (and run `command`
/// after writing them), unless it has their version already. Every failure
/// exits the script non-zero with a line on standard error.
pub fn delivery(files: &BTreeMap<String, String>, command: Option<&str>) -> Vec<String> {
    let version = version(files, command);
    let mut script = String::new();
    let _ = writeln!(
        script,
        "jaam_files={version}\n\
         if [ \"$(cat {VERSION_FILE} 2>/dev/null || true)\" != \"$jaam_files\" ]; then\n\
         jaam_put() (\n  set -euo pipefail\n  install -d -m 0755 \"$(dirname \"$1\")\"\n  \
         base64 -d | gunzip >\"$1.jaam-new\"\n  chmod \"$2\" \"$1.jaam-new\"\n  mv -f \"$1.jaam-new\" \"$1\"\n)"
    );
    for (path, content) in files {
        let _ = write!(
            script,
            "jaam_put {path} {mode} <<'JAAM_FILE' || {{ echo \"jaam: could not write {path}\" >&2; exit 1; }}\n{body}JAAM_FILE\n",
            mode = mode(content),
            body = packed(content),
        );
    }
    if let Some(command) = command.filter(|c| !c.trim().is_empty()) {
        let _ = writeln!(
            script,
            "{command} || {{ echo \"jaam: the files were written, but \\`{escaped}\\` failed\" >&2; exit 1; }}",
            escaped = command.replace(['"', '`', '$', '\\'], "")
        );
    }
    let _ = writeln!(
        script,
        "install -d -m 0755 {dir} && echo \"$jaam_files\" >{VERSION_FILE}.new && mv -f {VERSION_FILE}.new {VERSION_FILE} || \
         {{ echo \"jaam: could not record the files' version\" >&2; exit 1; }}\nfi",
        dir = VERSION_FILE.rsplit_once('/').map_or("/", |(dir, _)| dir),
    );
    script.lines().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_should_be_absolute_plain_and_without_dot_steps() {
        let map = |path: &str| Value::Map([(path.to_owned(), Value::from("x"))].into());
        assert!(check(&map("/opt/jaam/bin/deploy")).is_ok());
        for bad in [
            "opt/x",
            "/",
            "/opt/../etc/shadow",
            "/opt/./x",
            "/opt/x/",
            "/opt/x y",
            "/opt/$(id)",
            "/opt/x\n",
        ] {
            let error = check(&map(bad)).unwrap_err();
            assert!(error.contains("must be absolute"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_version_should_follow_every_path_content_mode_and_the_command() {
        let files = BTreeMap::from([("/a".to_owned(), "x".to_owned())]);
        let base = version(&files, Some("reload"));
        assert_eq!(base, version(&files, Some("reload")));
        assert_ne!(base, version(&files, Some("restart")));
        let moved = BTreeMap::from([("/b".to_owned(), "x".to_owned())]);
        assert_ne!(base, version(&moved, Some("reload")));
        let script = BTreeMap::from([("/a".to_owned(), "#!x".to_owned())]);
        assert_ne!(version(&files, None), version(&script, None));
    }

    /// The lines run for real: files land with their modes, the command runs
    /// once, and a second run with the same version writes nothing.
    #[test]
    fn delivery_should_write_each_file_once_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let files = BTreeMap::from([
            (
                format!("{root}/bin/tool"),
                "#!/bin/sh\necho hi\n".to_owned(),
            ),
            (
                format!("{root}/etc/app.env"),
                "TITLE='it'\\''s'\n".repeat(300),
            ),
        ]);
        let counter = format!("{root}/ran");
        let command = format!("echo once >>{counter}");
        let lines = delivery(&files, Some(&command));
        let script = lines
            .join("\n")
            .replace(VERSION_FILE, &format!("{root}/files.version"))
            .replace(
                "install -d -m 0755 /opt/jaam ",
                &format!("install -d -m 0755 {root} "),
            );
        for _ in 0..2 {
            let output = std::process::Command::new("bash")
                .args(["-c", &script])
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
        }
        for (path, content) in &files {
            assert_eq!(&std::fs::read_to_string(path).unwrap(), content);
        }
        use std::os::unix::fs::PermissionsExt as _;
        let mode_of = |path: &str| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode_of(&format!("{root}/bin/tool")), 0o755);
        assert_eq!(mode_of(&format!("{root}/etc/app.env")), 0o600);
        assert_eq!(std::fs::read_to_string(&counter).unwrap(), "once\n");
        // Compressed: the repeated env file travels in far fewer bytes.
        assert!(script.len() < 2_000, "{} bytes", script.len());
    }
}
