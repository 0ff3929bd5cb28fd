//! G.711 (SPEC T1): μ-law and A-law, the phone network's 8 kHz codecs, as
//! tables. Decoding is one of 256 values; encoding looks the input's top
//! bits up in a table of the 14 (μ-law) or 13 (A-law) bits the law keeps,
//! so both are a load per sample and never branch on the signal. The
//! tables are built at compile time from the segment structure; the tests
//! check them against the ITU reference algorithm for all 256 codes and
//! every 16-bit input.

/// The μ-law bias added before the segment search (G.711 §3.2).
const ULAW_BIAS: i32 = 0x84;
/// The largest μ-law magnitude, in 14-bit units, before the bias.
const ULAW_CLIP: i32 = 8159;

/// μ-law code `code` as 16-bit linear PCM.
const fn ulaw_decode_one(code: u8) -> i16 {
    let u = !code;
    let mantissa = ((u & 0x0F) as i32) << 3;
    let segment = ((u & 0x70) >> 4) as u32;
    let magnitude = ((mantissa + ULAW_BIAS) << segment) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// A-law code `code` as 16-bit linear PCM.
const fn alaw_decode_one(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mantissa = ((a & 0x0F) as i32) << 4;
    let segment = ((a & 0x70) >> 4) as u32;
    let magnitude = match segment {
        0 => mantissa + 8,
        s => (mantissa + 0x108) << (s - 1),
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// The μ-law code of a 14-bit linear sample (`pcm >> 2`, sign-extended).
const fn ulaw_encode_14(sample: i32) -> u8 {
    let (magnitude, mask) = if sample < 0 {
        (-sample, 0x7F)
    } else {
        (sample, 0xFF)
    };
    let biased = if magnitude > ULAW_CLIP {
        ULAW_CLIP
    } else {
        magnitude
    } + (ULAW_BIAS >> 2);
    // The segment is where the biased value's top bit is, from bit 5.
    let top = 31 - biased.leading_zeros() as i32;
    let segment = top - 5;
    if segment > 7 {
        return 0x7F ^ mask;
    }
    let segment = if segment < 0 { 0 } else { segment };
    let code = (segment << 4) | ((biased >> (segment + 1)) & 0x0F);
    (code as u8) ^ mask
}

/// The A-law code of a 13-bit linear sample (`pcm >> 3`, sign-extended).
const fn alaw_encode_13(sample: i32) -> u8 {
    let (magnitude, mask) = if sample >= 0 {
        (sample, 0xD5)
    } else {
        (-sample - 1, 0x55)
    };
    // Segment 0 and 1 share a step; above, the top bit from bit 4 on.
    let segment = if magnitude < 0x20 {
        0
    } else {
        31 - magnitude.leading_zeros() as i32 - 4
    };
    if segment > 7 {
        return 0x7F ^ mask;
    }
    let shift = if segment < 2 { 1 } else { segment };
    let code = (segment << 4) | ((magnitude >> shift) & 0x0F);
    (code as u8) ^ mask
}

const fn decode_table(law: Law) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = match law {
            Law::Ulaw => ulaw_decode_one(code as u8),
            Law::Alaw => alaw_decode_one(code as u8),
        };
        code += 1;
    }
    table
}

const fn ulaw_encode_table() -> [u8; 1 << 14] {
    let mut table = [0u8; 1 << 14];
    let mut i = 0;
    while i < 1 << 14 {
        // Index: the 14 bits as an unsigned number; the sample: signed.
        let sample = ((i as i32) << 18) >> 18;
        table[i] = ulaw_encode_14(sample);
        i += 1;
    }
    table
}

const fn alaw_encode_table() -> [u8; 1 << 13] {
    let mut table = [0u8; 1 << 13];
    let mut i = 0;
    while i < 1 << 13 {
        let sample = ((i as i32) << 19) >> 19;
        table[i] = alaw_encode_13(sample);
        i += 1;
    }
    table
}

static ULAW_DECODE: [i16; 256] = decode_table(Law::Ulaw);
static ALAW_DECODE: [i16; 256] = decode_table(Law::Alaw);
static ULAW_ENCODE: [u8; 1 << 14] = ulaw_encode_table();
static ALAW_ENCODE: [u8; 1 << 13] = alaw_encode_table();

/// Which G.711 law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// μ-law (PCMU): North America and Japan; Twilio's.
    Ulaw,
    /// A-law (PCMA): the rest of the world.
    Alaw,
}

impl Law {
    /// One 16-bit sample's code.
    #[must_use]
    pub fn encode(self, sample: i16) -> u8 {
        let bits = sample as u16;
        match self {
            Self::Ulaw => ULAW_ENCODE[usize::from(bits >> 2)],
            Self::Alaw => ALAW_ENCODE[usize::from(bits >> 3)],
        }
    }

    /// One code's 16-bit sample.
    #[must_use]
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Self::Ulaw => ULAW_DECODE[usize::from(code)],
            Self::Alaw => ALAW_DECODE[usize::from(code)],
        }
    }

    /// Samples in [-1, 1] as codes, appended to `out` (clipped outside).
    pub fn encode_f32(self, samples: &[f32], out: &mut Vec<u8>) {
        out.extend(samples.iter().map(|&s| {
            let v = (s * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16;
            self.encode(v)
        }));
    }

    /// Codes as samples in [-1, 1], appended to `out`.
    pub fn decode_f32(self, codes: &[u8], out: &mut Vec<f32>) {
        out.extend(codes.iter().map(|&c| f32::from(self.decode(c)) / 32_768.0));
    }

    /// The code of digital silence (what a quiet line sends).
    #[must_use]
    pub fn silence(self) -> u8 {
        self.encode(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The ITU-T G.191 reference (its `g711.c`, after the Sun code), written
    // as it is there: a segment search over the end points.
    const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

    fn search(value: i32, table: &[i32; 8]) -> usize {
        table.iter().position(|&end| value <= end).unwrap_or(8)
    }

    fn reference_linear2ulaw(pcm: i16) -> u8 {
        let mut v = i32::from(pcm) >> 2;
        let mask: i32 = if v < 0 {
            v = -v;
            0x7F
        } else {
            0xFF
        };
        v = v.min(8159) + (0x84 >> 2);
        let seg = search(v, &SEG_UEND);
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        let u = ((seg as i32) << 4) | ((v >> (seg + 1)) & 0x0F);
        (u ^ mask) as u8
    }

    fn reference_ulaw2linear(code: u8) -> i16 {
        let u = !code;
        let mut t = ((i32::from(u) & 0x0F) << 3) + 0x84;
        t <<= (i32::from(u) & 0x70) >> 4;
        (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
    }

    fn reference_linear2alaw(pcm: i16) -> u8 {
        let mut v = i32::from(pcm) >> 3;
        let mask: i32 = if v >= 0 {
            0xD5
        } else {
            v = -v - 1;
            0x55
        };
        let seg = search(v, &SEG_AEND);
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        let mut a = (seg as i32) << 4;
        a |= if seg < 2 {
            (v >> 1) & 0x0F
        } else {
            (v >> seg) & 0x0F
        };
        (a ^ mask) as u8
    }

    fn reference_alaw2linear(code: u8) -> i16 {
        let a = i32::from(code ^ 0x55);
        let mut t = (a & 0x0F) << 4;
        let seg = (a & 0x70) >> 4;
        match seg {
            0 => t += 8,
            1 => t += 0x108,
            _ => {
                t += 0x108;
                t <<= seg - 1;
            }
        }
        (if a & 0x80 != 0 { t } else { -t }) as i16
    }

    #[test]
    fn every_code_decodes_as_the_reference() {
        for code in 0..=255u8 {
            assert_eq!(
                Law::Ulaw.decode(code),
                reference_ulaw2linear(code),
                "μ-law {code:#04x}"
            );
            assert_eq!(
                Law::Alaw.decode(code),
                reference_alaw2linear(code),
                "A-law {code:#04x}"
            );
        }
    }

    #[test]
    fn every_sample_encodes_as_the_reference() {
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(
                Law::Ulaw.encode(sample),
                reference_linear2ulaw(sample),
                "μ-law of {sample}"
            );
            assert_eq!(
                Law::Alaw.encode(sample),
                reference_linear2alaw(sample),
                "A-law of {sample}"
            );
        }
    }

    #[test]
    fn the_standards_landmarks_hold() {
        // Silence, full scale, and each law's idle code.
        assert_eq!(Law::Ulaw.silence(), 0xFF);
        assert_eq!(Law::Alaw.silence(), 0xD5);
        assert_eq!(Law::Ulaw.decode(0x80), 32_124);
        assert_eq!(Law::Ulaw.decode(0x00), -32_124);
        assert_eq!(Law::Alaw.decode(0xAA), 32_256);
        assert_eq!(Law::Alaw.decode(0x2A), -32_256);
        // A code survives a round trip through its value.
        for code in 0..=255u8 {
            let back = Law::Alaw.encode(Law::Alaw.decode(code));
            assert_eq!(Law::Alaw.decode(back), Law::Alaw.decode(code));
            let back = Law::Ulaw.encode(Law::Ulaw.decode(code));
            assert_eq!(Law::Ulaw.decode(back), Law::Ulaw.decode(code));
        }
    }
}
