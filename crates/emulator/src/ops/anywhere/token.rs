//! Owns the license token's JWTs: the refresh token the buyer holds and the access tokens.

use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{KeyPair as _, UnparsedPublicKey, RSA_PSS_2048_8192_SHA384};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

/// The `iss` of access tokens: the federated principal a consumption role trusts.
pub const ACCESS_ISSUER: &str = "openid-license-manager.amazonaws.com";
/// The `amr` entry naming the account that created the token, as the role's trust policy
/// conditions it (`openid-license-manager.amazonaws.com:amr`).
pub const ISSUER_ACCOUNT_AMR: &str = "aws:license-manager:token-issuer-account-id:";
/// The claim that tells the two kinds apart (an access token is no refresh token).
const USE: &str = "token_use";

/// Which token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Refresh,
    Access,
}

impl Use {
    fn name(self) -> &'static str {
        match self {
            Use::Refresh => "refresh",
            Use::Access => "access",
        }
    }
}

/// The claims of a token the emulator issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The token's id (`jti`); an access token's `sub` is its refresh token's id.
    pub id: String,
    pub sub: String,
    /// The license ARN.
    pub aud: String,
    pub issuer_account: String,
    /// `amr`: the issuer account's entry, then the token properties.
    pub amr: Vec<String>,
    pub iat: i64,
    pub exp: i64,
}

/// Why a token is not one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url parts with JSON header and claims.
    NotAJwt,
    /// Signed by another key, another algorithm, or another kind of token.
    NotOurs,
}

/// Mints a token of kind `usage` (PS384, signed by `key`).
pub fn mint(usage: Use, claims: &Claims, key: &KeyPair) -> Result<String, String> {
    let body = json!({
        "iss": match usage {
            Use::Refresh => "https://license-manager.amazonaws.com",
            Use::Access => ACCESS_ISSUER,
        },
        "sub": claims.sub,
        "aud": claims.aud,
        "jti": claims.id,
        "amr": claims.amr,
        "iat": claims.iat,
        "exp": claims.exp,
        USE: usage.name(),
    });
    crate::jwt::sign_ps384(&body, key)
}

/// The claims of `token` if the emulator's `key` signed it as a token of kind `usage`
/// (expiry not checked: the caller answers an expired token in its own words).
pub fn verify(token: &str, usage: Use, key: &KeyPair) -> Result<Claims, Invalid> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid::NotAJwt);
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| Invalid::NotAJwt);
    let json = |b: Vec<u8>| serde_json::from_slice::<Value>(&b).map_err(|_| Invalid::NotAJwt);
    let (header, claims, sig) = (json(decode(h)?)?, json(decode(c)?)?, decode(s)?);
    if header["alg"] != "PS384" {
        return Err(Invalid::NotOurs);
    }
    let public = UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, key.public_key().as_ref());
    let signing_input = &token[..h.len() + 1 + c.len()];
    public
        .verify(signing_input.as_bytes(), &sig)
        .map_err(|_| Invalid::NotOurs)?;
    if claims[USE] != usage.name() {
        return Err(Invalid::NotOurs);
    }
    let text = |k: &str| {
        claims[k]
            .as_str()
            .map(str::to_string)
            .ok_or(Invalid::NotOurs)
    };
    let amr: Vec<String> = claims["amr"]
        .as_array()
        .ok_or(Invalid::NotOurs)?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let issuer_account = amr
        .iter()
        .find_map(|a| a.strip_prefix(ISSUER_ACCOUNT_AMR))
        .ok_or(Invalid::NotOurs)?
        .to_string();
    Ok(Claims {
        id: text("jti")?,
        sub: text("sub")?,
        aud: text("aud")?,
        issuer_account,
        amr,
        iat: claims["iat"].as_i64().ok_or(Invalid::NotOurs)?,
        exp: claims["exp"].as_i64().ok_or(Invalid::NotOurs)?,
    })
}

/// The id (`jti`) a token says it has, unverified: for the record and revocation only.
pub fn claimed_id(token: &str) -> Option<String> {
    let claims = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
    claims["jti"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_as_their_own_kind_and_key() {
        let key = crate::keys::signing_key(&crate::keys::generate().unwrap().private_pem).unwrap();
        let other =
            crate::keys::signing_key(&crate::keys::generate().unwrap().private_pem).unwrap();
        let claims = Claims {
            id: "t-1".into(),
            sub: "t-1".into(),
            aud: "arn:aws:license-manager::294406891311:license:l-1".into(),
            issuer_account: "111122223333".into(),
            amr: vec![format!("{ISSUER_ACCOUNT_AMR}111122223333"), "p".into()],
            iat: 10,
            exp: 20,
        };
        let t = mint(Use::Refresh, &claims, &key).unwrap();
        assert_eq!(verify(&t, Use::Refresh, &key), Ok(claims.clone()));
        assert_eq!(verify(&t, Use::Access, &key), Err(Invalid::NotOurs));
        assert_eq!(verify(&t, Use::Refresh, &other), Err(Invalid::NotOurs));
        assert_eq!(claimed_id(&t).as_deref(), Some("t-1"));
        let mut tampered = t.clone();
        tampered.push('A');
        assert_eq!(verify(&tampered, Use::Refresh, &key), Err(Invalid::NotOurs));
        for bad in ["", "a.b", "a.b.c.d", "not a token"] {
            assert_eq!(
                verify(bad, Use::Refresh, &key),
                Err(Invalid::NotAJwt),
                "{bad}"
            );
        }
    }
}
