//! Owns the MeterUsage call (custom metering): the start's call of quantity 0, later records, what each answer and error means.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_marketplacemetering::{
    error::{ProvideErrorMetadata, SdkError},
    operation::meter_usage::MeterUsageError,
    types::{Tag, UsageAllocation},
};
use serde::Serialize;

use crate::aws::{self, Call, CallError, CallRecord, Caller};
use crate::config::{Config, Usage};
use crate::metering::{warn_of_identity, Identity, MeteringError, SERVICE};

/// The IAM action MeterUsage needs, and what grants it, named in access-denied messages.
const IAM: (&str, &str) = (
    "aws-marketplace:MeterUsage",
    "deploy/iam-policy-meter-usage.json (the managed policy AWSMarketplaceMeteringFullAccess grants it too; AWSMarketplaceMeteringRegisterUsage does not)",
);
const IDENTITY: Identity = ("MeterUsage", "AWSMarketplaceMeteringFullAccess");
/// A record ID is short and printable; anything else is not AWS's answer.
const MAX_RECORD_ID_CHARS: usize = 256;

/// What MeterUsage answered a record with, besides an error that ends the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Recorded (or an identical record was already there: the same ID).
    Recorded { record_id: String },
    /// DuplicateRequestException: this pod or task already has a record of another quantity
    /// for this dimension and hour; that hour can never take another.
    Duplicate,
    /// TimestampOutOfBoundsException: the hour is outside the window AWS accepts.
    OutOfBounds,
}

/// The start's MeterUsage, for the logs and the result file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRecord {
    pub dimension: String,
    pub quantity: i32,
    /// When the call was made (RFC 3339): when the entitlement was verified.
    pub timestamp: String,
    /// The start of the metering hour the record locks (RFC 3339).
    pub hour: String,
    /// `null` when the hour already had a record of another quantity (`duplicate`).
    pub metering_record_id: Option<String>,
    /// DuplicateRequestException: this pod or task (a restarted container) already recorded
    /// this hour; the buyer is entitled, and this dimension's usage of the hour goes into the
    /// next hour's record.
    pub duplicate: bool,
    pub request_id: Option<String>,
    /// On the millisecond clock the ledger keys hours by.
    #[serde(skip)]
    pub hour_start_ms: u64,
}

/// What the agent's later calls need: the start's caller, its credentials cached and refreshed.
#[derive(Clone)]
pub struct Session {
    caller: Caller,
    pub product_code: String,
}

/// The start of the metering hour `at` falls in, in milliseconds since the Unix epoch.
pub fn hour_start_ms(at: SystemTime, hour: Duration) -> u64 {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let hour_ms = (hour.as_millis() as u64).max(1);
    ms - ms % hour_ms
}

/// Milliseconds since the Unix epoch as RFC 3339 (`2026-11-23T09:00:00Z`).
pub fn rfc3339_ms(ms: u64) -> String {
    aws_smithy_types::DateTime::from_millis(ms as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// The entitlement check of usage pricing: one MeterUsage of quantity 0 for the start
/// dimension, timestamp now, within the deadline. The only call AWS answers with
/// CustomerNotEntitledException; DuplicateRequestException means this pod or task already
/// recorded the hour (a restarted container), so the buyer is entitled too.
pub async fn start(
    config: &Config,
    usage: &Usage,
    started: Instant,
    record: &mut CallRecord,
) -> Result<(StartRecord, Session), MeteringError> {
    let prepared = aws::prepare(config, &SERVICE, None).await?;
    warn_of_identity(&prepared, IDENTITY, record);
    tokio::task::yield_now().await;
    let remaining = prepared.remaining(config, started);
    let session = Session {
        caller: prepared.caller,
        product_code: usage.product_code.clone(),
    };
    let now = SystemTime::now();
    let dimension = &usage.start_dimension;
    let answer = session
        .send(dimension, 0, now, (&prepared.call, remaining), record)
        .await?;
    let (metering_record_id, duplicate) = match answer {
        Answer::Recorded { record_id } => (Some(record_id), false),
        Answer::Duplicate => (None, true),
        // With the node's clock right, a timestamp of now is always inside the window.
        Answer::OutOfBounds => {
            return Err(CallError::Refused(format!(
                "MeterUsage refused the timestamp of now ({}) for product {} (TimestampOutOfBoundsException): the node's clock is wrong; fix its time synchronisation (NTP, chrony)",
                crate::report::now_rfc3339().unwrap_or_default(),
                usage.product_code
            ))
            .into())
        }
    };
    let hour_start_ms = hour_start_ms(now, usage.metering_hour);
    let start = StartRecord {
        dimension: dimension.clone(),
        quantity: 0,
        timestamp: rfc3339_ms(
            now.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        ),
        hour: rfc3339_ms(hour_start_ms),
        metering_record_id,
        duplicate,
        request_id: record.request_id.clone(),
        hour_start_ms,
    };
    Ok((start, session))
}

/// A session for the agent's records when the start could not make one (Metering was
/// unreachable and `allow` started the workload unverified).
pub async fn connect(config: &Config) -> Result<Session, MeteringError> {
    let crate::config::Pricing::Usage(usage) = &config.pricing else {
        return Err(CallError::Refused("MeterUsage is usage pricing's".into()).into());
    };
    let prepared = aws::prepare(config, &SERVICE, None).await?;
    Ok(Session {
        caller: prepared.caller,
        product_code: usage.product_code.clone(),
    })
}

impl Session {
    /// Records `quantity` of `dimension` for the hour of `timestamp`, within `deadline`,
    /// allocated to `allocations` (tag sets as JSON objects, `""` untagged; none: no
    /// UsageAllocations).
    pub async fn meter(
        &self,
        (dimension, quantity): (&str, i32),
        allocations: &[(String, u64)],
        timestamp: SystemTime,
        deadline: Duration,
        record: &mut CallRecord,
    ) -> Result<Answer, MeteringError> {
        let call = Call::new(deadline);
        let allocations = usage_allocations(allocations)?;
        self.send_allocated(
            (dimension, quantity),
            allocations,
            timestamp,
            (&call, deadline),
            record,
        )
        .await
    }

    async fn send(
        &self,
        dimension: &str,
        quantity: i32,
        timestamp: SystemTime,
        (call, deadline): (&Call, Duration),
        record: &mut CallRecord,
    ) -> Result<Answer, MeteringError> {
        self.send_allocated(
            (dimension, quantity),
            None,
            timestamp,
            (call, deadline),
            record,
        )
        .await
    }

    async fn send_allocated(
        &self,
        (dimension, quantity): (&str, i32),
        allocations: Option<Vec<UsageAllocation>>,
        timestamp: SystemTime,
        (call, deadline): (&Call, Duration),
        record: &mut CallRecord,
    ) -> Result<Answer, MeteringError> {
        let client: aws_sdk_marketplacemetering::Client =
            self.caller.client(&SERVICE, call, deadline);
        let result = {
            let sent = std::pin::pin!(client
                .meter_usage()
                .product_code(&self.product_code)
                .timestamp(aws_smithy_types::DateTime::from(timestamp))
                .usage_dimension(dimension)
                .usage_quantity(quantity)
                .set_usage_allocations(allocations)
                .send());
            aws::send(sent, call, deadline, record).await?
        };
        match result {
            Ok(out) => match out.metering_record_id {
                Some(id)
                    if !id.is_empty()
                        && id.len() <= MAX_RECORD_ID_CHARS
                        && id.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    Ok(Answer::Recorded { record_id: id })
                }
                _ => Err(CallError::BadAnswer(
                    "the MeterUsage answer holds no usable MeteringRecordId".into(),
                )
                .into()),
            },
            Err(e) => classify(e, dimension, (call, &self.caller.scope), &self.product_code),
        }
    }
}

/// UsageAllocations of tag sets (JSON objects; `""` the untagged usage), none for none.
fn usage_allocations(
    allocations: &[(String, u64)],
) -> Result<Option<Vec<UsageAllocation>>, MeteringError> {
    if allocations.is_empty() {
        return Ok(None);
    }
    let bad = |e: String| CallError::Refused(format!("the request could not be made: {e}"));
    let mut all = Vec::with_capacity(allocations.len());
    for (tags, quantity) in allocations {
        let tags: std::collections::BTreeMap<String, String> = if tags.is_empty() {
            Default::default()
        } else {
            serde_json::from_str(tags).map_err(|e| bad(e.to_string()))?
        };
        let mut allocation = UsageAllocation::builder()
            .allocated_usage_quantity(i32::try_from(*quantity).unwrap_or(i32::MAX));
        for (key, value) in tags {
            allocation = allocation.tags(
                Tag::builder()
                    .key(key)
                    .value(value)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            );
        }
        all.push(allocation.build().map_err(|e| bad(e.to_string()))?);
    }
    Ok(Some(all))
}

/// Maps MeterUsage's errors to what happened and what the operator should do.
fn classify(
    error: SdkError<MeterUsageError, aws_smithy_runtime_api::http::Response>,
    dimension: &str,
    (call, scope): (&Call, &aws::Scope),
    product: &str,
) -> Result<Answer, MeteringError> {
    let SdkError::ServiceError(service) = &error else {
        return Err(aws::transport_error(&error, &SERVICE, call).into());
    };
    let refused = |text: String| Err(MeteringError::Call(CallError::Refused(text)));
    let region = &scope.region;
    let err = service.err();
    match err {
        MeterUsageError::DuplicateRequestException(_) => Ok(Answer::Duplicate),
        MeterUsageError::TimestampOutOfBoundsException(_) => Ok(Answer::OutOfBounds),
        MeterUsageError::CustomerNotEntitledException(_) => Err(MeteringError::NotEntitled {
            product_code: product.to_owned(),
        }),
        err if err.code() == Some("PlatformNotSupportedException") => {
            Err(MeteringError::PlatformNotSupported {
                product_code: product.to_owned(),
            })
        }
        MeterUsageError::InvalidProductCodeException(_) => refused(format!(
            "AWS Marketplace does not know product code {product} (InvalidProductCodeException): set MPGATE_PRODUCT_CODE to the product code from the AWS Marketplace Management Portal"
        )),
        MeterUsageError::InvalidUsageDimensionException(_) => refused(format!(
            "product {product} has no pricing dimension {dimension:?} (InvalidUsageDimensionException): set MPGATE_DIMENSIONS to the dimensions' API names in the AWS Marketplace Management Portal"
        )),
        MeterUsageError::InvalidEndpointRegionException(_) => refused(format!(
            "MeterUsage refused region {region} for product {product} (InvalidEndpointRegionException): the call must go to the region the ECS task or EKS pod runs in; let the platform set AWS_REGION (ECS and the EKS IRSA webhook do) instead of setting it yourself"
        )),
        err => Err(aws::other_service_error(
            &SERVICE,
            (
                err.code().unwrap_or("unknown error"),
                service.raw().status().as_u16(),
                err.message().unwrap_or(""),
            ),
            IAM,
            (call, scope),
            &format!("product {product}, dimension {dimension}"),
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_start_on_the_hour_of_the_metering_clock() {
        let at = UNIX_EPOCH + Duration::from_millis(7_205_500);
        assert_eq!(hour_start_ms(at, Duration::from_secs(3600)), 7_200_000);
        assert_eq!(hour_start_ms(at, Duration::from_secs(2)), 7_204_000);
        assert_eq!(rfc3339_ms(7_200_000), "1970-01-01T02:00:00Z");
    }
}
