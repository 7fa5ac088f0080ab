//! Owns what a call ends with: the failure outside the service's answer, and the call record.

use std::fmt::Write as _;

/// Why a call got no answer from the service to judge; each variant is one exit code (`exit`).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("the service's success answer is unusable ({0}): this endpoint is not the AWS service mpgate calls, or something in between altered the answer")]
    BadAnswer(String),
    #[error("no AWS region: set AWS_REGION to the region this task or pod runs in")]
    NoRegion,
    #[error("a license token is used in the license's home region, and none is set: set MPGATE_LICENSE_REGION (or AWS_REGION) to the region the buyer created the token in (e.g. us-east-1); mpgate assumes none")]
    NoLicenseRegion,
    #[error("this mpgate build is pinned to the AWS endpoint, but {0}")]
    PinnedEndpoint(String),
    #[error("no AWS credentials ({0}): give the ECS task an IAM task role, or the EKS pod's service account an IAM role through IRSA (AWS Marketplace accepts no other identity on EKS)")]
    NoCredentials(String),
    /// What the SDK read from the AWS config files, or the region it resolved, is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// What a call left behind, whatever its outcome, for the logs and the result file.
#[derive(Debug, Default)]
pub struct CallRecord {
    pub attempts: u32,
    /// `x-amzn-RequestId` of the last answer, for an AWS Support case.
    pub request_id: Option<String>,
    /// What works today but AWS Marketplace does not support (logged as well).
    pub warnings: Vec<String>,
    /// Whether the service may have processed the call although no answer said so (a 5xx,
    /// a timeout, a connection lost after the request left): a MeterUsage record may exist.
    pub maybe_processed: bool,
    /// The client the call went through, owned by whoever owns the record: dropped with it,
    /// or, when the process execs or exits next, never torn down (60 k instructions).
    pub client: KeptClient,
}

/// A client (and the configuration it was built from) kept alive by its owner.
#[derive(Default)]
pub struct KeptClient(Option<Box<dyn std::any::Any + Send + Sync>>);

impl KeptClient {
    pub fn keep(&mut self, client: impl std::any::Any + Send + Sync) {
        self.0 = Some(Box::new(client));
    }
}

impl std::fmt::Debug for KeptClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "KeptClient(some)"
        } else {
            "KeptClient(none)"
        })
    }
}

/// An error and its sources on one line, without the SDK's Debug dump of the raw response.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}
