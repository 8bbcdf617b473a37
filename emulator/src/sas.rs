//! Shared access signatures as the hub checks them, written for the emulator alone (it must not share
//! code with the client it tests).
//!
//! A token is `SharedAccessSignature k=v&k=v…` with the fields in any order: `sr` (the resource
//! URI, percent-encoded), `sig` (base64 HMAC-SHA256, percent-encoded), `se` (expiry, epoch seconds)
//! and `skn` (the policy name; optional for IoT Hub). The signed text is the `sr` value exactly as
//! it appears in the token, a newline, and the `se` value. Event Hubs keys the HMAC with the key
//! string's UTF-8 bytes; IoT Hub with the base64-decoded key.
//!
//! Invariant: no error text contains the signature or any key material.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the policy key becomes the HMAC key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUse {
    /// Event Hubs: the key string's bytes.
    Text,
    /// IoT Hub: the base64-decoded key.
    Base64,
}

/// A token's fields. `Debug` leaves out the signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// `sr` as it appears in the token (still percent-encoded): the signed text.
    pub sr_raw: String,
    /// `sr` decoded.
    pub resource: String,
    pub sig: Vec<u8>,
    pub expiry: u64,
    pub key_name: Option<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("resource", &self.resource)
            .field("expiry", &self.expiry)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

/// Characters left as they are when encoding `sr` (RFC 3986 unreserved).
const SR_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn decode(field: &str, v: &str) -> Result<String, String> {
    percent_decode_str(v)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("the token's '{field}' field is not valid percent-encoded UTF-8"))
}

/// Reads a token. Errors name the problem, never the signature.
pub fn parse(token: &str) -> Result<Token, String> {
    let body = token
        .trim()
        .strip_prefix("SharedAccessSignature ")
        .ok_or("a SAS token starts with 'SharedAccessSignature '")?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or("a SAS token field has no '='")?;
        let slot = match k {
            "sr" => &mut sr,
            "sig" => &mut sig,
            "se" => &mut se,
            "skn" => &mut skn,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(format!("the token's '{k}' field appears twice"));
        }
    }
    let sr_raw = sr.ok_or("the token has no 'sr' field")?;
    let sig = sig.ok_or("the token has no 'sig' field")?;
    let se = se.ok_or("the token has no 'se' field")?;
    let expiry = se
        .parse::<u64>()
        .map_err(|_| "the token's 'se' field is not a number of seconds".to_string())?;
    let sig = STANDARD
        .decode(decode("sig", sig)?.trim())
        .map_err(|_| "the token's signature is not base64".to_string())?;
    Ok(Token {
        sr_raw: sr_raw.to_string(),
        resource: decode("sr", sr_raw)?,
        sig,
        expiry,
        key_name: skn.map(|s| decode("skn", s)).transpose()?,
    })
}

fn mac_key(key: &str, key_use: KeyUse) -> Result<Vec<u8>, String> {
    match key_use {
        KeyUse::Text => Ok(key.as_bytes().to_vec()),
        KeyUse::Base64 => STANDARD
            .decode(key.trim())
            .map_err(|_| "the hub's key is not base64".to_string()),
    }
}

fn mac(key: &[u8], sr: &str, expiry: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(sr.as_bytes());
    m.update(b"\n");
    m.update(expiry.as_bytes());
    m
}

/// Checks the signature (in constant time) and the expiry against `now` (epoch seconds).
pub fn verify(token: &Token, key: &str, key_use: KeyUse, now: u64) -> Result<(), String> {
    let k = mac_key(key, key_use)?;
    let se = token.expiry.to_string();
    let signed_raw = mac(&k, &token.sr_raw, &se).verify_slice(&token.sig).is_ok();
    // Some clients put `sr` decoded in the token but sign it encoded.
    let signed_encoded = !signed_raw
        && mac(&k, &encode(&token.resource), &se)
            .verify_slice(&token.sig)
            .is_ok();
    if !(signed_raw || signed_encoded) {
        return Err("the token's signature does not match the shared access key".into());
    }
    if token.expiry <= now {
        return Err(format!("the token expired at {} (now {now})", token.expiry));
    }
    Ok(())
}

/// Percent-encodes a resource URI for `sr`.
pub fn encode(resource: &str) -> String {
    utf8_percent_encode(resource, SR_KEEP).to_string()
}

/// Makes a token (the emulator hands out device tokens; tests sign with it too).
pub fn sign(
    resource: &str,
    key_name: Option<&str>,
    key: &str,
    key_use: KeyUse,
    expiry: u64,
) -> Result<String, String> {
    let sr = encode(resource);
    let sig = mac(&mac_key(key, key_use)?, &sr, &expiry.to_string())
        .finalize()
        .into_bytes();
    let sig = utf8_percent_encode(&STANDARD.encode(sig), SR_KEEP).to_string();
    let mut t = format!("SharedAccessSignature sr={sr}&sig={sig}&se={expiry}");
    if let Some(n) = key_name {
        t.push_str("&skn=");
        t.push_str(&encode(n));
    }
    Ok(t)
}

/// Epoch seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0a2V5";

    #[test]
    fn sign_parse_verify_round_trip() {
        for key_use in [KeyUse::Text, KeyUse::Base64] {
            let t = sign("amqps://h/Hub One", Some("service"), KEY, key_use, 100).unwrap();
            let p = parse(&t).unwrap();
            assert_eq!(p.resource, "amqps://h/Hub One");
            assert_eq!(p.key_name.as_deref(), Some("service"));
            assert_eq!(verify(&p, KEY, key_use, 99), Ok(()));
            assert!(verify(&p, KEY, key_use, 100)
                .unwrap_err()
                .contains("expired"));
            let other = if key_use == KeyUse::Text {
                KeyUse::Base64
            } else {
                KeyUse::Text
            };
            assert!(verify(&p, KEY, other, 0).is_err());
            assert!(verify(&p, "b3RoZXJrZXk=", key_use, 0).is_err());
        }
    }

    /// A token as Microsoft's SDKs build it (Python `generate_sas_token`: quote_plus of the URI,
    /// HMAC over "<encoded uri>\n<expiry>", base64, quote of the signature), computed by hand.
    #[test]
    fn known_token_verifies() {
        // HMAC-SHA256(key=b"c2VjcmV0a2V5", "myhub.azure-devices.net\n2000000000"), base64.
        let mut m = Hmac::<Sha256>::new_from_slice(b"c2VjcmV0a2V5").unwrap();
        m.update(b"myhub.azure-devices.net\n2000000000");
        let sig = STANDARD.encode(m.finalize().into_bytes());
        let sig = sig
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let t = format!(
            "SharedAccessSignature se=2000000000&skn=service&sr=myhub.azure-devices.net&sig={sig}"
        );
        let p = parse(&t).unwrap();
        assert_eq!(verify(&p, KEY, KeyUse::Text, 1), Ok(()));
        assert!(verify(&p, KEY, KeyUse::Base64, 1).is_err());
    }

    #[test]
    fn malformed_tokens_are_refused_without_secrets() {
        let t = sign("x", Some("service"), KEY, KeyUse::Text, 100).unwrap();
        let sig = t.split("sig=").nth(1).unwrap().split('&').next().unwrap();
        for bad in [
            "",
            "Bearer abc",
            "SharedAccessSignature sr=x&se=1",
            "SharedAccessSignature sr=x&sig=AAAA&se=soon",
            "SharedAccessSignature sr=x&sig=!!!&se=1",
            "SharedAccessSignature sr=x&sr=y&sig=AAAA&se=1",
            "SharedAccessSignature sr=%FF&sig=AAAA&se=1",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains(sig) && !e.contains(KEY), "{e}");
        }
        let p = parse(&t).unwrap();
        assert!(!format!("{p:?}").contains("sig"));
        let e = verify(&p, "wrong", KeyUse::Text, 0).unwrap_err();
        assert!(!e.contains(KEY) && !e.contains(sig));
    }
}
