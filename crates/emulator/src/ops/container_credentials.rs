//! Owns the container credentials endpoint of `--container-credentials-token` (ECS, EKS).

use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper::Method;
use serde_json::json;

use crate::answer::{base_response, error_answer, Outcome};
use crate::clock::{self, Clock};
use crate::credentials::Credential;

/// Where the endpoint is served (the URL is the ready line's `containerCredentialsUri`).
pub const PATH: &str = "/v2/credentials/mpgate-emulator";
/// The record line's `target` for a call to the endpoint (it has no X-Amz-Target).
pub const TARGET: &str = "ContainerCredentials";

/// The token callers must send, and the pair the endpoint hands out.
pub struct Endpoint {
    pub token: String,
    pub credentials: Credential,
}

/// The ECS agent's answer: `GET` with the token as the whole `Authorization` header (what
/// the SDK sends from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`) gets the pair, valid for six
/// hours of AWS's clock; anything else is refused as the agent refuses it.
pub(crate) fn serve(
    endpoint: &Endpoint,
    clock: &Clock,
    method: &Method,
    headers: &HeaderMap,
) -> Outcome {
    if method != Method::GET {
        return error_answer(
            405,
            "MethodNotAllowed",
            "the credentials endpoint answers GET only",
        );
    }
    match headers.get("authorization").map(|v| v.to_str()) {
        Some(Ok(sent)) if sent == endpoint.token => {}
        Some(_) => {
            return error_answer(401, "InvalidToken", "the authorization token is not valid")
        }
        None => return error_answer(401, "NoToken", "no authorization token was sent"),
    }
    let credentials = &endpoint.credentials;
    let expires = clock::shift(clock.now(), 6 * 3600 * 1000);
    let body = json!({
        "AccessKeyId": credentials.access_key_id,
        "SecretAccessKey": credentials.secret_access_key,
        "Token": credentials.session_token,
        "Expiration": clock::rfc3339(expires),
        "RoleArn": "arn:aws:iam::111122223333:role/mpgate-emulator-task-role",
    });
    Outcome::Answer(
        base_response(200, "application/json", Bytes::from(body.to_string())),
        None,
    )
}
