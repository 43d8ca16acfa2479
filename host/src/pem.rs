//! PEM CA bundles, read one way everywhere a TLS peer is verified against the operator's CA
//! (the listeners' client certificates, plugins' HTTPS grants, etcd, OTLP export, the `status`
//! client), so that each refuses an unreadable or empty bundle, and says so, in the same words.

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A CA bundle, read and checked: at least one certificate, each usable as a trust anchor.
pub struct CaBundle {
    /// The file's text, for clients that take PEM (etcd's).
    pub pem: Vec<u8>,
    /// Its certificates as rustls' trust anchors.
    pub roots: RootCertStore,
}

/// Read the PEM bundle at `path`.
pub fn ca_bundle(path: &Path) -> Result<CaBundle, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read CA bundle {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate
            .map_err(|e| format!("CA bundle {}: not a PEM certificate: {e}", path.display()))?;
        roots
            .add(certificate)
            .map_err(|e| format!("CA bundle {}: unusable certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "CA bundle {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(CaBundle { pem, roots })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_is_read_and_an_empty_or_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.internal".to_string()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["other".to_string()]).unwrap();
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, format!("{}{}", ca.cert.pem(), other.cert.pem())).unwrap();
        let read = ca_bundle(&bundle).unwrap();
        assert_eq!(read.roots.len(), 2);
        assert_eq!(read.pem, std::fs::read(&bundle).unwrap());

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = ca_bundle(&empty).err().unwrap();
        assert!(e.contains("empty.pem holds no PEM certificate"), "{e}");
        let e = ca_bundle(&dir.path().join("missing.pem")).err().unwrap();
        assert!(
            e.starts_with("cannot read CA bundle") && e.contains("missing.pem"),
            "{e}"
        );
    }
}
