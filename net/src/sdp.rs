//! An offer looked over before anything is built for it (SPEC S1): what
//! can never connect is refused, and candidates that would make the
//! server a reflector or a port scanner are limited and filtered.
//!
//! A peer sends its ICE checks to every candidate an offer names, so an
//! offer with hundreds of them, or naming multicast, broadcast or
//! unspecified addresses, turns a `POST` into a flood aimed wherever the
//! poster likes. Offers are refused past [`MAX_CANDIDATES`]; candidates at
//! addresses no far end can have are dropped before the offer is applied.

use std::net::IpAddr;

/// The most candidates an offer may carry. A browser's complete offer
/// has one to ten; RFC 8445 (§ 6.1.2.5) caps the check list at about
/// a hundred pairs, which with a server's one or two candidates is fifty.
pub const MAX_CANDIDATES: usize = 32;

/// The longest line looked at: a browser's longest (a fingerprint, a
/// codec's parameters) is under 200 bytes.
pub const MAX_LINE: usize = 1_024;

/// What an offer must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferRules {
    /// An audio section, not rejected (port ≠ 0), offering Opus in that
    /// section with a payload type of 96–127.
    pub opus_audio: bool,
    /// Loopback candidates are kept (only when this side's media address is
    /// itself loopback: otherwise they would aim at the server's own
    /// ports).
    pub loopback: bool,
}

/// An offer looked over: its text with refused candidates taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VettedOffer {
    /// The SDP to apply.
    pub sdp: String,
    /// Candidates dropped (multicast, broadcast, unspecified, loopback
    /// where it is not allowed, malformed).
    pub dropped: usize,
}

/// Looks `offer` over by `rules`.
///
/// # Errors
/// Why it can never connect, in a few words: lines too long, no ICE
/// credentials or malformed ones, no DTLS fingerprint or a malformed one,
/// too many candidates, no usable Opus audio (when asked for).
pub fn vet_offer(offer: &str, rules: OfferRules) -> Result<VettedOffer, &'static str> {
    if !offer.starts_with("v=0") {
        return Err("not SDP");
    }
    let mut kept = String::with_capacity(offer.len());
    let mut dropped = 0;
    let mut candidates = 0;
    let (mut ufrag, mut pwd, mut fingerprint) = (false, false, false);
    // The audio section being read: its payload types, whether it is live.
    let mut audio: Option<(Vec<u8>, bool)> = None;
    let mut opus = false;
    for line in offer.lines() {
        let line = line.trim_end_matches('\r');
        if line.len() > MAX_LINE {
            return Err("a line is too long");
        }
        if let Some(m) = line.strip_prefix("m=") {
            audio = audio_section(m)?;
        } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            if !ice_chars(v, 4) {
                return Err("a malformed ICE ufrag");
            }
            ufrag = true;
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            if !ice_chars(v, 22) {
                return Err("a malformed ICE password");
            }
            pwd = true;
        } else if let Some(v) = line.strip_prefix("a=fingerprint:") {
            if !good_fingerprint(v) {
                return Err("a malformed or unknown DTLS fingerprint");
            }
            fingerprint = true;
        } else if let Some(v) = line.strip_prefix("a=rtpmap:") {
            if let Some((types, live)) = &audio {
                let (pt, codec) = v.split_once(' ').unwrap_or((v, ""));
                let pt = pt.parse::<u8>().ok();
                if *live
                    && codec.to_ascii_lowercase().starts_with("opus/48000")
                    && pt.is_some_and(|pt| (96..=127).contains(&pt) && types.contains(&pt))
                {
                    opus = true;
                }
            }
        } else if let Some(v) = line.strip_prefix("a=candidate:") {
            candidates += 1;
            if candidates > MAX_CANDIDATES {
                return Err("too many ICE candidates");
            }
            if !usable_candidate(v, rules.loopback) {
                dropped += 1;
                continue;
            }
        }
        kept.push_str(line);
        kept.push_str("\r\n");
    }
    if !(ufrag && pwd) {
        return Err("no ICE credentials");
    }
    if !fingerprint {
        return Err("no DTLS fingerprint");
    }
    if rules.opus_audio && !opus {
        return Err("no Opus audio to answer");
    }
    Ok(VettedOffer { sdp: kept, dropped })
}

/// An offer of one media section without a BUNDLE group (a WHIP client's
/// such as GStreamer's, with its bundle policy `none`), made to name that
/// section in one: the WebRTC stack here answers only what is bundled and
/// would reject it (port 0). With a single section, bundled or not is the
/// same on the wire. `None` when the offer needs no change; the answer's
/// group line is taken out again by [`unbundle_answer`], so the answer
/// adds nothing the offer did not have (RFC 8843 § 7.3).
#[must_use]
pub fn bundle_single_section(offer: &str) -> Option<String> {
    if offer.lines().any(|l| l.starts_with("a=group:BUNDLE")) {
        return None;
    }
    if offer.lines().filter(|l| l.starts_with("m=")).count() != 1 {
        return None;
    }
    let mid = offer
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("a=mid:"))?;
    if mid.is_empty() || mid.len() > 32 || !mid.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let at = offer.find("\nm=")? + 1;
    Some(format!(
        "{}a=group:BUNDLE {mid}\r\n{}",
        &offer[..at],
        &offer[at..]
    ))
}

/// An answer without its session's BUNDLE group: see
/// [`bundle_single_section`].
#[must_use]
pub fn unbundle_answer(answer: &str) -> String {
    answer
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("a=group:BUNDLE"))
        .collect()
}

/// Says once, for the whole offer, that `dropped` of its candidates were
/// refused (not once per check a peer would have sent).
pub fn log_dropped(dropped: usize) {
    if dropped > 0 {
        tracing::info!(
            dropped,
            "an offer's candidates at unreachable addresses were dropped"
        );
    }
}

/// An `m=` line's payload types when it is audio, and whether it is live
/// (port ≠ 0); `None` for any other kind.
fn audio_section(m: &str) -> Result<Option<(Vec<u8>, bool)>, &'static str> {
    let mut fields = m.split(' ');
    let kind = fields.next().unwrap_or("");
    let port = fields.next().unwrap_or("");
    let _proto = fields.next();
    if kind != "audio" {
        return Ok(None);
    }
    let port: u32 = port
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("a malformed media line")?;
    let types = fields.filter_map(|f| f.parse().ok()).take(64).collect();
    Ok(Some((types, port != 0)))
}

/// ICE's ufrag and password alphabet (RFC 8839: `ALPHA / DIGIT / + / /`),
/// at least `min` and at most 256 characters.
fn ice_chars(v: &str, min: usize) -> bool {
    (min..=256).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// `HASH XX:XX:…`: a hash a DTLS stack can check, with its length of
/// hex bytes.
fn good_fingerprint(v: &str) -> bool {
    let Some((hash, value)) = v.trim().split_once(' ') else {
        return false;
    };
    let bytes = match hash.to_ascii_lowercase().as_str() {
        "sha-1" => 20,
        "sha-224" => 28,
        "sha-256" => 32,
        "sha-384" => 48,
        "sha-512" => 64,
        _ => return false,
    };
    let parts: Vec<&str> = value.trim().split(':').take(65).collect();
    parts.len() == bytes
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether a candidate (after `a=candidate:`) is one to send checks to: a
/// UDP or TCP candidate at a port, at an address some far end can have
/// (an mDNS `.local` name is resolved by the peer, on the link only).
fn usable_candidate(v: &str, loopback: bool) -> bool {
    let fields: Vec<&str> = v.split(' ').take(8).collect();
    let [_foundation, component, transport, _priority, address, port, typ, _kind] = fields[..]
    else {
        return false;
    };
    let numeric = component.parse::<u8>().is_ok() && port.parse::<u16>().is_ok_and(|p| p != 0);
    let transport = transport.eq_ignore_ascii_case("udp") || transport.eq_ignore_ascii_case("tcp");
    if !(numeric && transport && typ == "typ") {
        return false;
    }
    match address.parse::<IpAddr>() {
        Ok(ip) => reachable(ip, loopback),
        Err(_) => address.len() <= 255 && address.ends_with(".local"),
    }
}

/// An address a far end can be at: not multicast, broadcast or
/// unspecified, and loopback only when `loopback` is allowed.
fn reachable(ip: IpAddr, loopback: bool) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_multicast() || ip.is_unspecified() || broadcast || (ip.is_loopback() && !loopback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_unbundled_section_is_bundled_and_unbundled_again() {
        let offer = "v=0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:audio0\r\n";
        let bundled = bundle_single_section(offer).unwrap();
        assert_eq!(
            bundled,
            "v=0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE audio0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:audio0\r\n"
        );
        assert_eq!(bundle_single_section(&bundled), None);
        assert_eq!(unbundle_answer(&bundled), offer);
        let two = format!("{offer}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\n");
        assert_eq!(bundle_single_section(&two), None);
    }

    const FP: &str = "a=fingerprint:sha-256 \
        AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    fn offer(audio: &str, extra: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{audio}\
             a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n{FP}\r\n{extra}"
        )
    }

    const AUDIO: &str = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
    const RULES: OfferRules = OfferRules {
        opus_audio: true,
        loopback: false,
    };

    fn candidate(ip: &str) -> String {
        format!("a=candidate:1 1 udp 2122260223 {ip} 50000 typ host\r\n")
    }

    #[test]
    fn a_browser_like_offer_passes_whole() {
        let o = offer(AUDIO, &candidate("192.0.2.7"));
        let v = vet_offer(&o, RULES).unwrap();
        assert_eq!(v.dropped, 0);
        assert_eq!(v.sdp, o);
    }

    #[test]
    fn addresses_no_far_end_has_are_dropped() {
        for ip in [
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::",
            "ff02::1",
            "127.0.0.1",
        ] {
            let v = vet_offer(&offer(AUDIO, &candidate(ip)), RULES).unwrap();
            assert_eq!(v.dropped, 1, "{ip}");
            assert!(!v.sdp.contains("a=candidate"), "{ip}");
        }
        let lo = OfferRules {
            loopback: true,
            ..RULES
        };
        assert_eq!(
            vet_offer(&offer(AUDIO, &candidate("127.0.0.1")), lo)
                .unwrap()
                .dropped,
            0
        );
    }

    #[test]
    fn too_many_candidates_is_refused() {
        let many: String = (0..=MAX_CANDIDATES)
            .map(|k| candidate(&format!("10.0.{}.{}", k / 250, k % 250 + 1)))
            .collect();
        assert_eq!(
            vet_offer(&offer(AUDIO, &many), RULES),
            Err("too many ICE candidates")
        );
    }

    #[test]
    fn offers_that_can_never_connect_are_refused() {
        let bad = [
            offer(
                "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
                "",
            ),
            offer(
                "m=video 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
                "",
            ),
            offer(
                "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=rtpmap:111 opus/48000/2\r\n",
                "",
            ),
            offer(
                "m=audio 9 UDP/TLS/RTP/SAVPF 255\r\na=rtpmap:255 opus/48000/2\r\n",
                "",
            ),
            offer(AUDIO, "").replace("sha-256", "md5"),
            offer(AUDIO, "").replace("AB:CD:EF:01", "AB:CD:EF"),
            offer(AUDIO, "").replace("abcd\r", &format!("{}\r", "u".repeat(30_000))),
            offer(AUDIO, "").replace("a=ice-pwd:abcdefghijklmnopqrstuv\r\n", ""),
        ];
        for (k, o) in bad.iter().enumerate() {
            assert!(vet_offer(o, RULES).is_err(), "probe {k}");
        }
        let data_only = offer("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", "");
        let any = OfferRules {
            opus_audio: false,
            ..RULES
        };
        assert!(vet_offer(&data_only, any).is_ok());
    }
}
