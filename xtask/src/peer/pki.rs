//! The private CA of the `tlsca` gateway (made with the openssl CLI), and HTTPS readiness checks for the TLS gateways.

use std::fs;
use std::os::unix::fs::chown;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::{users, Layout, USER_WITH_OPENCLAW};
use crate::util::{run_command, set_mode};

/// Files of the private CA and the gateway certificate it signed.
pub struct Pki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Where the CA lives (kept across starts; regenerated when missing).
pub fn pki_files(layout: &Layout) -> Pki {
    let dir = layout.prefix.join("pki");
    Pki {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("gateway.pem"),
        server_key: dir.join("gateway.key"),
    }
}

/// Makes a CA and a gateway certificate for 127.0.0.1/localhost signed by it, readable by
/// claw (the gateway runs as claw). Idempotent.
pub fn ensure_private_ca(layout: &Layout) -> Result<Pki> {
    let pki = pki_files(layout);
    let dir = pki.ca_cert.parent().expect("pki dir").to_path_buf();
    if pki.ca_cert.exists() && pki.server_cert.exists() && pki.server_key.exists() {
        return Ok(pki);
    }
    fs::create_dir_all(&dir)?;
    set_mode(&dir, 0o755)?;
    let ca_key = dir.join("ca.key");
    let csr = dir.join("gateway.csr");
    let ext = dir.join("gateway.ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run_command(
        Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&pki.ca_cert)
            .args(["-days", "60", "-subj", "/CN=clawlink test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .stderr(Stdio::null()),
    )
    .context("creating the test CA with openssl")?;
    run_command(
        Command::new("openssl")
            .arg("req")
            .args(ec)
            .arg("-keyout")
            .arg(&pki.server_key)
            .arg("-out")
            .arg(&csr)
            .args(["-subj", "/CN=127.0.0.1"])
            .stderr(Stdio::null()),
    )
    .context("creating the gateway key with openssl")?;
    fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    run_command(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "60"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&pki.ca_cert)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&pki.server_cert)
            .stderr(Stdio::null()),
    )
    .context("signing the gateway certificate with openssl")?;
    let claw = users::lookup(USER_WITH_OPENCLAW).context("user claw missing")?;
    for file in [&pki.server_cert, &pki.server_key, &pki.ca_cert] {
        chown(file, Some(claw.uid), Some(claw.gid))?;
    }
    set_mode(&pki.server_key, 0o600)?;
    set_mode(&ca_key, 0o600)?;
    Ok(pki)
}

/// `GET https://127.0.0.1:PORT/readyz` answers 200 (certificate not checked: this is a
/// readiness probe of our own gateway). Python's stdlib does the TLS.
pub fn https_ready(port: u16) -> bool {
    let script = format!(
        "import ssl,urllib.request\n\
         ctx=ssl._create_unverified_context()\n\
         r=urllib.request.urlopen('https://127.0.0.1:{port}/readyz',context=ctx,timeout=2)\n\
         raise SystemExit(0 if r.status==200 else 1)\n"
    );
    Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
