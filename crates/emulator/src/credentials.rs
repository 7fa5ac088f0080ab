//! The AWS credentials the emulator knows: `--credentials`, `--expired-credentials`, the
//! documented example pair by default, and the fresh temporary pair `run` hands out.
//!
//! A pair with a session token is temporary (a task role's, an `ASIA…` key); one without is a
//! long-term IAM user key (`AKIA…`). The emulator verifies SigV4 with the secrets, so it must
//! know them; they are test values, printed in the ready line.

use serde::Serialize;

/// The documented AWS example access key (IAM user guide), the default long-term pair.
pub const EXAMPLE_ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const EXAMPLE_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// One pair the emulator knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `Some` for temporary credentials.
    pub session_token: Option<String>,
    /// `--expired-credentials`: the session token has expired (`ExpiredTokenException`).
    pub expired: bool,
}

impl Credential {
    pub fn is_temporary(&self) -> bool {
        self.session_token.is_some()
    }

    /// The default: AWS's documented example key, long-term.
    pub fn example() -> Credential {
        Credential {
            access_key_id: EXAMPLE_ACCESS_KEY_ID.into(),
            secret_access_key: EXAMPLE_SECRET_ACCESS_KEY.into(),
            session_token: None,
            expired: false,
        }
    }

    /// Fresh temporary credentials, shaped like a task role's: an `ASIA` key id of 20
    /// characters, a 40-character secret and a session token.
    pub fn fresh_temporary() -> Credential {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine as _;
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let id: [u8; 16] = crate::random::random_bytes();
        let id: String = id
            .iter()
            .map(|b| char::from(UPPER[usize::from(*b) % UPPER.len()]))
            .collect();
        let secret: [u8; 30] = crate::random::random_bytes();
        let token: [u8; 96] = crate::random::random_bytes();
        Credential {
            access_key_id: format!("ASIA{id}"),
            secret_access_key: STANDARD.encode(secret),
            session_token: Some(format!(
                "IQoJb3JpZ2luX2VtdWxhdG9y{}",
                STANDARD.encode(token)
            )),
            expired: false,
        }
    }

    /// Parses `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]` (`expired`: the token is
    /// required). Secrets and tokens never contain `:` (base64 and the key alphabet).
    pub fn parse(value: &str, expired: bool) -> Result<Credential, String> {
        let mut parts = value.splitn(3, ':');
        let (id, secret, token) = (parts.next(), parts.next(), parts.next());
        let usage = if expired {
            "ACCESS_KEY_ID:SECRET_ACCESS_KEY:SESSION_TOKEN"
        } else {
            "ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]"
        };
        let (Some(id), Some(secret)) = (id, secret) else {
            return Err(format!("expected {usage}"));
        };
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "invalid access key id {id:?} (letters and digits, e.g. ASIA... or AKIA...)"
            ));
        }
        let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !printable(secret) {
            return Err(format!(
                "the secret access key of {id} must be printable ASCII, without spaces"
            ));
        }
        let session_token = match token {
            Some(t) if printable(t) => Some(t.to_string()),
            Some(_) => {
                return Err(format!(
                    "the session token of {id} must be printable ASCII, without spaces"
                ))
            }
            None if expired => return Err(format!("expected {usage} (a session token)")),
            None => None,
        };
        Ok(Credential {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
            session_token,
            expired,
        })
    }
}

/// Every pair the emulator knows, looked up by access key id.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    pairs: Vec<Credential>,
}

impl Keyring {
    /// Adds `c`; an access key id may be known once only.
    pub fn add(&mut self, c: Credential) -> Result<(), String> {
        if self.find(&c.access_key_id).is_some() {
            return Err(format!("access key id {} is given twice", c.access_key_id));
        }
        self.pairs.push(c);
        Ok(())
    }

    pub fn find(&self, access_key_id: &str) -> Option<&Credential> {
        self.pairs.iter().find(|c| c.access_key_id == access_key_id)
    }

    /// Usable pairs first, then the expired ones, each in the order given.
    pub fn all(&self) -> Vec<&Credential> {
        let (mut live, expired): (Vec<_>, Vec<_>) = self.pairs.iter().partition(|c| !c.expired);
        live.extend(expired);
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        let c = Credential::parse("AKIDEXAMPLE:se/cr+et=", false).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AKIDEXAMPLE", "se/cr+et=")
        );
        assert!(!c.is_temporary());
        let c = Credential::parse("ASIAEXAMPLE:s:to/ken==", false).unwrap();
        assert_eq!(c.session_token.as_deref(), Some("to/ken=="));
        assert!(Credential::parse("ASIAEXAMPLE:s:t", true).unwrap().expired);
        for bad in [
            "",
            "AKID",
            "AKID:",
            ":s",
            "AK-ID:s",
            "AKID:s:",
            "AKID:a b",
            "AKID:s:t t",
        ] {
            assert!(Credential::parse(bad, false).is_err(), "{bad:?}");
        }
        assert!(Credential::parse("ASIAEXAMPLE:s", true).is_err());
    }

    #[test]
    fn fresh_temporary_pairs_look_like_a_task_role_s() {
        let a = Credential::fresh_temporary();
        let b = Credential::fresh_temporary();
        assert_ne!(a, b);
        assert!(a.access_key_id.starts_with("ASIA") && a.access_key_id.len() == 20);
        assert_eq!(a.secret_access_key.len(), 40);
        assert!(a.is_temporary());
        let again = Credential::parse(
            &format!(
                "{}:{}:{}",
                a.access_key_id,
                a.secret_access_key,
                a.session_token.as_deref().unwrap()
            ),
            false,
        )
        .unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn keyring() {
        let mut k = Keyring::default();
        k.add(Credential::parse("ASIAOLD:s:t", true).unwrap())
            .unwrap();
        k.add(Credential::example()).unwrap();
        assert!(k.add(Credential::example()).is_err());
        assert_eq!(k.all()[0].access_key_id, EXAMPLE_ACCESS_KEY_ID);
        assert!(k.find("ASIAOLD").unwrap().expired);
        assert!(k.find("nobody").is_none());
    }
}
