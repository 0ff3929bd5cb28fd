//! An output's ring seen from both ends: blocks in with their pts, frames
//! out with theirs, a reader that falls behind.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use super::{Output, OutputId, OutputReader, OutputSpec};
use crate::{SampleTime, Saturation};

fn output(ring_frames: usize) -> (OutputReader, Output) {
    Output::new(&OutputSpec {
        id: OutputId(3),
        channels: 2,
        max_block_frames: 4,
        ring_frames,
        saturation: Saturation::Hard,
        into_main: false,
    })
}

/// Renders one block whose frame `k` holds `base + k` on both channels.
fn block(out: &mut Output, pts: u64, frames: usize) {
    out.begin(frames);
    for (k, f) in out.block_mut(frames).chunks_exact_mut(2).enumerate() {
        f.fill((pts as f32 + k as f32) / 1000.0);
    }
    out.finish(SampleTime(pts), frames, &mut []);
}

#[test]
fn frames_come_out_with_their_pts_across_block_boundaries() {
    let (mut reader, mut out) = output(64);
    block(&mut out, 0, 4);
    block(&mut out, 4, 3);
    assert_eq!(reader.available_frames(), 7);
    let mut buf = [0.0; 10];
    assert_eq!(reader.read(&mut buf), Some((SampleTime(0), 5)));
    assert_eq!(buf[8], 0.004, "frame 4 is the second block's first");
    assert_eq!(reader.next_pts(), Some(SampleTime(5)));
    assert_eq!(reader.read(&mut buf), Some((SampleTime(5), 2)));
    assert_eq!(reader.read(&mut buf), None);
    assert_eq!(
        reader
            .telemetry
            .rendered_frames
            .load(std::sync::atomic::Ordering::Relaxed),
        7
    );
}

#[test]
fn a_read_stops_at_a_gap_in_the_clock() {
    let (mut reader, mut out) = output(64);
    block(&mut out, 0, 4);
    block(&mut out, 8, 4); // blocks 4..8 were never written
    let mut buf = [0.0; 16];
    assert_eq!(reader.read(&mut buf), Some((SampleTime(0), 4)));
    assert_eq!(reader.read(&mut buf), Some((SampleTime(8), 4)));
}

#[test]
fn the_sum_is_saturated() {
    let (mut reader, mut out) = output(64);
    out.begin(2);
    out.block_mut(2).copy_from_slice(&[1.5, -0.25, 0.5, -3.0]);
    out.finish(SampleTime(0), 2, &mut []);
    let mut buf = [0.0; 4];
    reader.read(&mut buf).unwrap();
    assert_eq!(buf, [1.0, -0.25, 0.5, -1.0]);
}

#[test]
fn the_sum_reports_its_peak() {
    let (reader, mut out) = output(64);
    out.begin(2);
    out.block_mut(2).copy_from_slice(&[1.5, -0.25, 0.5, -3.0]);
    out.finish(SampleTime(0), 2, &mut []);
    assert_eq!(
        reader
            .telemetry
            .peak
            .load(std::sync::atomic::Ordering::Relaxed),
        1.0
    );
}

#[test]
fn a_lagging_reader_loses_exactly_what_it_missed() {
    let (mut reader, mut out) = output(8);
    for b in 0..2 {
        block(&mut out, b * 4, 4);
    }
    // The ring is full: the next block is not written, and counted.
    block(&mut out, 8, 4);
    assert_eq!(
        reader
            .telemetry
            .overrun_frames
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    // Keeping the newest 3 skips the oldest 5.
    assert_eq!(reader.keep_newest(3), 5);
    block(&mut out, 12, 4);
    let mut buf = [0.0; 16];
    assert_eq!(reader.read(&mut buf), Some((SampleTime(5), 3)));
    assert_eq!(buf[0], 0.005);
    // The jump is exactly what was lost: 8..12 overran.
    assert_eq!(reader.read(&mut buf), Some((SampleTime(12), 4)));
    assert_eq!(reader.telemetry.lost_frames(), 9);
}
