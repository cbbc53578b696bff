//! The issued JWT a TenantAccess's token checks send, kept at a fraction of its size.
//!
//! A token is checked only every `tokenCheckInterval` (and once after it is written), yet it is
//! held for as long as the access is registered: at 100,000 TenantAccesses its 350-odd bytes of
//! base64 were the largest single holder of the health checks' memory. The tokens of one
//! workspace differ in a few values only (the tenant's name and params, the expiry), so each is
//! kept as its signature and its decoded header and payload, LZ4-compressed against another token
//! of the same workspace (the [`TokenBasis`] the scheduler keeps per workspace). The JWT is
//! rebuilt, byte for byte, when a check is sent; a token that would not rebuild exactly (not
//! three unpadded base64url segments) is kept as written.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// An issued JWT, as written or compacted against a [`TokenBasis`]. `Debug` never shows it.
#[derive(Clone)]
pub struct IssuedToken(Repr);

#[derive(Clone)]
enum Repr {
    /// As written.
    Plain(Box<str>),
    /// The signature's length (one byte), the signature, then the header and payload JSON
    /// joined by [`SEPARATOR`], compressed against `basis`.
    Compact { basis: TokenBasis, bytes: Box<[u8]> },
}

/// Between the decoded header and payload (JSON text never holds a raw NUL).
const SEPARATOR: u8 = 0;

/// What the tokens of one workspace are compressed against: the decoded header and payload of one
/// of them.
#[derive(Clone)]
pub struct TokenBasis(Arc<[u8]>);

impl TokenBasis {
    /// The basis made of `token` (`None` if it is not a JWT that rebuilds exactly).
    #[must_use]
    pub fn of(token: &IssuedToken) -> Option<Self> {
        let Repr::Plain(text) = &token.0 else { return None };
        let (content, _) = decode(text)?;
        Some(Self(content.into()))
    }
}

impl IssuedToken {
    /// The token as written (surrounding whitespace removed).
    #[must_use]
    pub fn new(token: &str) -> Self {
        Self(Repr::Plain(token.trim().into()))
    }

    /// The token compressed against `basis`; `None` if it is compacted already or that would
    /// not rebuild it exactly.
    #[must_use]
    pub fn compacted(&self, basis: &TokenBasis) -> Option<Self> {
        let Repr::Plain(text) = &self.0 else { return None };
        let (content, signature) = decode(text)?;
        let length = u8::try_from(signature.len()).ok()?;
        let mut bytes = Vec::with_capacity(1 + signature.len() + content.len() / 2);
        bytes.push(length);
        bytes.extend_from_slice(&signature);
        bytes.extend_from_slice(&lz4_flex::block::compress_prepend_size_with_dict(&content, &basis.0));
        let compact = Self(Repr::Compact { basis: basis.clone(), bytes: bytes.into_boxed_slice() });
        (compact.to_jwt().as_deref() == Some(&**text)).then_some(compact)
    }

    /// The JWT as issued (`None` only if a compacted form no longer decodes: an operator bug).
    #[must_use]
    pub fn to_jwt(&self) -> Option<String> {
        match &self.0 {
            Repr::Plain(text) => Some(text.to_string()),
            Repr::Compact { basis, bytes } => {
                let (&length, rest) = bytes.split_first()?;
                let (signature, compressed) = rest.split_at_checked(usize::from(length))?;
                let content =
                    lz4_flex::block::decompress_size_prepended_with_dict(compressed, &basis.0).ok()?;
                let split = content.iter().position(|byte| *byte == SEPARATOR)?;
                let (header, payload) = (&content[..split], &content[split + 1..]);
                Some(format!(
                    "{}.{}.{}",
                    URL_SAFE_NO_PAD.encode(header),
                    URL_SAFE_NO_PAD.encode(payload),
                    URL_SAFE_NO_PAD.encode(signature)
                ))
            }
        }
    }

    /// Whether it is kept compacted.
    #[must_use]
    pub fn is_compact(&self) -> bool {
        matches!(self.0, Repr::Compact { .. })
    }
}

/// The same JWT, however each is kept (compared without copying or hashing either: plans are
/// compared at every reconcile).
impl PartialEq for IssuedToken {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Plain(a), Repr::Plain(b)) => a == b,
            (Repr::Compact { basis: a, bytes: x }, Repr::Compact { basis: b, bytes: y })
                if Arc::ptr_eq(&a.0, &b.0) =>
            {
                x == y
            }
            (Repr::Plain(text), _) => other.to_jwt().is_some_and(|jwt| *jwt == **text),
            (_, Repr::Plain(text)) => self.to_jwt().is_some_and(|jwt| *jwt == **text),
            _ => self.to_jwt().is_some_and(|jwt| other.to_jwt().as_ref() == Some(&jwt)),
        }
    }
}

impl fmt::Debug for TokenBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenBasis({} bytes)", self.0.len())
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The decoded header and payload joined by [`SEPARATOR`], and the signature, of a JWT whose
/// three segments are unpadded base64url that encode back to themselves.
fn decode(token: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut segments = token.split('.');
    let (header, payload, signature) = (segments.next()?, segments.next()?, segments.next()?);
    if segments.next().is_some() {
        return None;
    }
    let decoded = |segment: &str| {
        let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
        (URL_SAFE_NO_PAD.encode(&bytes) == segment).then_some(bytes)
    };
    let (header, payload, signature) = (decoded(header)?, decoded(payload)?, decoded(signature)?);
    if header.contains(&SEPARATOR) {
        return None;
    }
    let mut content = header;
    content.push(SEPARATOR);
    content.extend_from_slice(&payload);
    Some((content, signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two HS256 tokens of one workspace, as the operator issues them.
    fn token(tenant: &str, exp: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"workspace_id":"dd5fc7f2-4b91-4b06-8962-81e42ec7d939","name":"tenant-access.{tenant}.analytics","exp":{exp},"scopes":[{{"type":"PIPES:READ","resource":"top_pages","fixed_params":{{"tenant_id":"{tenant}"}}}}],"limits":{{"rps":10}}}}"#
        ));
        let signature = URL_SAFE_NO_PAD.encode([7u8; 32]);
        format!("{header}.{payload}.{signature}")
    }

    #[test]
    fn a_token_compacted_against_another_of_its_workspace_rebuilds_exactly_in_a_third_of_the_bytes() {
        let first = IssuedToken::new(&token("acme", 1_900_000_000));
        let basis = TokenBasis::of(&first).unwrap();
        let jwt = token("globex-corporation", 1_900_003_600);
        let compact = IssuedToken::new(&jwt).compacted(&basis).unwrap();
        assert!(compact.is_compact());
        assert!(compact.compacted(&basis).is_none(), "compacted once");
        assert_eq!(compact.to_jwt().as_deref(), Some(jwt.as_str()));
        assert!(compact == IssuedToken::new(&jwt) && IssuedToken::new(&jwt) == compact);
        assert!(compact == IssuedToken::new(&jwt).compacted(&basis).unwrap());
        assert!(compact != IssuedToken::new(&token("globex-corporation", 1_900_003_601)));
        let Repr::Compact { bytes, .. } = &compact.0 else { unreachable!() };
        assert!(bytes.len() * 3 <= jwt.len(), "{} bytes kept for a {}-byte token", bytes.len(), jwt.len());
    }

    #[test]
    fn what_does_not_rebuild_exactly_is_kept_as_written() {
        let basis = TokenBasis::of(&IssuedToken::new(&token("acme", 1))).unwrap();
        let padded = format!("{}=", token("acme", 2));
        for text in ["not a jwt", "a.b", "a.b.c.d", "ab\u{e9}.cd.ef", padded.as_str(), "QQ.QQ.QR"] {
            assert!(IssuedToken::new(text).compacted(&basis).is_none(), "{text}");
            assert_eq!(IssuedToken::new(text).to_jwt().as_deref(), Some(text));
        }
        assert!(TokenBasis::of(&IssuedToken::new("not a jwt")).is_none());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let jwt = token("acme", 1);
        let basis = TokenBasis::of(&IssuedToken::new(&jwt)).unwrap();
        for kept in [IssuedToken::new(&jwt), IssuedToken::new(&jwt).compacted(&basis).unwrap()] {
            assert_eq!(format!("{kept:?}"), "<redacted>");
        }
    }
}
