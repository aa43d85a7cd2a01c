"""Write docs/bad_inputs.md: every bad input of tests/bad_inputs.py with the message it really gets."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bad_inputs import CASES, FILE_CASES  # noqa: E402

from sparsecl import cli  # noqa: E402


def main() -> None:
    rows = ["# Bad input and the message it gets", "",
            "Every case is a test (`tests/test_bad_input.py`); this page is written by",
            "`python scripts/bad_input_table.py` from the same list. Exit code 2 and one line on stderr each.", "",
            "| what is wrong | command | message |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SPARSECL_DATA"] = f"{tmp}/nodata"
        os.environ["XDG_CACHE_HOME"] = f"{tmp}/cache"
        for what, args, _ in CASES:
            err = io.StringIO()
            full = [*args, "--out", f"{tmp}/run"] if args[0] == "train" and "--resume" not in args else args
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = cli.main(full)
            msg = err.getvalue().strip().replace("|", "\\|").replace(tmp, "$TMP")
            rows.append(f"| {what} | `sparsecl {' '.join(args)}` | {msg} (exit {rc}) |")
        rows += ["", "## Bad files", "",
                 "Each file is built by its case in `tests/bad_inputs.py` (FILE_CASES) under `$TMP`: a hostile or",
                 "damaged run folder, export or dataset copy. None runs code, loses data or prints a traceback.", "",
                 "| what is wrong | command | message |", "|---|---|---|"]
        for what, build, _ in FILE_CASES:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                args = build(tmp)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = cli.main(args)
            msg = err.getvalue().strip().replace("|", "\\|").replace(tmp, "$TMP")
            msg = re.sub(r"pid \d+ on [^;]+", "pid PID on HOST", msg)  # the same page on every machine
            shown = " ".join(args).replace(tmp, "$TMP")
            rows.append(f"| {what} | `sparsecl {shown}` | {msg} (exit {rc}) |")
    rows += ["", "Also tested: a truncated data file is named in the error; a NaN/Inf loss stops the run naming the",
             "step and the first non-finite tensor, leaving the last checkpoint intact; a full disk while",
             "checkpointing keeps the previous checkpoint; a damaged newest checkpoint falls back to the previous",
             "one with a note; a stale lock of a dead process is taken over with a note; a SIGKILL anywhere,",
             "including before the first task ends (time-based checkpoints), resumes bit-identically; 240 mutated",
             "exports (tests/test_fuzz_export.py) each end in exit 0 or one line with exit 2."]
    (ROOT / "docs" / "bad_inputs.md").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
