"""The loop a pyucwa-style agent runs per event-channel response, for comparison with ours.

`cargo bench --bench pipeline` runs it (when `python3` is on PATH) in turns with its own
measurement, on the same batch bodies, and prints both rates and their ratio.

    python3 benches/python_loop.py BODIES_FILE BATCHES [--cpu]

BODIES_FILE holds one batch body (compact JSON) per line; the loop cycles through them for
BATCHES responses: json.loads of the body, then each event dispatched by `link.rel` through a
dict to a Python function. Nothing else: no journal, no sandbox. It prints the events per
second of wall-clock time and, with --cpu, per second of CPU time on the same line (the
machine may be busy with other work: CPU time tells what the loop itself costs).
"""

import json
import sys
import time

handled = 0


def on_audio_video_session(event):
    # As trivial as the bench's Lua handler: read one field.
    global handled
    if event["type"] == "bench":
        handled += 1


HANDLERS = {"audioVideoSession": on_audio_video_session}


def main():
    path, batches = sys.argv[1], int(sys.argv[2])
    with open(path, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    loads, handlers = json.loads, HANDLERS
    events = 0
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(batches):
        batch = loads(bodies[i % len(bodies)])
        for sender in batch["sender"]:
            for event in sender["events"]:
                handler = handlers.get(event["link"]["rel"])
                if handler is not None:
                    handler(event)
                events += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if "--cpu" in sys.argv[3:]:
        print(f"{events / elapsed:.0f} {events / cpu:.0f}")
    else:
        print(f"{events / elapsed:.0f}")


if __name__ == "__main__":
    main()
