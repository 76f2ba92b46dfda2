"""Frames per second the UDP ingest reassembles with zero loss when the sender is paced.

Figure: our UdpIngest (receiver/udp.py) on one port, handing frames to a FrameBuffer that a consumer
thread drains (the forwarder's place; the master is left out so only ingest is measured). A sender
process sends one 48 KB 640x480 JPEG per frame through UdpTransport (encode_frame datagrams of 1,400
payload bytes) at a paced rate; rates step up until a step loses a frame or the sender cannot keep
the pace. Loss = frames sent - frames delivered. A last, unpaced step shows the ceiling.

Signing, same run: one more unpaced step with a keyed ingest and a signing sender (HMAC-SHA256
trailer, docs/PROTOCOL.md), next to the unsigned unpaced step, and the in-process cost per datagram
of FrameAssembler.add (decode + CRC, + MAC check) and of encode_frame, signed and unsigned.

Baseline, same run: stock imagezmq REQ/REP (ImageSender.send_jpg -> ImageHub.recv_jpg + send_reply)
of the same JPEG bytes, as fast as it goes; REQ/REP cannot lose, so its rate is its zero-loss rate.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import random
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib  # noqa: E402
from cluster.local import free_udp_ports  # noqa: E402
from common.protocol import DEFAULT_CHUNK_BYTES, chunk_count_for, encode_frame  # noqa: E402
from common.reassembly import FrameAssembler  # noqa: E402
from receiver.buffer import FrameBuffer  # noqa: E402
from receiver.udp import DEFAULT_RCVBUF_BYTES, UdpIngest  # noqa: E402
from sender.transport import UdpTransport  # noqa: E402

log = logging.getLogger("bench.receiver")

FULL_RATES = (250, 500, 1000, 1500, 2000, 3000, 4000, 6000)
QUICK_RATES = (250, 1000, 2000, 4000)
PACE_TOLERANCE = 0.95  # a sender below this share of its rate is sender-bound
SETTLE_S = 0.3  # delivery is over when nothing new arrived for this long after the sender stopped
SETTLE_MAX_S = 3.0
HUB_POLL_MS = 3000
BENCH_KEY = bytes(range(32))


# ----- sender processes -------------------------------------------------------------------------------


def _udp_sender(port: int, jpeg: bytes, fps: float, seconds: float, chunk: int, out: Any,
                key: bytes | None = None) -> None:
    """Send frames paced at `fps` (0: as fast as possible) for `seconds`; report what left."""
    transport = UdpTransport("127.0.0.1", port, stream_id=random.getrandbits(32), chunk_bytes=chunk, key=key)
    period = 1.0 / fps if fps else 0.0
    sent = late = 0
    start = next_at = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if period:
            if next_at > now:
                time.sleep(next_at - now)
            elif now - next_at > period:  # fell behind: do not burst to catch up (as the publisher does)
                late += 1
                next_at = now
            next_at += period
        transport.send(jpeg, seq=sent, capture_ns=time.time_ns())
        sent += 1
    elapsed = time.monotonic() - start
    transport.close()
    out.put({"sent": sent, "seconds": elapsed, "late": late, **dict(transport.counters)})


def _zmq_sender(port: int, jpeg: bytes, seconds: float, out: Any) -> None:
    import imagezmq

    sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        sender.send_jpg("bench-camera", jpeg)
        sent += 1
    elapsed = time.monotonic() - start
    sender.send_jpg("__end__", b"\xff\xd9")
    sender.close()
    out.put({"sent": sent, "seconds": elapsed})


# ----- our ingest -----------------------------------------------------------------------------------


class Sink:
    """The consumer thread: drains the FrameBuffer and counts what it gets."""

    def __init__(self, buffer: FrameBuffer, expected_bytes: int) -> None:
        self.buffer = buffer
        self.expected_bytes = expected_bytes
        self.delivered = 0
        self.wrong_size = 0
        self.last_at = time.monotonic()
        self.latencies_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="sink")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.buffer.wake()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def run(self) -> None:
        while not self._stop.is_set():
            for f in self.buffer.take(64, 0.05):
                self.delivered += 1
                self.wrong_size += len(f.data) != self.expected_bytes
                self.latencies_ms.append((f.received_ns - f.capture_ns) / 1e6)
                self.last_at = time.monotonic()


def _kernel_drops(port: int) -> int:
    """The kernel's drop count for our UDP socket (last column of /proc/net/udp), 0 if unknown."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    for line in lines:
        cols = line.split()
        if len(cols) > 12 and int(cols[1].split(":")[1], 16) == port:
            return int(cols[-1])
    return 0


def _settle(sink: Sink) -> None:
    deadline = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() < deadline and time.monotonic() - sink.last_at < SETTLE_S:
        time.sleep(0.05)


def run_step(ingest: UdpIngest, sink: Sink, port: int, jpeg: bytes, fps: float, seconds: float,
             chunk: int, key: bytes | None = None) -> dict[str, Any]:
    """One rate step with a fresh sender process; loss counted from counters' deltas."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    asm = ingest.assemblers[port]
    before, delivered0, kdrops0 = Counter(asm.counters), sink.delivered, _kernel_drops(port)
    lat0 = len(sink.latencies_ms)
    proc = ctx.Process(target=_udp_sender, args=(port, jpeg, fps, seconds, chunk, out, key),
                       name=f"udp-sender-{fps}")
    proc.start()
    meter = benchlib.CpuMeter([os.getpid(), proc.pid])
    meter.start()
    try:
        sent = out.get(timeout=seconds + 15.0)
        cores = meter.stop()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
    sink.last_at = time.monotonic()
    _settle(sink)
    delivered = sink.delivered - delivered0
    delta = Counter(asm.counters)
    delta.subtract(before)
    achieved = sent["sent"] / sent["seconds"]
    step = {"target_fps": fps or "unpaced", "sent": sent["sent"], "sent_fps": round(achieved, 1),
            "delivered": delivered, "delivered_fps": round(delivered / sent["seconds"], 1),
            "lost": sent["sent"] - delivered,
            "frames_incomplete": delta["frames_incomplete"], "late_datagrams": delta["late"],
            "malformed": sum(delta[k] for k in ("bad_checksum", "bad_length", "corrupt", "inconsistent")),
            "refused_auth": sum(delta[k] for k in ("dropped_unsigned", "dropped_forged", "dropped_replayed")),
            "kernel_drops": _kernel_drops(port) - kdrops0, "send_errors": sent.get("send_errors", 0),
            "sender_late": sent["late"],
            "sender_bound": bool(fps) and achieved < PACE_TOLERANCE * fps,
            "reassembly": benchlib.latency_summary(sink.latencies_ms[lat0:]), "cpu_cores": cores}
    log.info("step %s fps: sent %d (%.0f/s), delivered %d, lost %d, kernel drops %d%s; other processes "
             "used %.2f cores", fps or "max", step["sent"], achieved, delivered, step["lost"], step["kernel_drops"],
             " (sender-bound)" if step["sender_bound"] else "", cores["other_cores"])
    return step


def measure_ours(jpeg: bytes, rates: tuple[int, ...], seconds: float, unpaced_s: float,
                 chunk: int) -> dict[str, Any]:
    """Step the paced rate up until a step loses frames (or the sender cannot pace); then unpaced."""
    [port] = free_udp_ports(1)
    buffer = FrameBuffer(per_port=100_000)  # never the bottleneck: the sink drains it
    ingest = UdpIngest("127.0.0.1", [port], {port: "person"}, buffer)
    sink = Sink(buffer, len(jpeg))
    rcvbuf = ingest.sockets[port].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    ingest.start()
    sink.start()
    steps: list[dict[str, Any]] = []
    try:
        for fps in rates:
            step = run_step(ingest, sink, port, jpeg, fps, seconds, chunk)
            steps.append(step)
            if step["lost"] or _sender_stalled(steps):
                break
        unpaced = run_step(ingest, sink, port, jpeg, 0, unpaced_s, chunk)
    finally:
        ingest.stop()
        ingest.join(5)
        sink.stop()
        sink.join(5)
    clean = [s for s in steps if not s["lost"]]  # a sender-bound step still paced its frames
    best = max(clean, key=lambda s: s["delivered_fps"], default=None)
    return {"zero_loss_fps": best["delivered_fps"] if best else 0.0,
            "zero_loss_target_fps": best["target_fps"] if best else 0,
            "stopped_by": _stopped_by(steps),
            "steps": steps, "unpaced": unpaced, "rcvbuf_bytes": rcvbuf, "buffer_dropped": int(buffer.dropped[port]),
            "wrong_size_frames": sink.wrong_size}


def measure_signed_unpaced(jpeg: bytes, seconds: float, chunk: int) -> dict[str, Any]:
    """One unpaced step through a keyed ingest from a signing sender (compare with ours["unpaced"])."""
    [port] = free_udp_ports(1)
    buffer = FrameBuffer(per_port=100_000)
    ingest = UdpIngest("127.0.0.1", [port], {port: "person"}, buffer, key=BENCH_KEY)
    sink = Sink(buffer, len(jpeg))
    ingest.start()
    sink.start()
    try:
        return run_step(ingest, sink, port, jpeg, 0, seconds, chunk, key=BENCH_KEY)
    finally:
        ingest.stop()
        ingest.join(5)
        sink.stop()
        sink.join(5)


def per_datagram_cost(jpeg: bytes, chunk: int, frames: int = 300) -> dict[str, Any]:
    """Microseconds per datagram to encode and to reassemble, unsigned and signed, in this process."""
    out: dict[str, Any] = {}
    for label, key in (("unsigned", None), ("signed", BENCH_KEY)):
        t0 = time.perf_counter()
        grams = [g for seq in range(frames) for g in encode_frame(jpeg, stream_id=1, seq=seq, capture_ns=seq,
                                                                   chunk_bytes=chunk, key=key)]
        encode_s = time.perf_counter() - t0
        asm = FrameAssembler(key=key)
        t0 = time.perf_counter()
        done = sum(asm.add(g, ("127.0.0.1", 1), 0.0) is not None for g in grams)
        add_s = time.perf_counter() - t0
        assert done == frames, f"{label}: {done} of {frames} frames reassembled"
        out[label] = {"encode_us": round(encode_s / len(grams) * 1e6, 2),
                      "reassemble_us": round(add_s / len(grams) * 1e6, 2), "datagrams": len(grams)}
    out["reassemble_overhead"] = round(out["signed"]["reassemble_us"] / out["unsigned"]["reassemble_us"], 2)
    log.info("per datagram: reassemble %.2f us unsigned, %.2f us signed; encode %.2f / %.2f us",
             out["unsigned"]["reassemble_us"], out["signed"]["reassemble_us"], out["unsigned"]["encode_us"],
             out["signed"]["encode_us"])
    return out


def _sender_stalled(steps: list[dict[str, Any]]) -> bool:
    """The sender missed its pace and sent no faster than in the step before: higher steps are moot."""
    last = steps[-1]
    return last["sender_bound"] and (len(steps) < 2 or last["sent_fps"] < 1.05 * steps[-2]["sent_fps"])


def _stopped_by(steps: list[dict[str, Any]]) -> str:
    if not steps:
        return "no step ran"
    last = steps[-1]
    if last["lost"]:
        return f"loss at {last['target_fps']} fps"
    if last["sender_bound"]:
        return f"sender could not pace {last['target_fps']} fps (reached {last['sent_fps']}, no loss)"
    return "highest step reached without loss"


# ----- imagezmq -------------------------------------------------------------------------------------


def measure_imagezmq(jpeg: bytes, seconds: float) -> dict[str, Any]:
    """Stock imagezmq REQ/REP: hub here, sender in its own process, as fast as it goes."""
    import imagezmq
    import zmq

    port = benchlib.free_tcp_port()
    hub = imagezmq.ImageHub(open_port=f"tcp://127.0.0.1:{port}")
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_zmq_sender, args=(port, jpeg, seconds, out), name="zmq-sender")
    proc.start()
    meter = benchlib.CpuMeter([os.getpid(), proc.pid])
    meter.start()
    received, first, last = 0, 0.0, 0.0
    try:
        while hub.zmq_socket.poll(HUB_POLL_MS, zmq.POLLIN):
            msg, jpg = hub.recv_jpg()
            hub.send_reply(b"OK")
            if msg == "__end__":
                break
            last = time.monotonic()
            first = first or last
            received += 1
        sent = out.get(timeout=15.0)
        cores = meter.stop()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
        hub.close()
    fps = (received - 1) / (last - first) if received > 1 and last > first else 0.0
    log.info("imagezmq REQ/REP: %d frames at %.0f/s; other processes used %.2f cores", received, fps,
             cores["other_cores"])
    return {"frames_per_s": round(fps, 1), "frames": received, "sent": sent["sent"], "lost": sent["sent"] - received,
            "seconds": round(last - first, 2), "cpu_cores": cores}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer, shorter steps")
    p.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES, help="payload bytes per datagram")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    benchlib.setup_logging(args.log_level)
    rates, step_s, zmq_s = (QUICK_RATES, 1.5, 2.0) if args.quick else (FULL_RATES, 3.0, 3.0)
    machine = benchlib.machine()
    jpeg, jpeg_info = benchlib.test_jpeg()
    zmq_runs = [measure_imagezmq(jpeg, zmq_s)]
    ours = measure_ours(jpeg, rates, step_s, step_s, args.chunk_bytes)
    signing = {"unsigned_unpaced_fps": ours["unpaced"]["delivered_fps"],
               "signed_unpaced": measure_signed_unpaced(jpeg, step_s, args.chunk_bytes),
               "per_datagram": per_datagram_cost(jpeg, args.chunk_bytes)}
    signing["signed_unpaced_fps"] = signing["signed_unpaced"]["delivered_fps"]
    if not args.quick:
        zmq_runs.append(measure_imagezmq(jpeg, zmq_s))  # before and after ours: the best one counts
    best_zmq = max(zmq_runs, key=lambda r: r["frames_per_s"])
    benchlib.emit({
        "bench": "receiver_ingest",
        "figure": ours,
        "signing": signing,
        "baseline": {**best_zmq, "runs_frames_per_s": [r["frames_per_s"] for r in zmq_runs],
                     "design": "stock imagezmq 1.x ImageSender/ImageHub REQ/REP, send_jpg, unpaced"},
        "ratio": benchlib.ratio(ours["zero_loss_fps"], best_zmq["frames_per_s"]),
        "goal": {"ratio": 1.0, "met": (benchlib.ratio(ours["zero_loss_fps"], best_zmq["frames_per_s"]) or 0) >= 1.0},
        "machine": benchlib.finish_machine(machine),
        "params": {"quick": args.quick, "rates_fps": list(rates), "step_s": step_s, "imagezmq_s": zmq_s,
                   "chunk_bytes": args.chunk_bytes,
                   "datagrams_per_frame": chunk_count_for(len(jpeg), args.chunk_bytes),
                   "rcvbuf_requested_bytes": DEFAULT_RCVBUF_BYTES, "payload": jpeg_info,
                   "figure_is": "highest paced step delivered with zero loss (frames/s delivered)",
                   "consumer": "UdpIngest -> FrameBuffer -> a draining thread (no master)"},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
