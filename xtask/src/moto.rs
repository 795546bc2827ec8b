//! moto's S3 server (PyPI `moto[server]`) for the tests of blobs on S3:
//! a virtualenv in the target directory, made on first use. The tests
//! start the server themselves on a loopback port (`sop_backends::LocalS3`)
//! and find it through `SOP_MOTO_SERVER`.

use std::path::PathBuf;

/// The `moto_server` of the virtualenv, installing moto when missing.
pub(crate) fn install() -> Result<PathBuf, String> {
    crate::venv_tool("venv-moto", "moto[server]==5.*", "moto_server")
}
