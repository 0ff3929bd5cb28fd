//! VP8 video for the avatar's face (SPEC W5): libvpx (Debian `libvpx-dev`
//! 1.12, through `env-libvpx-sys`'s bindings) in real-time mode, one
//! thread, constant bit rate, no frames held back, error resilient, key
//! frames on request (a viewer that joins or loses one) and every few
//! seconds. A decoder beside it reads the frames back, for tests.
//!
//! The bindings are C calls; every one is wrapped here once, its pointers
//! owned by the types below, so nothing else in the project touches them.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_ulong};
use std::ptr;

use vpx_sys::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT;
use vpx_sys::{
    vpx_codec_ctx_t, vpx_codec_dec_init_ver, vpx_codec_decode, vpx_codec_destroy,
    vpx_codec_enc_cfg_t, vpx_codec_enc_config_default, vpx_codec_enc_init_ver, vpx_codec_encode,
    vpx_codec_err_t, vpx_codec_get_cx_data, vpx_codec_get_frame, vpx_codec_vp8_cx,
    vpx_codec_vp8_dx, vpx_image_t, vpx_img_fmt, vpx_img_wrap, vpx_rc_mode, VPX_CODEC_OK,
    VPX_DECODER_ABI_VERSION, VPX_DL_REALTIME, VPX_EFLAG_FORCE_KF, VPX_ENCODER_ABI_VERSION,
    VPX_FRAME_IS_KEY,
};

use sotto_net::video::Vp8Frame;
use sotto_net::NetError;

pub use sotto_net::peer::VIDEO_RATE;
/// The largest picture taken: 1080p.
pub const MAX_PIXELS: u32 = 1920 * 1080;

/// How a face is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Config {
    /// Width in pixels, even, 16..=1920.
    pub width: u32,
    /// Height in pixels, even, 16..=1080.
    pub height: u32,
    /// Frames per second the encoder plans for (1..=60).
    pub fps: u32,
    /// Target bit rate, kbit/s (50..=10,000).
    pub bitrate_kbps: u32,
    /// libvpx's speed in real-time mode (−16..=16; further from zero is
    /// faster and coarser; WebRTC's desktop default is −6).
    pub speed: i32,
}

impl Default for Vp8Config {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            fps: 25,
            bitrate_kbps: 600,
            speed: -6,
        }
    }
}

impl Vp8Config {
    fn check(&self) -> Result<(), NetError> {
        let bad = |m: String| Err(NetError(m));
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            return bad(format!("{}x{} is not even", self.width, self.height));
        }
        if !(16..=1920).contains(&self.width)
            || !(16..=1080).contains(&self.height)
            || self.width * self.height > MAX_PIXELS
        {
            return bad(format!(
                "{}x{} is outside 16x16..1920x1080",
                self.width, self.height
            ));
        }
        if !(1..=60).contains(&self.fps) {
            return bad(format!("{} fps is outside 1..=60", self.fps));
        }
        if !(50..=10_000).contains(&self.bitrate_kbps) {
            return bad(format!(
                "{} kbit/s is outside 50..=10000",
                self.bitrate_kbps
            ));
        }
        if !(-16..=16).contains(&self.speed) {
            return bad(format!("speed {} is outside -16..=16", self.speed));
        }
        Ok(())
    }
}

fn check(err: vpx_codec_err_t, what: &str) -> Result<(), NetError> {
    if err == VPX_CODEC_OK {
        Ok(())
    } else {
        Err(NetError(format!("libvpx {what}: {err:?}")))
    }
}

/// Encodes I420 pictures into VP8 frames.
pub struct Vp8Encoder {
    // Boxed: libvpx keeps its own state behind the context's pointer and
    // the context must not move once initialised.
    ctx: Box<vpx_codec_ctx_t>,
    config: Vp8Config,
    /// The picture, planes back to back, as libvpx reads it.
    picture: Vec<u8>,
    frames: Vec<Vp8Frame>,
}

// The context is only used through `&mut self`.
unsafe impl Send for Vp8Encoder {}

impl std::fmt::Debug for Vp8Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Encoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Vp8Encoder {
    /// An encoder for `config`.
    ///
    /// # Errors
    /// [`NetError`] for a config out of range or a libvpx that refuses it.
    pub fn new(config: Vp8Config) -> Result<Self, NetError> {
        config.check()?;
        // SAFETY: the interface is a static table libvpx owns.
        let iface = unsafe { vpx_codec_vp8_cx() };
        let mut cfg = MaybeUninit::<vpx_codec_enc_cfg_t>::zeroed();
        // SAFETY: `cfg` is a valid place for the default config to be written.
        check(
            unsafe { vpx_codec_enc_config_default(iface, cfg.as_mut_ptr(), 0) },
            "default config",
        )?;
        // SAFETY: written by the call above, which succeeded.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.g_w = config.width;
        cfg.g_h = config.height;
        cfg.g_timebase.num = 1;
        cfg.g_timebase.den = VIDEO_RATE as c_int;
        cfg.g_threads = 1;
        cfg.g_lag_in_frames = 0;
        cfg.g_error_resilient = 1;
        cfg.rc_end_usage = vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = config.bitrate_kbps;
        cfg.rc_min_quantizer = 4;
        cfg.rc_max_quantizer = 56;
        cfg.rc_dropframe_thresh = 0;
        cfg.kf_max_dist = config.fps * 3;
        // SAFETY: a zeroed context is what libvpx initialises.
        let mut ctx: Box<vpx_codec_ctx_t> =
            Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        // SAFETY: `ctx` and `cfg` are valid for the call; the ABI version
        // is the one the bindings were made for.
        check(
            unsafe {
                vpx_codec_enc_init_ver(&mut *ctx, iface, &cfg, 0, VPX_ENCODER_ABI_VERSION as c_int)
            },
            "encoder init",
        )?;
        let mut encoder = Self {
            ctx,
            config,
            picture: vec![0; (config.width * config.height * 3 / 2) as usize],
            frames: Vec::new(),
        };
        // SAFETY: an initialised context; VP8E_SET_CPUUSED takes an int.
        check(
            unsafe {
                vpx_sys::vpx_codec_control_(
                    &mut *encoder.ctx,
                    vpx_sys::vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int,
                    config.speed as c_int,
                )
            },
            "speed",
        )?;
        Ok(encoder)
    }

    /// The config it was made with.
    #[must_use]
    pub fn config(&self) -> Vp8Config {
        self.config
    }

    /// Encodes one picture (`y` is width × height, `u` and `v` a quarter of
    /// that each) shown at `pts` on the 90 kHz clock; `key` forces a key
    /// frame. The frames it made (one, or none if libvpx dropped it).
    ///
    /// # Errors
    /// [`NetError`] for planes of the wrong size or a libvpx failure.
    pub fn encode(
        &mut self,
        y: &[u8],
        u: &[u8],
        v: &[u8],
        pts: u64,
        key: bool,
    ) -> Result<&[Vp8Frame], NetError> {
        let luma = (self.config.width * self.config.height) as usize;
        if y.len() != luma || u.len() != luma / 4 || v.len() != luma / 4 {
            return Err(NetError(format!(
                "planes of {}, {}, {} bytes for a {}x{} picture",
                y.len(),
                u.len(),
                v.len(),
                self.config.width,
                self.config.height
            )));
        }
        self.picture[..luma].copy_from_slice(y);
        self.picture[luma..luma + luma / 4].copy_from_slice(u);
        self.picture[luma + luma / 4..].copy_from_slice(v);
        let mut image = MaybeUninit::<vpx_image_t>::zeroed();
        // SAFETY: the picture buffer holds width × height × 3/2 bytes, as
        // an I420 image of that size with alignment 1 needs, and outlives
        // the encode call below (libvpx does not keep it).
        let wrapped = unsafe {
            vpx_img_wrap(
                image.as_mut_ptr(),
                vpx_img_fmt::VPX_IMG_FMT_I420,
                self.config.width,
                self.config.height,
                1,
                self.picture.as_mut_ptr(),
            )
        };
        if wrapped.is_null() {
            return Err(NetError("libvpx could not wrap the picture".into()));
        }
        let flags = if key { VPX_EFLAG_FORCE_KF as i64 } else { 0 };
        let duration = u64::from(VIDEO_RATE / self.config.fps);
        // SAFETY: an initialised context and the image wrapped above.
        check(
            unsafe {
                vpx_codec_encode(
                    &mut *self.ctx,
                    image.as_ptr(),
                    pts as i64,
                    duration as c_ulong,
                    flags,
                    VPX_DL_REALTIME as c_ulong,
                )
            },
            "encode",
        )?;
        self.frames.clear();
        let mut iter = ptr::null();
        loop {
            // SAFETY: an initialised context; `iter` is libvpx's cursor.
            let pkt = unsafe { vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: libvpx returned a packet valid until the next call.
            let pkt = unsafe { &*pkt };
            if pkt.kind != VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: a frame packet's union member is `frame`; its buffer
            // holds `sz` bytes until the next call into the encoder.
            let (data, flags) = unsafe {
                let f = pkt.data.frame;
                (
                    std::slice::from_raw_parts(f.buf as *const u8, f.sz as usize).to_vec(),
                    f.flags,
                )
            };
            self.frames.push(Vp8Frame {
                data,
                key: flags & VPX_FRAME_IS_KEY != 0,
            });
        }
        Ok(&self.frames)
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once here.
        unsafe {
            vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// A decoded picture, I420.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Luma, width × height.
    pub y: Vec<u8>,
    /// Chroma, a quarter each.
    pub u: Vec<u8>,
    /// Chroma.
    pub v: Vec<u8>,
}

/// Decodes VP8 frames back into pictures.
pub struct Vp8Decoder {
    ctx: Box<vpx_codec_ctx_t>,
}

// The context is only used through `&mut self`.
unsafe impl Send for Vp8Decoder {}

impl std::fmt::Debug for Vp8Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Decoder").finish_non_exhaustive()
    }
}

impl Vp8Decoder {
    /// A decoder.
    ///
    /// # Errors
    /// [`NetError`] when libvpx cannot make one.
    pub fn new() -> Result<Self, NetError> {
        // SAFETY: a zeroed context is what libvpx initialises.
        let mut ctx: Box<vpx_codec_ctx_t> =
            Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        // SAFETY: a valid context, the VP8 decoder's static interface, no
        // config (libvpx picks the size from the stream).
        check(
            unsafe {
                vpx_codec_dec_init_ver(
                    &mut *ctx,
                    vpx_codec_vp8_dx(),
                    ptr::null(),
                    0,
                    VPX_DECODER_ABI_VERSION as c_int,
                )
            },
            "decoder init",
        )?;
        Ok(Self { ctx })
    }

    /// Decodes one frame; the picture it shows, if any.
    ///
    /// # Errors
    /// [`NetError`] for data libvpx cannot decode.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<Picture>, NetError> {
        let len = u32::try_from(data.len()).map_err(|_| NetError("frame too large".into()))?;
        // SAFETY: `data` is valid for `len` bytes during the call.
        check(
            unsafe { vpx_codec_decode(&mut *self.ctx, data.as_ptr(), len, ptr::null_mut(), 0) },
            "decode",
        )?;
        let mut iter = ptr::null();
        // SAFETY: an initialised context; `iter` is libvpx's cursor.
        let img = unsafe { vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
        if img.is_null() {
            return Ok(None);
        }
        // SAFETY: libvpx returned an image valid until the next decode.
        let img = unsafe { &*img };
        let (w, h) = (img.d_w as usize, img.d_h as usize);
        let plane = |k: usize, pw: usize, ph: usize| -> Vec<u8> {
            let stride = img.stride[k] as usize;
            let mut out = Vec::with_capacity(pw * ph);
            for row in 0..ph {
                // SAFETY: each plane holds `ph` rows of `stride` bytes, of
                // which the first `pw` are the picture.
                let line =
                    unsafe { std::slice::from_raw_parts(img.planes[k].add(row * stride), pw) };
                out.extend_from_slice(line);
            }
            out
        };
        Ok(Some(Picture {
            width: img.d_w,
            height: img.d_h,
            y: plane(0, w, h),
            u: plane(1, w.div_ceil(2), h.div_ceil(2)),
            v: plane(2, w.div_ceil(2), h.div_ceil(2)),
        }))
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once here.
        unsafe {
            vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture with a bright disc of `r` pixels in a grey field.
    fn disc(w: usize, h: usize, r: f32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut y = vec![60u8; w * h];
        for row in 0..h {
            for col in 0..w {
                let (dx, dy) = (col as f32 - w as f32 / 2.0, row as f32 - h as f32 / 2.0);
                if dx * dx + dy * dy < r * r {
                    y[row * w + col] = 200;
                }
            }
        }
        (y, vec![128; w * h / 4], vec![128; w * h / 4])
    }

    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        let mse = a
            .iter()
            .zip(b)
            .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        10.0 * (255.0f64.powi(2) / mse.max(1e-9)).log10()
    }

    #[test]
    fn pictures_survive_encoding_and_key_frames_come_when_asked() {
        let config = Vp8Config {
            width: 320,
            height: 240,
            ..Vp8Config::default()
        };
        let mut enc = Vp8Encoder::new(config).unwrap();
        let mut dec = Vp8Decoder::new().unwrap();
        let mut keys = Vec::new();
        let mut last = 0.0;
        for k in 0..50u64 {
            let (y, u, v) = disc(320, 240, 20.0 + k as f32);
            let frames = enc.encode(&y, &u, &v, k * 3_600, k == 30).unwrap().to_vec();
            assert_eq!(frames.len(), 1, "frame {k}");
            keys.push(frames[0].key);
            let pic = dec.decode(&frames[0].data).unwrap().unwrap();
            assert_eq!((pic.width, pic.height), (320, 240));
            last = psnr(&y, &pic.y);
        }
        assert!(keys[0] && keys[30], "{keys:?}");
        assert!(keys.iter().filter(|&&k| k).count() <= 3, "{keys:?}");
        assert!(last > 30.0, "PSNR {last:.1} dB");
    }

    #[test]
    fn bad_encoder_input_is_refused() {
        for c in [
            Vp8Config {
                width: 641,
                ..Vp8Config::default()
            },
            Vp8Config {
                width: 0,
                ..Vp8Config::default()
            },
            Vp8Config {
                height: 4_000,
                ..Vp8Config::default()
            },
            Vp8Config {
                fps: 0,
                ..Vp8Config::default()
            },
            Vp8Config {
                bitrate_kbps: u32::MAX,
                ..Vp8Config::default()
            },
            Vp8Config {
                speed: 99,
                ..Vp8Config::default()
            },
        ] {
            assert!(Vp8Encoder::new(c).is_err(), "{c:?}");
        }
        let mut enc = Vp8Encoder::new(Vp8Config::default()).unwrap();
        assert!(enc.encode(&[0; 10], &[0; 2], &[0; 2], 0, false).is_err());
        let mut dec = Vp8Decoder::new().unwrap();
        assert!(dec.decode(&[0xff; 64]).is_err());
    }
}
