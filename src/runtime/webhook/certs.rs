//! The webhook's own CA and serving certificate (rcgen, aws-lc-rs): made, renewed before
//! expiry, and how they are kept in a Secret. Pure but for the randomness of new keys.
//!
//! The Secret holds `ca.crt` and `ca.key` (the CA), `tls.crt` and `tls.key` (the serving
//! certificate, signed by the CA), and, for a while after the CA was renewed, `previous-ca.crt`:
//! the `caBundle` carries both CAs until the old one expires, so that a certificate signed by
//! either is trusted. When the certificates expire and for which names is kept in annotations
//! (the operator never parses X.509).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

/// Annotation: when the CA expires (RFC 3339).
pub const ANNOTATION_CA_NOT_AFTER: &str = "tenantaccess.dev/webhook-ca-not-after";
/// Annotation: when the previous CA expires (RFC 3339), while `previous-ca.crt` is kept.
pub const ANNOTATION_PREVIOUS_CA_NOT_AFTER: &str = "tenantaccess.dev/webhook-previous-ca-not-after";
/// Annotation: when the serving certificate expires (RFC 3339).
pub const ANNOTATION_CERT_NOT_AFTER: &str = "tenantaccess.dev/webhook-cert-not-after";
/// Annotation: the names the serving certificate is valid for, comma-separated.
pub const ANNOTATION_CERT_HOSTS: &str = "tenantaccess.dev/webhook-cert-hosts";

/// Subject of the CA (also the issuer of every serving certificate it signs).
const CA_NAME: &str = "tenant-access-operator webhook CA";
/// How far back a new certificate is valid from: clocks of the API server and the operator
/// may differ a little.
const BACKDATE: SignedDuration = SignedDuration::from_mins(5);

/// How long certificates are valid. Each is renewed once less than a third of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The CA's.
    pub ca: Duration,
    /// The serving certificate's.
    pub serving: Duration,
}

impl Default for Validity {
    /// A CA of five years, serving certificates of 90 days (renewed after 60).
    fn default() -> Self {
        Self { ca: Duration::from_secs(5 * 365 * 86_400), serving: Duration::from_secs(90 * 86_400) }
    }
}

/// A certificate or key that cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("making the webhook certificate: {0}")]
pub struct CertError(String);

impl From<rcgen::Error> for CertError {
    fn from(error: rcgen::Error) -> Self {
        Self(error.to_string())
    }
}

/// The CA and serving certificate, as kept in the Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// The CA certificate (PEM).
    pub ca_cert: String,
    /// The CA key (PEM).
    pub ca_key: String,
    /// When the CA expires.
    pub ca_not_after: Timestamp,
    /// The previous CA (PEM) and when it expires, kept in the bundle until then.
    pub previous_ca: Option<(String, Timestamp)>,
    /// The serving certificate (PEM).
    pub cert: String,
    /// Its key (PEM).
    pub key: String,
    /// When it expires.
    pub cert_not_after: Timestamp,
    /// The names it is valid for.
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("ca_not_after", &self.ca_not_after)
            .field("cert_not_after", &self.cert_not_after)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// What is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Nothing.
    None,
    /// A new serving certificate from the same CA (it nears expiry, or the names changed).
    Serving,
    /// A new CA and serving certificate (nothing usable is kept, or the CA nears expiry).
    All,
}

impl Material {
    /// The `caBundle`: the CA, and the previous one while it is valid at `now`.
    #[must_use]
    pub fn ca_bundle(&self, now: Timestamp) -> String {
        let mut bundle = self.ca_cert.clone();
        if let Some((previous, not_after)) = &self.previous_ca
            && *not_after > now
        {
            bundle.push_str(previous);
        }
        bundle
    }

    /// What is due at `now` for a certificate valid for `hosts`.
    #[must_use]
    pub fn due(&self, hosts: &[String], now: Timestamp, validity: Validity) -> Renewal {
        if now >= renew_at(self.ca_not_after, validity.ca) {
            Renewal::All
        } else if now >= renew_at(self.cert_not_after, validity.serving) || self.hosts != hosts {
            Renewal::Serving
        } else {
            Renewal::None
        }
    }

    /// When the next renewal is due.
    #[must_use]
    pub fn next_renewal(&self, validity: Validity) -> Timestamp {
        renew_at(self.ca_not_after, validity.ca).min(renew_at(self.cert_not_after, validity.serving))
    }

    /// The Secret's data and annotations.
    #[must_use]
    pub fn to_secret(&self) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, String>) {
        let mut data = BTreeMap::from([
            ("ca.crt".to_owned(), self.ca_cert.clone().into_bytes()),
            ("ca.key".to_owned(), self.ca_key.clone().into_bytes()),
            ("tls.crt".to_owned(), self.cert.clone().into_bytes()),
            ("tls.key".to_owned(), self.key.clone().into_bytes()),
        ]);
        let mut annotations = BTreeMap::from([
            (ANNOTATION_CA_NOT_AFTER.to_owned(), self.ca_not_after.to_string()),
            (ANNOTATION_CERT_NOT_AFTER.to_owned(), self.cert_not_after.to_string()),
            (ANNOTATION_CERT_HOSTS.to_owned(), self.hosts.join(",")),
        ]);
        if let Some((previous, not_after)) = &self.previous_ca {
            data.insert("previous-ca.crt".to_owned(), previous.clone().into_bytes());
            annotations.insert(ANNOTATION_PREVIOUS_CA_NOT_AFTER.to_owned(), not_after.to_string());
        }
        (data, annotations)
    }

    /// Reads what [`Material::to_secret`] wrote; `None` when anything is missing or garbled
    /// (then everything is made anew).
    #[must_use]
    pub fn from_secret(
        data: &BTreeMap<String, Vec<u8>>,
        annotations: &BTreeMap<String, String>,
    ) -> Option<Self> {
        let text = |key: &str| {
            data.get(key).and_then(|v| String::from_utf8(v.clone()).ok()).filter(|t| !t.is_empty())
        };
        let time = |key: &str| annotations.get(key).and_then(|t| t.parse::<Timestamp>().ok());
        let previous_ca = match (text("previous-ca.crt"), time(ANNOTATION_PREVIOUS_CA_NOT_AFTER)) {
            (Some(pem), Some(not_after)) => Some((pem, not_after)),
            _ => None,
        };
        Some(Self {
            ca_cert: text("ca.crt")?,
            ca_key: text("ca.key")?,
            ca_not_after: time(ANNOTATION_CA_NOT_AFTER)?,
            previous_ca,
            cert: text("tls.crt")?,
            key: text("tls.key")?,
            cert_not_after: time(ANNOTATION_CERT_NOT_AFTER)?,
            hosts: hosts_of(annotations.get(ANNOTATION_CERT_HOSTS)?),
        })
    }
}

fn hosts_of(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned).collect()
}

/// When a certificate expiring at `not_after`, valid for `validity`, is renewed: once less than
/// a third of its validity is left.
fn renew_at(not_after: Timestamp, validity: Duration) -> Timestamp {
    let third = SignedDuration::try_from(validity / 3).unwrap_or(SignedDuration::MAX);
    not_after.checked_sub(third).unwrap_or(Timestamp::MIN)
}

/// Renews what is due: `Renewal::All` (or no usable `current`) makes a new CA, keeping the
/// old one in the bundle while it is valid; `Renewal::Serving` signs a new serving certificate
/// with the current CA.
///
/// # Errors
/// When a key or certificate cannot be made, or the stored CA key cannot be read.
pub fn renew(
    current: Option<&Material>,
    renewal: Renewal,
    hosts: &[String],
    now: Timestamp,
    validity: Validity,
) -> Result<Material, CertError> {
    let (ca_cert, ca_key, ca_not_after, previous_ca) = match (current, renewal) {
        (Some(current), Renewal::None | Renewal::Serving) => (
            current.ca_cert.clone(),
            current.ca_key.clone(),
            current.ca_not_after,
            current.previous_ca.clone().filter(|(_, not_after)| *not_after > now),
        ),
        (current, _) => {
            let key = KeyPair::generate()?;
            let not_after = after(now, validity.ca);
            let cert = ca_params(now, not_after)?.self_signed(&key)?;
            let previous =
                current.filter(|c| c.ca_not_after > now).map(|c| (c.ca_cert.clone(), c.ca_not_after));
            (cert.pem(), key.serialize_pem(), not_after, previous)
        }
    };
    let issuer = Issuer::new(ca_params(now, ca_not_after)?, KeyPair::from_pem(&ca_key)?);
    // A serving certificate never outlives its CA.
    let cert_not_after = after(now, validity.serving).min(ca_not_after);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name =
        distinguished_name(hosts.first().map_or("tenant-access-operator-webhook", String::as_str));
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(now))?;
    params.not_after = offset(cert_not_after)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Material {
        ca_cert,
        ca_key,
        ca_not_after,
        previous_ca,
        cert: cert.pem(),
        key: key.serialize_pem(),
        cert_not_after,
        hosts: hosts.to_vec(),
    })
}

/// The CA's parameters: the same subject every time, so that a CA key read back from the
/// Secret signs certificates whose issuer is that CA.
fn ca_params(now: Timestamp, not_after: Timestamp) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(now))?;
    params.not_after = offset(not_after)?;
    Ok(params)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn after(now: Timestamp, validity: Duration) -> Timestamp {
    SignedDuration::try_from(validity).ok().and_then(|v| now.checked_add(v).ok()).unwrap_or(Timestamp::MAX)
}

fn offset(at: Timestamp) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(at.as_second()).map_err(|e| CertError(e.to_string()))
}

#[cfg(test)]
mod tests;
