//! Owns `mpgate-emulator revoke-token`: asks a serving emulator to revoke a refresh token.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::ops::anywhere::REVOKE_PATH;

/// How long the whole exchange may take.
const LIMIT: Duration = Duration::from_secs(10);
/// The longest token file read (GetAccessToken takes at most 4096 characters).
const MAX_TOKEN: u64 = 8192;

/// Posts the token in `token_file` to the emulator at `url` (plain HTTP on loopback);
/// returns the line to print, or the error.
pub fn revoke(url: &str, token_file: &Path) -> Result<String, String> {
    let Some(authority) = url.strip_prefix("http://") else {
        return Err(format!(
            "--url {url:?}: revoke-token speaks plain http:// (the ready line's url); for an emulator serving --tls send it SIGUSR2 instead, which revokes the token it issued"
        ));
    };
    let authority = authority.trim_end_matches('/').to_string();
    let token = read_token(token_file)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        tokio::time::timeout(LIMIT, post(&authority, token))
            .await
            .map_err(|_| format!("{url} did not answer within {LIMIT:?}"))?
    })
}

fn read_token(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_TOKEN + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || text.len() as u64 > MAX_TOKEN {
        return Err(format!(
            "--token-file {}: expected the license token (a JWT of at most 4096 characters)",
            path.display()
        ));
    }
    Ok(token.to_string())
}

async fn post(authority: &str, token: String) -> Result<String, String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e} (is the emulator serving?)"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::post(REVOKE_PATH)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(token)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{authority}: {e}"))?
        .to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status.is_success() {
        let id = answer["revoked"].as_str().unwrap_or("?");
        Ok(format!(
            "mpgate-emulator: refresh token {id} revoked: GetAccessToken now refuses it"
        ))
    } else {
        Err(format!(
            "the emulator refused to revoke it ({status}): {}",
            answer["message"].as_str().unwrap_or("no message")
        ))
    }
}
