//! Owns the nonce: 256 bits from the operating system's CSPRNG, sent once and reused across retries.

use rand::{rngs::OsRng, TryRngCore};

// OsRng is getrandom's: only its syscall-only backend keeps a file of zeros mounted over
// /dev/urandom from fixing the nonce (.cargo/config.toml sets it; cargo-fuzz's own RUSTFLAGS
// replace it, and fuzz builds make no nonce; rustdoc, which only reads the code, gets no
// rustflags).
#[cfg(all(
    target_os = "linux",
    not(getrandom_backend = "linux_getrandom"),
    not(fuzzing),
    not(doc)
))]
compile_error!("build with --cfg getrandom_backend=\"linux_getrandom\" (.cargo/config.toml sets it; RUSTFLAGS replaces it): the nonce must never come from a file");

/// Bytes of entropy in a nonce (256 bits; the API allows up to 255 characters).
const NONCE_BYTES: usize = 32;

/// A fresh nonce as lowercase hex (64 printable characters).
pub fn generate() -> Result<String, rand::rand_core::OsError> {
    let mut bytes = [0u8; NONCE_BYTES];
    OsRng.try_fill_bytes(&mut bytes)?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_long_printable_and_fresh() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn hex_encodes_every_nibble() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
