//! HTTP input typed at the edge (SPEC S1, S3) and the answers every route
//! shares: an SDP offer ([`SdpOffer`]: content type, declared size, a
//! bounded read, UTF-8; [`OfferHeaders`] checks what its headers say
//! first), a bearer token checked against the server's secret
//! ([`Authorized`]) before any body is read, CORS for pages of
//! other origins, JSON answers.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

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
    fn into_response(self) -> Response {
        with_cors((self.code, self.why).into_response())
    }
}

/// `code` for `why`, answered with CORS.
#[must_use]
pub fn refuse(code: StatusCode, why: &str) -> Response {
    Refusal::new(code, why).into_response()
}

/// A number from a request's path (a call's, an avatar's, a viewer's
/// id); anything else, or one longer than a `u64` can be, names nothing.
#[must_use]
pub fn path_number(raw: &str) -> Option<u64> {
    if raw.len() > 20 {
        return None;
    }
    raw.parse().ok()
}

/// The methods a page of another origin may use on these servers.
const CORS_METHODS: &str = "GET, POST, DELETE, OPTIONS";

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
        HeaderValue::from_static("Location"),
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
pub fn typed(body: String, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
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

    /// Reads an offer's body, at most [`MAX_OFFER_BYTES`] of it.
    ///
    /// # Errors
    /// A 413 [`Refusal`] past the limit, 400 for a body that breaks off or
    /// is not text.
    pub async fn read(body: Body) -> Result<Self, Refusal> {
        use http_body_util::BodyExt;
        let bytes = match http_body_util::Limited::new(body, MAX_OFFER_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_long()),
            Err(_) => return Err(Refusal::new(StatusCode::BAD_REQUEST, "the offer broke off")),
        };
        String::from_utf8(bytes.to_vec())
            .map(Self)
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "the offer is not text"))
    }
}

fn too_long() -> Refusal {
    Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "the offer is too long")
}

impl<S: Send + Sync> FromRequest<S> for SdpOffer {
    type Rejection = Refusal;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        Self::check(req.headers())?;
        Self::read(req.into_body()).await
    }
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
        let e = SdpOffer::read(body).await.unwrap_err();
        assert_eq!(e.code, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn an_offer_that_is_not_text_is_bad() {
        let e = SdpOffer::read(Body::from(vec![0xff, 0xfe]))
            .await
            .unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
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
