//! Owns the license sold and its seat book: what each checkout holds, until when.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rsa::KeyPair;
use serde_json::{json, Map, Value};

use crate::clock::{iso_local_seconds, rfc3339, unix_secs};
use crate::ops::license::faults::{FaultSpec, LicenseFault};
use crate::ops::license::input::{Checkout, Input};
use crate::ops::license::model::{
    default_entitlements, license_arn, lm_error, not_allowed, not_found, validation, Entitlement,
    LmError, Op, DEFAULT_CONSUMPTION_TTL, DEFAULT_PRODUCT_SKU, ISSUER_ACCOUNT, ISSUER_FINGERPRINT,
    SIGNED_TOKEN_LENGTH,
};

pub(super) fn random_hex<const N: usize>() -> String {
    let b: [u8; N] = crate::random::random_bytes();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the license is (the command line).
#[derive(Debug, Clone)]
pub struct LicenseConfig {
    pub product_sku: String,
    pub entitlements: Vec<Entitlement>,
    /// `false` with `--no-license`: the caller holds no license.
    pub licensed: bool,
    pub consumption_ttl: Duration,
    pub faults: Vec<FaultSpec>,
    /// `--retire-superseded-tokens`: an extension's new token retires the one it was asked
    /// with (which AWS does is unsettled: the gate must be safe both ways).
    pub retire_superseded_tokens: bool,
}

impl Default for LicenseConfig {
    fn default() -> Self {
        LicenseConfig {
            product_sku: DEFAULT_PRODUCT_SKU.into(),
            entitlements: default_entitlements(),
            licensed: true,
            consumption_ttl: DEFAULT_CONSUMPTION_TTL,
            faults: Vec::new(),
            retire_superseded_tokens: false,
        }
    }
}

/// One checkout: the counted values it holds, until it is checked in or expires.
pub(super) struct Consumption {
    /// (entitlement index, units held).
    held: Vec<(usize, u64)>,
    expires: SystemTime,
    checked_in: bool,
}

#[derive(Default)]
pub(super) struct Book {
    consumptions: Vec<Consumption>,
    /// Every token a consumption was given (checkout and extensions), to its index.
    tokens: HashMap<String, usize>,
    /// ClientToken -> (the request's modelled members, consumption, the answer).
    client_tokens: HashMap<String, (Value, usize, Value)>,
}

/// What a call did to the seat book, for the `--record` line (whether its answer arrives or
/// not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    /// The call changed the book: a checkout took its units, an extension pushed the expiry,
    /// a check-in returned the units.
    pub processed: bool,
    /// A checkout answered again from its ClientToken (nothing more held).
    pub replayed: bool,
    /// The consumption token the book issued for this call (checkout or extension).
    pub issued_token: Option<String>,
}

/// The license and its consumptions.
///
/// The emulator sells one license (`--product-sku`, `--license-entitlement`) and keeps a book
/// of consumptions: a checkout holds the counted values it asked for until it is checked in
/// or expires (`--consumption-ttl` after its checkout or last extension); `GetLicenseUsage`
/// sums what the live consumptions hold. `--no-license` stands for a buyer without the
/// license, SIGUSR1 revokes it (see [`License::revoke`]).
pub struct License {
    pub config: LicenseConfig,
    pub arn: String,
    revoked: AtomicBool,
    book: Mutex<Book>,
    /// Valid calls per operation, for the faults' `@AFTER` / `*COUNT`.
    calls: [AtomicU64; 4],
}

impl Default for License {
    fn default() -> Self {
        License::new(LicenseConfig::default())
    }
}

impl License {
    pub fn new(config: LicenseConfig) -> License {
        License {
            arn: license_arn(&config.product_sku),
            config,
            revoked: AtomicBool::new(false),
            book: Mutex::new(Book::default()),
            calls: Default::default(),
        }
    }

    /// Revokes the license (SIGUSR1): later checkouts get `NoEntitlementsAllowedException`,
    /// extensions and check-ins of existing consumptions `ResourceNotFoundException`.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    /// Counts one more valid call of `op` and returns the `--license-fault` that applies to
    /// it, if any (the first listed one whose window holds it).
    pub fn take_fault(&self, op: Op) -> Option<LicenseFault> {
        let n = self.calls[op.index()].fetch_add(1, Ordering::SeqCst) + 1;
        self.config
            .faults
            .iter()
            .find(|f| f.op == op && f.applies(n))
            .map(|f| f.fault)
    }

    fn live(&self, c: &Consumption, now: SystemTime) -> bool {
        !c.checked_in && now < c.expires && !self.is_revoked()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Units of entitlement `index` the live consumptions hold.
    fn in_use(&self, book: &Book, index: usize, now: SystemTime) -> u64 {
        book.consumptions
            .iter()
            .filter(|c| self.live(c, now))
            .flat_map(|c| c.held.iter())
            .filter(|(i, _)| *i == index)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Units each counted entitlement's live consumptions hold at `now`, by name.
    pub fn held(&self, now: SystemTime) -> Map<String, Value> {
        let book = self.lock();
        self.config
            .entitlements
            .iter()
            .enumerate()
            .filter(|(_, e)| e.max.is_some())
            .map(|(i, e)| (e.name.clone(), json!(self.in_use(&book, i, now))))
            .collect()
    }

    /// Runs a validated call at AWS's time `now`; `key` signs the checkout's `SignedToken`.
    /// `effect` says what it did to the book.
    pub fn execute(
        &self,
        input: Input,
        now: SystemTime,
        key: &KeyPair,
        effect: &mut Effect,
    ) -> Result<Value, LmError> {
        match input {
            Input::Checkout(req) => self.checkout(req, now, key, effect),
            Input::CheckIn { token } => {
                let mut book = self.lock();
                let index = self.live_consumption(&book, &token, now)?;
                book.consumptions[index].checked_in = true;
                effect.processed = true;
                Ok(json!({}))
            }
            Input::Extend { token, dry_run } => {
                let mut book = self.lock();
                let index = self.live_consumption(&book, &token, now)?;
                if dry_run {
                    let expires = book.consumptions[index].expires;
                    return Ok(json!({
                        "LicenseConsumptionToken": token,
                        "Expiration": rfc3339(expires),
                    }));
                }
                let expires = now + self.config.consumption_ttl;
                book.consumptions[index].expires = expires;
                let fresh = random_hex::<16>();
                book.tokens.insert(fresh.clone(), index);
                if self.config.retire_superseded_tokens {
                    // Only the newest token names the consumption: the one sent is now as
                    // unknown as a token never issued.
                    book.tokens.remove(&token);
                }
                effect.processed = true;
                effect.issued_token = Some(fresh.clone());
                Ok(json!({
                    "LicenseConsumptionToken": fresh,
                    "Expiration": rfc3339(expires),
                }))
            }
            Input::Usage { arn } => {
                if arn != self.arn || !self.config.licensed {
                    return Err(lm_error(
                        400,
                        "InvalidParameterValueException",
                        format!("License {arn} is not a license of this account."),
                    ));
                }
                let book = self.lock();
                let usages: Vec<Value> = self
                    .config
                    .entitlements
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let mut u = json!({
                            "Name": e.name,
                            "ConsumedValue": self.in_use(&book, i, now).to_string(),
                            "Unit": e.unit,
                        });
                        if let Some(m) = e.max {
                            u["MaxCount"] = json!(m.to_string());
                        }
                        u
                    })
                    .collect();
                Ok(json!({"LicenseUsage": {"EntitlementUsages": usages}}))
            }
        }
    }

    /// The consumption a token names, if it is live.
    fn live_consumption(
        &self,
        book: &Book,
        token: &str,
        now: SystemTime,
    ) -> Result<usize, LmError> {
        match book.tokens.get(token) {
            Some(&i) if self.live(&book.consumptions[i], now) => Ok(i),
            Some(&i) => Err(not_found(format!(
                "License consumption {token} is {}.",
                if self.is_revoked() {
                    "no longer valid: the license was revoked"
                } else if book.consumptions[i].checked_in {
                    "checked in"
                } else {
                    "expired"
                }
            ))),
            None => Err(not_found(format!("License consumption {token} not found."))),
        }
    }

    fn checkout(
        &self,
        req: Checkout,
        now: SystemTime,
        key: &KeyPair,
        effect: &mut Effect,
    ) -> Result<Value, LmError> {
        if req.key_fingerprint != ISSUER_FINGERPRINT {
            return Err(validation(format!(
                "KeyFingerprint {} is not a known issuer's key fingerprint (AWS Marketplace's is {ISSUER_FINGERPRINT}).",
                req.key_fingerprint
            )));
        }
        if req.checkout_type != "PROVISIONAL" {
            return Err(validation(format!(
                "CheckoutType {} is not allowed for ProductSKU {}: AWS Marketplace container licenses are checked out PROVISIONAL.",
                req.checkout_type, req.product_sku
            )));
        }
        if req.entitlements.is_empty() {
            return Err(validation(
                "Entitlements must name at least one entitlement.",
            ));
        }
        let mut book = self.lock();
        // A retry of a checkout whose consumption is live gets the same answer.
        if let Some((canonical, index, answer)) = book.client_tokens.get(&req.client_token) {
            if self.live(&book.consumptions[*index], now) {
                if *canonical == req.canonical {
                    effect.replayed = true;
                    return Ok(answer.clone());
                }
                return Err(validation(format!(
                    "ClientToken {} was already used with a different request.",
                    req.client_token
                )));
            }
        }
        let sku = &req.product_sku;
        if !self.config.licensed || self.is_revoked() || *sku != self.config.product_sku {
            return Err(not_allowed(format!(
                "No entitlements found for ProductSKU {sku}."
            )));
        }
        let mut held: Vec<(usize, u64)> = Vec::new();
        for r in &req.entitlements {
            let Some(index) = self
                .config
                .entitlements
                .iter()
                .position(|e| e.name == r.name)
            else {
                return Err(not_allowed(format!(
                    "No entitlements allowed: ProductSKU {sku} has no entitlement {}.",
                    r.name
                )));
            };
            let e = &self.config.entitlements[index];
            if held.iter().any(|(i, _)| *i == index) {
                return Err(validation(format!(
                    "Entitlements names {} more than once.",
                    r.name
                )));
            }
            if r.unit != e.unit {
                return Err(not_allowed(format!(
                    "No entitlements allowed: {} is in unit {}, not {}.",
                    r.name, e.unit, r.unit
                )));
            }
            let Some(max) = e.max else {
                continue;
            };
            let want = r
                .value
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    validation(format!(
                        "Entitlement {} ({}) needs an integer Value of at least 1, got {}.",
                        r.name,
                        r.unit,
                        r.value
                            .as_deref()
                            .map_or("none".to_string(), |v| format!("{v:?}"))
                    ))
                })?;
            let used = self.in_use(&book, index, now);
            let free = max.saturating_sub(used);
            if want > free {
                return Err(not_allowed(format!(
                    "No entitlements allowed: {} asks for {want} {} but {used} of {max} seats in use ({free} free).",
                    r.name, r.unit
                )));
            }
            held.push((index, want));
        }
        let expires = now + self.config.consumption_ttl;
        let token = random_hex::<16>();
        let index = book.consumptions.len();
        book.consumptions.push(Consumption {
            held,
            expires,
            checked_in: false,
        });
        book.tokens.insert(token.clone(), index);
        let allowed: Vec<Value> = req
            .entitlements
            .iter()
            .map(|r| {
                let mut v = json!({"Name": r.name, "Unit": r.unit});
                if let Some(value) = &r.value {
                    v["Value"] = json!(value);
                }
                v
            })
            .collect();
        let signed_token = self.signed_token(&req, &token, &allowed, now, expires, key)?;
        let mut answer = json!({
            "CheckoutType": req.checkout_type,
            "LicenseConsumptionToken": token,
            "EntitlementsAllowed": allowed,
            "SignedToken": signed_token,
            "IssuedAt": iso_local_seconds(now),
            "Expiration": iso_local_seconds(expires),
            "LicenseArn": self.arn,
        });
        if let Some(node) = &req.node_id {
            answer["NodeId"] = json!(node);
        }
        book.client_tokens.insert(
            req.client_token.clone(),
            (req.canonical, index, answer.clone()),
        );
        effect.processed = true;
        effect.issued_token = Some(token);
        Ok(answer)
    }

    /// The checkout's `SignedToken`: a PS384 JWT (`JWT_PS384`) of the checkout, signed with the
    /// emulator's first key version, padded to about 4.2 KB as AWS's are (the model's minimum
    /// is 4096 characters).
    fn signed_token(
        &self,
        req: &Checkout,
        token: &str,
        allowed: &[Value],
        now: SystemTime,
        expires: SystemTime,
        key: &KeyPair,
    ) -> Result<String, LmError> {
        let mut claims = json!({
            "iss": format!("aws:{ISSUER_ACCOUNT}:AWS/Marketplace"),
            "keyFingerprint": ISSUER_FINGERPRINT,
            "licenseArn": self.arn,
            "productSKU": req.product_sku,
            "checkoutType": req.checkout_type,
            "licenseConsumptionToken": token,
            "entitlementsAllowed": allowed,
            "nodeId": req.node_id,
            "iat": unix_secs(now),
            "exp": unix_secs(expires),
        });
        let sign = |claims: &Value| {
            crate::jwt::sign_ps384(claims, key)
                .map_err(|e| lm_error(500, "ServerInternalException", e))
        };
        let first = sign(&claims)?;
        // base64url grows 4/3: pad the claims so the token lands at SIGNED_TOKEN_LENGTH.
        let short = SIGNED_TOKEN_LENGTH.saturating_sub(first.len());
        let pad = (short * 3 / 4).saturating_sub(16);
        claims["emulatorPadding"] = json!("P".repeat(pad));
        sign(&claims)
    }
}
