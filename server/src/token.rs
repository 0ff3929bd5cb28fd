//! Bearer tokens (SPEC A1, S3): an HS256 JWT naming the participant, with
//! a permission, protocol version 2 and an expiry. An agent joins an
//! avatar with `allow_join`; a viewer watches the avatars of one room with
//! `allow_view` (and its `room`); an operator lists every avatar with
//! `operator`. Participant ids and rooms are safe names (at most 64
//! letters, digits, `-`, `_`, `.`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The protocol version a token must carry.
pub const VERSION: u32 = 2;
/// The permission a token must grant.
pub const ALLOW_JOIN: &str = "allow_join";
/// The permission to watch a room's avatars.
pub const ALLOW_VIEW: &str = "allow_view";
/// The permission to list every avatar (an operator's).
pub const OPERATOR: &str = "operator";
/// How long a token is valid unless asked otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The longest a call's token may live by default, and how long the
/// viewer tokens a call server hands its pages live: a call's token is
/// spent when the call is made, so a short life costs nothing and limits
/// what a leaked one can do.
pub const CALL_TOKEN_LIFETIME: Duration = Duration::from_secs(600);
/// The longest lifetime (`exp` − `iat`) a token may claim (SPEC S3).
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How far ahead of this clock a token's `iat` or `nbf` may be: the
/// signer's clock may run a little fast, not more.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account's API key.
    pub apikey: String,
    /// What the bearer may do; must contain [`ALLOW_JOIN`].
    pub permissions: Vec<String>,
    /// Must be [`VERSION`].
    pub version: u32,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
    /// The avatar's participant id: a join must name the same.
    #[serde(rename = "participantId")]
    pub participant_id: String,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The room the token is for; when given, a join must name the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// A signed token and the participant it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The avatar's participant id.
    pub participant_id: String,
    /// The signed token.
    pub token: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token, a bad signature or algorithm, expired, not valid yet,
    /// issued in the future, or living too long. The reason is short and
    /// fixed: nothing of the token or the library is echoed.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// The token is for another participant than the join names.
    #[error("token is for another participant")]
    Participant,
    /// The token is for another room than the join names.
    #[error("token is for another room")]
    Room,
    /// The token does not grant what is asked of it.
    #[error("token lacks the permission")]
    NoPermission,
    /// The token's participant id or room is not a safe name.
    #[error(
        "invalid token: a participant id or room of other than letters, digits, '-', '_', '.'"
    )]
    Name,
    /// The token is for another protocol version.
    #[error("token version {0}, expected 2")]
    Version(u32),
    /// The token could not be signed.
    #[error("cannot sign token: {0}")]
    Sign(String),
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs credentials for an avatar participant: `participant_id` or
/// `avatar_` and 8 hex digits, valid for `ttl`.
///
/// # Errors
/// [`TokenError::Sign`] if signing fails.
pub fn create(
    api_key: &str,
    secret: &str,
    participant_id: Option<&str>,
    ttl: Duration,
) -> Result<Credentials, TokenError> {
    let now = now_secs();
    let participant_id = participant_id.map_or_else(random_participant, str::to_owned);
    let claims = Claims {
        apikey: api_key.to_owned(),
        permissions: vec![ALLOW_JOIN.to_owned()],
        version: VERSION,
        iat: now,
        exp: now + ttl.as_secs(),
        participant_id: participant_id.clone(),
        nbf: None,
        room: None,
    };
    sign(&claims, secret).map(|token| Credentials {
        participant_id,
        token,
    })
}

/// Signs any claims (tests make bad tokens with it).
///
/// # Errors
/// [`TokenError::Sign`] if signing fails.
pub fn sign(claims: &Claims, secret: &str) -> Result<String, TokenError> {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| TokenError::Sign(e.to_string()))
}

/// Signs a viewer's token: it may watch the avatars of `room` for `ttl`.
///
/// # Errors
/// [`TokenError::Sign`] if signing fails.
pub fn viewer(secret: &str, room: &str, ttl: Duration) -> Result<String, TokenError> {
    let now = now_secs();
    let claims = Claims {
        apikey: "viewer".to_owned(),
        permissions: vec![ALLOW_VIEW.to_owned()],
        version: VERSION,
        iat: now,
        exp: now + ttl.as_secs(),
        participant_id: random_participant().replace("avatar_", "viewer_"),
        nbf: None,
        room: Some(room.to_owned()),
    };
    sign(&claims, secret)
}

/// Checks a token's signature (HS256 only), expiry, start, issue time,
/// lifetime, names, the `allow_join` permission and version (SPEC A1, S3).
///
/// # Errors
/// The [`TokenError`] saying which check failed.
pub fn verify(token: &str, secret: &str) -> Result<Claims, TokenError> {
    verify_granting(token, secret, &[ALLOW_JOIN])
}

/// [`verify`], the token granting any one of `permissions`.
///
/// # Errors
/// The [`TokenError`] saying which check failed.
pub fn verify_granting(
    token: &str,
    secret: &str,
    permissions: &[&str],
) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp"]);
    let data = decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| TokenError::Invalid(reason(e.kind())))?;
    let claims = data.claims;
    let ahead = now_secs().saturating_add(CLOCK_SKEW.as_secs());
    if claims.iat > ahead {
        return Err(TokenError::Invalid("issued in the future"));
    }
    if claims.nbf.is_some_and(|nbf| nbf > ahead) {
        return Err(TokenError::Invalid("not valid yet"));
    }
    if claims.exp.saturating_sub(claims.iat) > MAX_LIFETIME.as_secs() {
        return Err(TokenError::Invalid("lifetime over 24 hours"));
    }
    if !claims
        .permissions
        .iter()
        .any(|p| permissions.contains(&p.as_str()))
    {
        return Err(TokenError::NoPermission);
    }
    let safe = sotto_net::avatar::safe_name;
    if !safe(&claims.participant_id) || claims.room.as_deref().is_some_and(|r| !safe(r)) {
        return Err(TokenError::Name);
    }
    if claims.version != VERSION {
        return Err(TokenError::Version(claims.version));
    }
    Ok(claims)
}

/// [`verify`], and that the token is for this participant and, when it
/// names a room, this room: a token cannot be replayed for another.
///
/// # Errors
/// As [`verify`]; [`TokenError::Participant`], [`TokenError::Room`].
pub fn verify_for(
    token: &str,
    secret: &str,
    participant_id: &str,
    room: &str,
) -> Result<Claims, TokenError> {
    let claims = verify(token, secret)?;
    if claims.participant_id != participant_id {
        return Err(TokenError::Participant);
    }
    if claims.room.as_ref().is_some_and(|r| r != room) {
        return Err(TokenError::Room);
    }
    Ok(claims)
}

/// A short, fixed reason for a token the library refused.
fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not valid yet",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "wrong algorithm",
        _ => "malformed",
    }
}

/// `avatar_` and 8 hex digits, from the clock and a per-process counter.
fn random_participant() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("avatar_{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies() {
        let c = create("key", "secret", None, DEFAULT_TTL).unwrap();
        assert!(c.participant_id.starts_with("avatar_"));
        assert_eq!(c.participant_id.len(), "avatar_".len() + 8);
        let claims = verify(&c.token, "secret").unwrap();
        assert_eq!(claims.participant_id, c.participant_id);
        assert_eq!(claims.exp - claims.iat, 3600);
    }

    #[test]
    fn a_viewer_token_grants_viewing_its_room_only() {
        let t = viewer("secret", "call-1", CALL_TOKEN_LIFETIME).unwrap();
        let claims = verify_granting(&t, "secret", &[ALLOW_VIEW]).unwrap();
        assert_eq!(claims.room.as_deref(), Some("call-1"));
        assert_eq!(verify(&t, "secret"), Err(TokenError::NoPermission));
        assert_eq!(
            verify_granting(&t, "secret", &[OPERATOR]),
            Err(TokenError::NoPermission)
        );
    }

    #[test]
    fn a_bad_token_is_refused() {
        let c = create("key", "secret", None, DEFAULT_TTL).unwrap();
        let claims = verify(&c.token, "secret").unwrap();
        assert!(matches!(
            verify(&c.token, "other"),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            verify("garbage", "secret"),
            Err(TokenError::Invalid(_))
        ));
        let mut expired = claims.clone();
        expired.exp = expired.iat - 10;
        let t = sign(&expired, "secret").unwrap();
        assert!(matches!(verify(&t, "secret"), Err(TokenError::Invalid(_))));
        let mut no_join = claims.clone();
        no_join.permissions = vec!["allow_mod".into()];
        let t = sign(&no_join, "secret").unwrap();
        assert_eq!(verify(&t, "secret"), Err(TokenError::NoPermission));
        let mut long_name = claims.clone();
        long_name.participant_id = "x".repeat(65);
        let t = sign(&long_name, "secret").unwrap();
        assert_eq!(verify(&t, "secret"), Err(TokenError::Name));
        let mut odd = claims.clone();
        odd.participant_id = "../etc".into();
        let t = sign(&odd, "secret").unwrap();
        assert_eq!(verify(&t, "secret"), Err(TokenError::Name));
        let mut v1 = claims;
        v1.version = 1;
        let t = sign(&v1, "secret").unwrap();
        assert_eq!(verify(&t, "secret"), Err(TokenError::Version(1)));
    }
}
