"""Seeded mutation of byte strings and a time-bounded case runner for the fuzz tests.

Plain NumPy randomness (no fuzzing library): every run with the same seed
tries the same inputs, so a failure is reproducible from its case number.
`POLYNET_FUZZ_SECONDS` (default 3) bounds each target's time; every case is
bounded too: a case that runs longer than `case_seconds` ends the process
with a traceback of where it hung (faulthandler), which fails CI.
"""

import faulthandler
import os
import struct
import time

import numpy as np

SECONDS = float(os.environ.get("POLYNET_FUZZ_SECONDS", "3"))
SEED = int(os.environ.get("POLYNET_FUZZ_SEED", "20170721"))


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random mutation of `data`: bit flips, truncation, random bytes, a
    splice, a duplicated chunk, or header bytes set to extremes."""
    data = bytearray(data)
    kind = int(rng.integers(7))
    if kind == 0 and data:  # a few bit flips
        for _ in range(int(rng.integers(1, 9))):
            position = int(rng.integers(len(data)))
            data[position] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncation
        data = data[:int(rng.integers(len(data) + 1))]
    elif kind == 2:  # random bytes of random length
        data = bytearray(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8))
    elif kind == 3 and data:  # random chunk inserted
        position = int(rng.integers(len(data) + 1))
        chunk = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        data[position:position] = chunk
    elif kind == 4 and data:  # a chunk repeated (lengths that disagree with the data)
        start = int(rng.integers(len(data)))
        end = min(len(data), start + int(rng.integers(1, 128)))
        data[end:end] = data[start:end] * int(rng.integers(1, 4))
    elif kind == 5 and data:  # header bytes set to 0x00 / 0xff
        for _ in range(int(rng.integers(1, 5))):
            position = int(rng.integers(min(len(data), 64)))
            data[position] = int(rng.choice([0, 0xFF, 0x7F, 0x80]))
    elif data:  # 16- or 32-bit fields near the start set to extreme values
        position = int(rng.integers(max(1, min(len(data), 64) - 4)))
        value = int(rng.choice([0, 1, 0xFFFF, 0x7FFF, 0xFFFFFFFF, 0x7FFFFFFF]))
        fmt = str(rng.choice(["<H", ">H", "<I", ">I"]))
        packed = struct.pack(fmt, value & (0xFFFF if fmt.endswith("H") else 0xFFFFFFFF))
        data[position:position + len(packed)] = packed
    return bytes(data)


def run_cases(make_case, check, seconds=SECONDS, case_seconds=60.0, min_cases=1,
              max_cases=None):
    """Runs `check(make_case(rng, number))` for up to `seconds`; returns the case count.

    Args:
      make_case: (rng, case number) -> input.
      check: input -> None; raises AssertionError for an unacceptable outcome.
      seconds: time budget of the target.
      case_seconds: any single case running longer ends the process (a hang).
      min_cases: cases run even past the budget.
      max_cases: stop after this many.
    """
    rng = np.random.default_rng(SEED)
    start = time.monotonic()
    count = 0
    while count < min_cases or time.monotonic() - start < seconds:
        if max_cases is not None and count >= max_cases:
            break
        case = make_case(rng, count)
        faulthandler.dump_traceback_later(case_seconds, exit=True)
        try:
            check(case)
        except AssertionError as error:
            raise AssertionError(f"fuzz case {count} (seed {SEED}): {error}") from error
        finally:
            faulthandler.cancel_dump_traceback_later()
        count += 1
    return count
