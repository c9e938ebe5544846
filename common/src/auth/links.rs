//! Image and reference links: URLs that work with no header and no cookie (`=IMAGE()` in a Sheet,
//! a CLI table, a plain browser), never expire, and grant exactly one object.
//!
//! A link carries `?sig=`, the HMAC-SHA256 of the object's name (`images/{batch}/{scene}-v{n}.png`,
//! `refs/{sha256}`) under `ASSETGEN_LINK_SECRET`. Nothing else is signed, so a signature opens that
//! one object and no other; rotating the secret revokes every link at once. The relay checks the
//! signature and answers with the bytes, or a fresh short signed storage URL where the store signs.

use crate::config::Secret;
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The shortest secret accepted: 256 bits, the size of the HMAC-SHA256 output.
pub const MIN_LINK_SECRET_BYTES: usize = 32;

/// Domain separation: a link signature can never pass for anything else signed with the same key.
const CONTEXT: &[u8] = b"assetgen-link-v1\n";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the link secret must be at least {MIN_LINK_SECRET_BYTES} bytes long")]
pub struct WeakLinkSecret;

/// Signs and checks links to single objects.
#[derive(Clone)]
pub struct LinkSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(secret: ***)")
    }
}

impl LinkSigner {
    /// Every instance that makes or checks links must share `secret` (`ASSETGEN_LINK_SECRET`).
    pub fn new(secret: &Secret) -> Result<Self, WeakLinkSecret> {
        Self::from_bytes(secret.expose().as_bytes())
    }

    /// A fresh random secret: links work only while this process runs (local `serve`, tests).
    pub fn random() -> Self {
        let secret: [u8; 32] = rand::random();
        Self::from_bytes(&secret).unwrap_or_else(|_| unreachable!("32 random bytes are a strong enough secret"))
    }

    fn from_bytes(secret: &[u8]) -> Result<Self, WeakLinkSecret> {
        if secret.len() < MIN_LINK_SECRET_BYTES {
            return Err(WeakLinkSecret);
        }
        Ok(Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) })
    }

    fn message(object: &str) -> Vec<u8> {
        [CONTEXT, object.as_bytes()].concat()
    }

    /// The `sig` of a link to `object` (URL-safe base64, no padding).
    pub fn sign(&self, object: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, &Self::message(object)).as_ref())
    }

    /// Whether `sig` was made for exactly `object` with this secret (compared in constant time).
    pub fn verify(&self, object: &str, sig: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(sig.trim().trim_end_matches('=')) else { return false };
        hmac::verify(&self.key, &Self::message(object), &tag).is_ok()
    }

    /// `url` with `?sig=` for `object` appended.
    pub fn link(&self, url: &str, object: &str) -> String {
        format!("{url}?sig={}", self.sign(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_opens_its_object_only_and_dies_with_its_secret() {
        let signer = LinkSigner::new(&Secret::new("a-link-secret-of-at-least-thirty-two-bytes")).expect("secret");
        let sig = signer.sign("images/b/A-v1.png");
        assert!(signer.verify("images/b/A-v1.png", &sig));
        assert!(!signer.verify("images/b/A-v2.png", &sig), "another image");
        assert!(!signer.verify("refs/abc", &sig), "another kind of object");
        let mut tampered = sig.clone();
        tampered.replace_range(0..1, if sig.starts_with('A') { "B" } else { "A" });
        assert!(!signer.verify("images/b/A-v1.png", &tampered));
        assert!(!signer.verify("images/b/A-v1.png", ""));
        assert!(!signer.verify("images/b/A-v1.png", "not base64!"));
        let rotated = LinkSigner::new(&Secret::new("another-link-secret-of-thirty-two-bytes!")).expect("secret");
        assert!(!rotated.verify("images/b/A-v1.png", &sig), "rotating the secret revokes links");
        assert!(LinkSigner::new(&Secret::new("short")).is_err());
        assert!(!format!("{signer:?}").contains("thirty"));
    }
}
