//! Owns the call layer every AWS service goes through: prepare, credentials, client, send, classify.

mod classify;
mod client;
mod credentials;
mod prepare;
mod result;
mod retry;
mod send;
/// Named by `endpoint_rules!`, which expands in the service modules.
pub(crate) mod service;

pub use classify::{is_access_denied, other_service_error, transport_error};
pub use client::{Caller, Scope};
pub use prepare::{prepare, Prepared};
pub use result::{CallError, CallRecord};
pub use retry::is_transient;
pub use send::{send, Call};
pub(crate) use service::endpoint_rules;
pub use service::{Auth, Service};

#[cfg(test)]
pub(crate) mod tests {
    pub(crate) use crate::aws::credentials::tests::vars;
    pub(crate) use crate::aws::prepare::tests::endpoints;
}
