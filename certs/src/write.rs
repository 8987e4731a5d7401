//! Writing a [`DevCert`] out as PEM files, for `pantheon gen-cert`.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::dev_cert::DevCert;
use crate::error::Error;

/// The file names [`write_dev_cert_to_dir`] uses.
pub const CERT_FILE: &str = "cert.pem";
/// See [`CERT_FILE`].
pub const KEY_FILE: &str = "key.pem";

/// Writes the certificate and key as PEM to `cert_path` and `key_path`,
/// replacing any existing files. Each file is written beside its target and
/// renamed over it, so a reader never sees half a file; on Unix the key file
/// is created with mode 0600.
pub fn write_dev_cert(dev: &DevCert, cert_path: &Path, key_path: &Path) -> Result<(), Error> {
    // Key first: a watcher that catches the pair between the two renames sees
    // a new key with the old certificate, refuses the mismatch and keeps
    // serving, then loads both at its next poll.
    write_atomic(key_path, dev.key_pem(), Some(0o600))?;
    write_atomic(cert_path, dev.cert_pem(), None)
}

/// Writes [`CERT_FILE`] and [`KEY_FILE`] into `dir`, creating it if needed,
/// and returns their paths.
pub fn write_dev_cert_to_dir(dev: &DevCert, dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })?;
    let cert = dir.join(CERT_FILE);
    let key = dir.join(KEY_FILE);
    write_dev_cert(dev, &cert, &key)?;
    Ok((cert, key))
}

fn write_atomic(path: &Path, contents: &str, mode: Option<u32>) -> Result<(), Error> {
    let error = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);

    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;

    let written = (|| {
        // A leftover temporary file keeps its old mode: start afresh.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = options.open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(error)
}
