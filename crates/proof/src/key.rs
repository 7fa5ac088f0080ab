//! Owns the trusted key: PEM parsing, the refusal rules (private keys, small keys, keys whose
//! private halves are published) and the fingerprint `mpgate --version` prints.

pub use jsonwebtoken::DecodingKey;

/// AWS Marketplace keys are RSA-2048 or larger; PS256 verification refuses smaller ones.
const MIN_KEY_BITS: usize = 2048;

/// Public keys whose private halves are published, by SHA-256 of their PKCS#1 DER (the same
/// key in any PEM form or wrapping): a gate configured with one accepts tokens anyone can
/// sign. Each is copied into examples and tutorials; the PEMs are in crates/proof/tests/.
const PUBLISHED_PRIVATE_KEYS: &[([u8; 32], &str)] = &[
    (
        hex32("411c4f74ea279a981238973c708a245cdb0c8951ede91521d1a034918253619c"),
        "the sample key printed in the AWS Marketplace seller guide's RegisterUsage example (jwt.io's old 1024-bit demo key)",
    ),
    (
        hex32("0ec51f371d09130493655c82327d80b0fbe45bea72fc61e54fe6c0499193bcab"),
        "jwt.io's demo RSA key (its RS256 and PS256 examples)",
    ),
    (
        hex32("99a3ab80644b42f89ed4d26ba9f53bad0d47cde3e02a93d0f1d8160f77c674d4"),
        "jwt.io's 2019-2021 demo RSA key",
    ),
    (
        hex32("4d45852a70eef278cafe4a2cdfcc544827b7b35f4475c4feca270e3e4d069e01"),
        "the example RSA key of RFC 7515 (JSON Web Signature), appendix A.2",
    ),
    (
        hex32("9182083bd083cc1d33eb76e0abd2847e30dfd45ec0d39cfe887ea889513bee25"),
        "the example RSA key of RFC 7520, section 3.4 (bilbo.baggins@hobbiton.example)",
    ),
];

const fn hex32(hex: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not lowercase hex"),
        }
    }
    let bytes = hex.as_bytes();
    assert!(bytes.len() == 64);
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(bytes[2 * i]) << 4 | nibble(bytes[2 * i + 1]);
        i += 1;
    }
    out
}

/// Builds the verification key from a PEM RSA public key (SPKI or PKCS#1).
pub fn decoding_key(pem: &[u8]) -> Result<DecodingKey, KeyError> {
    let text =
        std::str::from_utf8(pem).map_err(|_| KeyError::Format("the file is not text".into()))?;
    if text.contains("PRIVATE KEY-----") {
        return Err(KeyError::Unsafe("it is a private key; give mpgate only the public key, and keep private keys out of images".into()));
    }
    let key = DecodingKey::from_rsa_pem(pem).map_err(|e| KeyError::Format(e.to_string()))?;
    let fingerprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    if let Some((_, what)) = PUBLISHED_PRIVATE_KEYS
        .iter()
        .find(|(known, _)| known[..] == *fingerprint.as_ref())
    {
        return Err(KeyError::Unsafe(format!(
            "it is {what}, whose private key is public, so anyone could sign a token it accepts: use the public key AWS Marketplace gave you for your product"
        )));
    }
    let bits = rsa_bits(key.as_bytes())?;
    if bits < MIN_KEY_BITS {
        return Err(KeyError::Unsafe(format!(
            "it is a {bits}-bit key, too small; PS256 needs at least {MIN_KEY_BITS} bits"
        )));
    }
    Ok(key)
}

/// A PKCS#1 RSA public key (what jsonwebtoken holds) as SPKI DER (what PEM files and
/// fingerprints use), parsed and checked by aws-lc.
fn spki_der(pkcs1_der: &[u8]) -> Option<aws_lc_rs::encoding::PublicKeyX509Der<'static>> {
    use aws_lc_rs::encoding::AsDer;
    aws_lc_rs::rsa::PublicKey::from_der(pkcs1_der)
        .ok()?
        .as_der()
        .ok()
}

/// `SHA256:<hex>` of the key's SPKI DER, as `openssl pkey -pubin -outform DER | sha256sum` prints.
pub fn fingerprint(key: &DecodingKey) -> String {
    let Some(spki) = spki_der(key.as_bytes()) else {
        return "unparsable key".into();
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref());
    let mut text = String::from("SHA256:");
    for byte in digest.as_ref() {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The modulus size of a PKCS#1 RSA public key, parsed (and checked: `RSA_check_key`) by
/// aws-lc once. PS256 verification takes 2048 to 8192 bits (aws-lc-rs' RSA_PSS_2048_8192);
/// a key outside that range is refused here by name rather than as "not valid".
fn rsa_bits(pkcs1_der: &[u8]) -> Result<usize, KeyError> {
    let key = aws_lc_rs::rsa::PublicKey::from_der(pkcs1_der)
        .map_err(|_| KeyError::Format("the key inside is not a valid RSA public key".into()))?;
    let modulus = key.modulus();
    let modulus = modulus.big_endian_without_leading_zero();
    // BN_num_bits, as aws-lc counts a key's size.
    let bits = (modulus.len() * 8)
        .saturating_sub(modulus.first().map_or(0, |b| b.leading_zeros() as usize));
    match bits {
        MIN_KEY_BITS..=8192 => Ok(bits),
        0..MIN_KEY_BITS => Err(KeyError::Unsafe(format!(
            "the key is too small; PS256 needs at least {MIN_KEY_BITS} bits"
        ))),
        _ => Err(KeyError::Unsafe(
            "the key is larger than the 8192 bits PS256 verification accepts".into(),
        )),
    }
}

/// Why a configured public key cannot be used; always exit code 2.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM RSA public key ({0}): use the key AWS Marketplace gave you, starting with '-----BEGIN PUBLIC KEY-----' or '-----BEGIN RSA PUBLIC KEY-----'")]
    Format(String),
    #[error("{0}")]
    Unsafe(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PKCS#1 DER of an RSA public key with a `bits`-bit modulus 2^(bits-1) + 1 and e = 65537.
    fn pkcs1_of_size(bits: usize) -> Vec<u8> {
        fn der(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let len = body.len();
            if len < 0x80 {
                out.push(len as u8);
            } else {
                let bytes: Vec<u8> = len
                    .to_be_bytes()
                    .into_iter()
                    .skip_while(|b| *b == 0)
                    .collect();
                out.push(0x80 | bytes.len() as u8);
                out.extend(bytes);
            }
            out.extend_from_slice(body);
            out
        }
        let mut n = vec![0u8; bits.div_ceil(8)];
        n[0] = 1 << ((bits - 1) % 8);
        *n.last_mut().unwrap() |= 1;
        if n[0] & 0x80 != 0 {
            n.insert(0, 0);
        }
        let mut body = der(0x02, &n);
        body.extend(der(0x02, &[0x01, 0x00, 0x01]));
        der(0x30, &body)
    }

    #[test]
    fn the_key_size_is_the_modulus_bits_and_ps256_takes_2048_to_8192() {
        for bits in [2048, 2049, 3072, 4095, 8192] {
            assert_eq!(rsa_bits(&pkcs1_of_size(bits)), Ok(bits), "{bits}");
        }
        for (bits, says) in [
            (2047, "too small"),
            (1024, "too small"),
            (8193, "larger than the 8192"),
        ] {
            let error = rsa_bits(&pkcs1_of_size(bits)).unwrap_err().to_string();
            assert!(error.contains(says), "{bits}: {error}");
        }
        assert!(matches!(rsa_bits(b"\x30\x00"), Err(KeyError::Format(_))));
    }
}
