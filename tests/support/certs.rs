//! [`Pki`]: a throwaway certificate authority made with rcgen for one test, with a server
//! certificate for `127.0.0.1` and `localhost` and a client certificate, written as PEM files
//! into a temporary folder. Nothing is committed; every run makes new keys.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA and the certificates it signed, as PEM files in [`Pki::dir`].
pub struct Pki {
    dir: tempfile::TempDir,
    ca: Certificate,
    ca_key: KeyPair,
    /// The CA certificate (PEM), for clients to trust and for `server.tls.client_ca`.
    pub ca_pem: String,
    /// The client certificate followed by its key (PEM), for `reqwest::Identity::from_pem`.
    pub client_identity_pem: String,
}

impl Pki {
    /// A new CA named `name`, with `ca.pem`, `server.pem`, `server.key`, `client.pem` and
    /// `client.key` written into a new temporary folder.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::Builder::new().prefix("quotagate-pki-").tempdir().expect("create a temp dir");
        let ca_key = KeyPair::generate().expect("generate a key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SANs are valid");
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).expect("self-sign the CA");
        let ca_pem = ca.pem();
        let pki = Pki { dir, ca, ca_key, ca_pem, client_identity_pem: String::new() };
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).expect("write ca.pem");
        pki.issue_server("server");
        let (cert, key) = pki.issue(&["quotagate-client"], ExtendedKeyUsagePurpose::ClientAuth);
        std::fs::write(pki.path("client.pem"), &cert).expect("write client.pem");
        std::fs::write(pki.path("client.key"), &key).expect("write client.key");
        Pki { client_identity_pem: format!("{cert}{key}"), ..pki }
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A file in [`Pki::dir`].
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Writes a new server certificate for `127.0.0.1` and `localhost` to `<stem>.pem` and its
    /// key to `<stem>.key`, replacing them (renamed into place, as a certificate manager does).
    pub fn issue_server(&self, stem: &str) {
        let (cert, key) = self.issue(&["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth);
        for (ext, pem) in [("pem", cert), ("key", key)] {
            let tmp = self.path(&format!("{stem}.{ext}.tmp"));
            std::fs::write(&tmp, pem).expect("write a PEM file");
            std::fs::rename(&tmp, self.path(&format!("{stem}.{ext}"))).expect("rename a PEM file");
        }
    }

    /// A certificate (PEM) for `names` signed by this CA, and its key (PEM).
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().expect("generate a key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("valid SANs");
        params.distinguished_name.push(DnType::CommonName, names[0].clone());
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).expect("sign a certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// An HTTPS client that trusts this CA only; with `identity`, it presents the client
    /// certificate. HTTP/2 is offered by ALPN, as Traefik's Go client does.
    pub fn client(&self, identity: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM"));
        if identity {
            builder = builder.identity(
                reqwest::Identity::from_pem(self.client_identity_pem.as_bytes()).expect("client PEM"),
            );
        }
        builder.build().expect("a reqwest client with these options builds")
    }
}
