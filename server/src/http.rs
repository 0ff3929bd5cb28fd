//! HTTP input typed at the edge (SPEC S1, S3) and the answers every route
//! shares: an SDP offer ([`SdpOffer`]: content type, declared size, a
//! bounded read, UTF-8; [`OfferHeaders`] checks what its headers say
//! first), a bearer token checked against the server's secret
//! ([`Authorized`]) before any body is read, CORS for pages of
//! other origins, JSON answers.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use std::time::Duration;

use crate::token::{self, Claims};

/// A request refused: its status and why, in a few words. Answered with
/// CORS headers so a page of another origin can read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status answered.
    pub code: StatusCode,
    /// Why, for the client.
    pub why: String,
}

impl Refusal {
    /// A refusal with `code` for `why`.
    #[must_use]
    pub fn new(code: StatusCode, why: impl Into<String>) -> Self {
        Self {
            code,
            why: why.into(),
        }
    }
}

impl IntoResponse for Refusal {
    /// With `Retry-After` on a 503 (SPEC S7): the server is full for now.
    fn into_response(self) -> Response {
        let busy = self.code == StatusCode::SERVICE_UNAVAILABLE;
        let mut r = with_cors((self.code, self.why).into_response());
        if busy {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

/// `code` for `why`, answered with CORS.
#[must_use]
pub fn refuse(code: StatusCode, why: &str) -> Response {
    Refusal::new(code, why).into_response()
}

/// A fresh id or key: 128 random bits from the operating system, as 32
/// lowercase hex digits. Nobody can guess one, so a path or a bearer
/// holding one names one thing only to whoever was handed it.
///
/// # Panics
/// When the operating system has no randomness to give (no server can
/// run safely then).
#[must_use]
pub fn random_id() -> String {
    let mut bits = [0u8; 16];
    #[allow(clippy::expect_used)] // no randomness: nothing here is safe to run
    getrandom::getrandom(&mut bits).expect("the operating system gives random bytes");
    bits.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `raw` is an id as [`random_id`] writes them: exactly 32
/// lowercase hex digits. Anything else (upper case, a sign, padding,
/// escapes) names nothing, so each thing has one path only.
#[must_use]
pub fn canonical_id(raw: &str) -> bool {
    raw.len() == 32 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `a` and `b` are the same secret, in time that does not depend
/// on where they first differ.
#[must_use]
pub fn same_secret(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The header a `201 Created` hands back the new resource's key in: the
/// bearer its later requests carry (`Authorization: Bearer KEY`).
pub const KEY_HEADER: &str = "sotto-key";

/// A request's body, read whole into one buffer (SPEC S2, S6): at most
/// `limit` bytes (else 413), and, once `limits.body_grace` has passed, at
/// least `limits.body_min_rate` bytes a second on average since the
/// request came (else 408). Each piece is
/// copied out as it comes, so a body trickled a byte at a time holds one
/// buffer of its length, not one buffer per piece.
///
/// # Errors
/// The 413 or 408 [`Refusal`]; a 400 for a body that breaks off.
pub async fn read_body(
    body: Body,
    limit: usize,
    limits: &crate::accept::ServerLimits,
) -> Result<Vec<u8>, Refusal> {
    use http_body_util::BodyExt;
    let started = tokio::time::Instant::now();
    let rate = u64::from(limits.body_min_rate.max(1));
    let mut body = body;
    let mut got: Vec<u8> = Vec::new();
    loop {
        // After the grace the average since the request came must stay at
        // the rate: the next piece is due when the bytes so far fall under
        // it (at once, for a client already behind).
        let earned = Duration::from_millis(got.len() as u64 * 1000 / rate);
        let due = started + limits.body_grace.max(earned);
        let frame = match tokio::time::timeout_at(due, body.frame()).await {
            Err(_) => {
                return Err(Refusal::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body came too slowly",
                ))
            }
            Ok(None) => return Ok(got),
            Ok(Some(Err(_))) => {
                return Err(Refusal::new(StatusCode::BAD_REQUEST, "the body broke off"))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: nothing to keep
        };
        if got.len() + data.len() > limit {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is too long",
            ));
        }
        got.extend_from_slice(&data);
    }
}

/// The methods a page of another origin may use on these servers.
const CORS_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// What a page of another origin may read of an answer: where the new
/// resource is and its key. Only bearer headers authorise here (never a
/// cookie), so any origin may call, and learns only what it was handed.
const CORS_EXPOSED: &str = "Location, Sotto-Key";

/// `r` answerable to a page of any origin (CORS), its `Location` readable
/// there.
#[must_use]
pub fn with_cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(CORS_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(CORS_EXPOSED),
    );
    r
}

/// The answer to a CORS preflight (`OPTIONS`).
pub async fn preflight() -> Response {
    with_cors(StatusCode::NO_CONTENT.into_response())
}

/// `value` as an `application/json` answer, with CORS.
#[must_use]
pub fn json(value: &serde_json::Value) -> Response {
    typed(value.to_string(), "application/json")
}

/// `body` answered as `content_type`, with CORS.
#[must_use]
pub fn typed(body: impl IntoResponse, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    with_cors(r)
}

/// `201 Created` for a WHIP-style POST: the SDP `answer`, where the new
/// resource is (`location`) and its key (`Sotto-Key`), with CORS. Both
/// are made here of hex digits and slashes, so safe in a header.
#[must_use]
pub fn created_sdp(answer: String, location: &str, key: &str) -> Response {
    let mut r = (StatusCode::CREATED, answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(key) {
        h.insert(KEY_HEADER, v);
    }
    with_cors(r)
}

/// The shared JavaScript module both pages load (`GET /sotto.js`).
pub async fn script() -> Response {
    let mut r = include_str!("sotto.js").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript"),
    );
    r
}

/// The longest offer taken (SPEC S1): a browser's is 4–6 KiB.
pub const MAX_OFFER_BYTES: usize = sotto_net::call::MAX_OFFER_BYTES;

/// An SDP offer from the body of a request: `application/sdp` (else 415),
/// at most [`MAX_OFFER_BYTES`] (413, refused on its declared length before
/// any of it is read, and on what arrives past the limit otherwise), UTF-8
/// (else 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpOffer(pub String);

impl SdpOffer {
    /// Refuses a request whose headers already say it is no offer taken
    /// here: not `application/sdp`, or declared longer than the limit.
    ///
    /// # Errors
    /// A 415 or 413 [`Refusal`].
    pub fn check(headers: &HeaderMap) -> Result<(), Refusal> {
        let sdp = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"));
        if !sdp {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the offer must be application/sdp",
            ));
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_OFFER_BYTES as u64) {
            return Err(too_long());
        }
        Ok(())
    }

    /// Reads an offer's body, at most [`MAX_OFFER_BYTES`] of it, at the
    /// pace `limits` asks for (see [`read_body`]).
    ///
    /// # Errors
    /// A 413 [`Refusal`] past the limit, 408 for a body too slow, 400 for
    /// one that breaks off or is not text.
    pub async fn read(body: Body, limits: &crate::accept::ServerLimits) -> Result<Self, Refusal> {
        let bytes = read_body(body, MAX_OFFER_BYTES, limits)
            .await
            .map_err(|r| match r.code {
                StatusCode::PAYLOAD_TOO_LARGE => too_long(),
                _ => r,
            })?;
        String::from_utf8(bytes)
            .map(Self)
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "the offer is not text"))
    }
}

fn too_long() -> Refusal {
    Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "the offer is too long")
}

/// A server's state as its extractors see it: the secret its bearer
/// tokens are signed with (SPEC S3), and where a refused request is
/// counted.
pub trait Gate {
    /// The secret tokens are signed with; `None`: no token is asked for.
    fn secret(&self) -> Option<&str>;
    /// Counts a request refused by an extractor.
    fn refused(&self);
}

/// The longest bearer token looked at; a longer one is refused unread.
pub const MAX_BEARER: usize = 4_096;

/// The headers of a request carrying an SDP offer, checked before anything
/// else and before its body is read: `application/sdp` (else 415), a
/// declared length within [`MAX_OFFER_BYTES`] (else 413). The body is read
/// afterwards with [`SdpOffer::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferHeaders;

impl<G: Gate + Send + Sync> FromRequestParts<std::sync::Arc<G>> for OfferHeaders {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        gate: &std::sync::Arc<G>,
    ) -> Result<Self, Self::Rejection> {
        SdpOffer::check(&parts.headers)
            .map(|()| Self)
            .inspect_err(|_| gate.refused())
    }
}

/// A request's bearer token, checked against the server's secret before
/// its body is read: `Authorized(Some(claims))` when a secret is set and
/// the token is good, `Authorized(None)` when no token is asked for, 401
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized(pub Option<Claims>);

impl Authorized {
    /// Checks `headers` against `secret`.
    ///
    /// # Errors
    /// A 401 [`Refusal`] for a token missing or bad.
    pub fn check(headers: &HeaderMap, secret: Option<&str>) -> Result<Self, Refusal> {
        let Some(secret) = secret else {
            return Ok(Self(None));
        };
        let Some(token) = bearer(headers) else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required",
            ));
        };
        token::verify(token, secret)
            .map(|c| Self(Some(c)))
            .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, e.to_string()))
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
#[must_use]
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| t.len() <= MAX_BEARER)
}

impl<G: Gate + Send + Sync> FromRequestParts<std::sync::Arc<G>> for Authorized {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        gate: &std::sync::Arc<G>,
    ) -> Result<Self, Self::Rejection> {
        Self::check(&parts.headers, gate.secret()).inspect_err(|_| gate.refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_offer_of_another_type_is_unsupported() {
        let h = headers(&[(header::CONTENT_TYPE, "application/json")]);
        let e = SdpOffer::check(&h).unwrap_err();
        assert_eq!(e.code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn an_offer_declared_too_long_is_refused_unread() {
        let h = headers(&[
            (header::CONTENT_TYPE, "application/sdp; charset=utf-8"),
            (header::CONTENT_LENGTH, "1000000"),
        ]);
        assert_eq!(
            SdpOffer::check(&h).unwrap_err().code,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn an_offer_past_the_limit_is_too_long() {
        let body = Body::from(vec![b'a'; MAX_OFFER_BYTES + 1]);
        let e = SdpOffer::read(body, &Default::default()).await.unwrap_err();
        assert_eq!(e.code, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn an_offer_that_is_not_text_is_bad() {
        let e = SdpOffer::read(Body::from(vec![0xff, 0xfe]), &Default::default())
            .await
            .unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn ids_are_random_and_canonical() {
        let (a, b) = (random_id(), random_id());
        assert_ne!(a, b);
        assert!(canonical_id(&a) && canonical_id(&b));
        assert!(!canonical_id(&a.to_uppercase()));
        assert!(!canonical_id(&format!("+{}", &a[1..])));
        assert!(!canonical_id("2"));
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, &b));
    }

    #[tokio::test]
    async fn a_trickled_body_is_cut_off() {
        let limits = crate::accept::ServerLimits {
            body_grace: Duration::from_millis(200),
            body_min_rate: 1024,
            ..Default::default()
        };
        // One byte every 5 ms: 200 bytes a second.
        let trickle = futures_util::stream::unfold(0, |n| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            (n < 1000).then(|| {
                (
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"v")),
                    n + 1,
                )
            })
        });
        let body = Body::from_stream(trickle);
        let started = std::time::Instant::now();
        let e = read_body(body, 32 << 10, &limits).await.unwrap_err();
        assert_eq!(e.code, StatusCode::REQUEST_TIMEOUT);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn no_secret_asks_no_token() {
        assert_eq!(
            Authorized::check(&HeaderMap::new(), None),
            Ok(Authorized(None))
        );
    }

    #[test]
    fn a_missing_or_bad_token_is_unauthorized() {
        let none = Authorized::check(&HeaderMap::new(), Some("s")).unwrap_err();
        assert_eq!(none.code, StatusCode::UNAUTHORIZED);
        let h = headers(&[(header::AUTHORIZATION, "Bearer nonsense")]);
        let bad = Authorized::check(&h, Some("s")).unwrap_err();
        assert_eq!(bad.code, StatusCode::UNAUTHORIZED);
    }
}
