//! Owns randomness: bytes from the system RNG.

/// Random bytes from the system RNG (zeros if it fails, which only weakens temp names).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

pub(crate) fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes())
}
