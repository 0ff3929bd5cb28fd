"""The reference stack's cost per call per 20 ms packet, for BENCHMARKS.md:
N calls, each an aiortc peer whose audio track's recv() hands out 20 ms of
speech (paced as aiortc's own AudioStreamTrack paces), encoded by aiortc's
Opus encoder and sent by its RTP sender over SRTP to the same webrtc-rs
receiving process `call-cost` uses, on loopback.

    python3 benches/reference/aiortc_call.py --calls N --seconds T

prints one line of JSON: this process's CPU per packet sent.
"""

import argparse
import asyncio
import fractions
import json
import os
import subprocess
import sys
import time
import wave

import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
RATE = 48000
PACKET = 960


def speech():
    """The shipped speech, 16 kHz, brought to 48 kHz mono s16."""
    with wave.open(os.path.join(ROOT, "examples", "hello.wav")) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    t = np.arange(0, len(pcm) * RATE // rate) * rate / RATE
    return np.interp(t, np.arange(len(pcm)), pcm).astype("<i2")


class Speech(MediaStreamTrack):
    """An output track as the seed has one: recv() gives the next 20 ms."""

    kind = "audio"

    def __init__(self, pcm):
        super().__init__()
        self.pcm = pcm
        self.pos = 0
        self.start = None
        self.ts = 0

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        else:
            self.ts += PACKET
            wait = self.start + self.ts / RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        if self.pos + PACKET > len(self.pcm):
            self.pos = 0
        chunk = self.pcm[self.pos : self.pos + PACKET]
        self.pos += PACKET
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.ts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


async def packets_sent(pcs):
    n = 0
    for pc in pcs:
        for s in (await pc.getStats()).values():
            if s.type == "outbound-rtp":
                n += s.packetsSent
    return n


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--receiver", default=os.path.join(ROOT, "target", "release", "call-cost"))
    a = ap.parse_args()
    pcm = speech()
    rx = subprocess.Popen(
        [a.receiver, "receive", "--calls", str(a.calls)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    pcs = []
    connected = []
    for _ in range(a.calls):
        offer = json.loads(rx.stdout.readline())
        pc = RTCPeerConnection()
        done = asyncio.Event()

        @pc.on("connectionstatechange")
        def changed(pc=pc, done=done):
            if pc.connectionState == "connected":
                done.set()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        for t in pc.getTransceivers():
            if t.kind == "audio":
                t.sender.replaceTrack(Speech(pcm))
                t.direction = "sendrecv"
        await pc.setLocalDescription(await pc.createAnswer())
        rx.stdin.write(json.dumps(pc.localDescription.sdp) + "\n")
        rx.stdin.flush()
        pcs.append(pc)
        connected.append(done)
    await asyncio.wait_for(asyncio.gather(*(d.wait() for d in connected)), 30)
    await asyncio.sleep(2)
    sent0 = await packets_sent(pcs)
    t0 = os.times()
    wall = time.time()
    await asyncio.sleep(a.seconds)
    t1 = os.times()
    sent1 = await packets_sent(pcs)
    elapsed = time.time() - wall
    cpu = (t1.user - t0.user) + (t1.system - t0.system)
    packets = sent1 - sent0
    print(
        json.dumps(
            {
                "stack": "aiortc " + __import__("aiortc").__version__,
                "calls": a.calls,
                "seconds": elapsed,
                "packets": packets,
                "packets_expected": int(elapsed * 50 * a.calls),
                "cpu_per_packet_us": cpu / max(packets, 1) * 1e6,
                "cpu_cores_used": cpu / elapsed,
            }
        )
    )
    for pc in pcs:
        await pc.close()
    rx.stdin.close()
    rx.wait()


if __name__ == "__main__":
    asyncio.run(main())
