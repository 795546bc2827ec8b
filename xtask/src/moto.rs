//! moto's S3 server (PyPI `moto[server]`) for the tests of blobs on S3:
//! a virtualenv in the target directory, made on first use. The tests
//! start the server themselves on a loopback port (`sop_backends::LocalS3`)
//! and find it through `SOP_MOTO_SERVER`.

use std::path::PathBuf;
use std::process::Command;

use crate::target_dir;

/// The `moto_server` of the virtualenv, installing moto when missing.
pub(crate) fn install() -> Result<PathBuf, String> {
    let venv = target_dir().join("venv-moto");
    let bin = venv.join("bin").join("moto_server");
    if bin.exists() {
        return Ok(bin);
    }
    let mut make = Command::new("python3");
    make.args(["-m", "venv"]).arg(&venv);
    crate::run(make).map_err(|e| format!("{e} (is python3-venv installed?)"))?;
    let mut pip = Command::new(venv.join("bin").join("pip"));
    pip.args(["install", "--quiet", "moto[server]==5.*"]);
    crate::run(pip)?;
    Ok(bin)
}
