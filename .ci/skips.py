"""CI's skip audit: reads pytest's JUnit XML, prints every skipped test with its reason, and fails
(exit 1) when one is not in .ci/allowed_skips (fnmatch patterns of test ids, one per line, each
with the reason it may skip on CI's machine). A skip nobody sees is a test that does not run."""

from __future__ import annotations

import fnmatch
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ALLOWED = Path(__file__).resolve().parent / "allowed_skips"


def allowed_patterns() -> list[str]:
    lines = ALLOWED.read_text(encoding="utf-8").splitlines() if ALLOWED.is_file() else []
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def skipped(junit: Path) -> list[tuple[str, str]]:
    """(test id, reason) of each skipped test case."""
    found = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        skip = case.find("skipped")
        if skip is None:
            continue
        module = case.get("classname", "").replace(".", "/")
        found.append((f"{module}.py::{case.get('name')}", skip.get("message", "")))
    return found


def main() -> int:
    junit = Path(sys.argv[1])
    patterns = allowed_patterns()
    cases = skipped(junit)
    unexpected = [(test, why) for test, why in cases if not any(fnmatch.fnmatch(test, p) for p in patterns)]
    print(f"CI: {len(cases)} test(s) skipped, {len(unexpected)} not in .ci/allowed_skips")
    for test, why in cases:
        print(f"  {'UNEXPECTED ' if (test, why) in unexpected else ''}skip {test}: {why}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
