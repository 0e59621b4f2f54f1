"""Root cause of a facade-run failure, from its test id and error message.

Categories name the issue-11 item they belong to; ``inherent: …`` ones are limits of running
a library in another process (docs/limits.md gives the reasons). A failure that no rule
matches is ``unclassified`` — the report lists it so a new cause is never hidden.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

VALUE_KINDS = {"range", "slice", "ellipsis", "OrderedDict", "defaultdict", "deque", "Counter"}
VALUE_KINDS |= {"bytearray", "memoryview", "ZoneInfo", "SimpleNamespace"}

# Failures only the test itself explains: (test id suffix, message pattern, category, reason).
KNOWN: list[tuple[str, str, str, str]] = [
    (
        "AllEqualTests::test_groupby_calls",
        r"No module named 'more_itertools'",
        "inherent: mock.patch of the library's module state",
        "patch() replaces a name in the host; the library's module lives in the worker",
    ),
    (
        "ZipEqualTest::test_deprecation",
        r"not enough values to unpack",
        "inherent: warnings captured in process",
        "the DeprecationWarning is issued in the worker, not in the host's catch_warnings()",
    ),
    (
        "SampleTests::",
        r"Lists differ",
        "inherent: random seed of the host",
        "random.seed() seeds the host's generator; the library draws from the worker's",
    ),
    (
        "LongestCommonPrefixTests::test_prefix_contains_elements_of_the_first_iterable",
        r"is not \[",
        "inherent: object identity across processes",
        "values are copied, so a result is equal to but never `is` the argument it came from",
    ),
    (
        "SequenceViewTests::test_update",
        r"3 != 2",
        "inherent: host container copied at the call",
        "a list sent by value is a copy; the remote view does not see later host mutations",
    ),
    (
        "NumericRangeTests::test_pickle",
        r"cannot be pickled",
        "inherent: pickling a Ref",
        "the object lives in a worker; pickle stays off, so a Ref has no picklable state",
    ),
    (
        "NumericRangeTests::test_hash",
        r"!=",
        "inherent: str hashes randomized per process",
        "the expected hash is computed in the host; str hashes differ per process",
    ),
    (
        "AlwaysReversibleTests::test_regular_reversed",
        r"list_reverseiterator",
        "inherent: type of a worker-made object",
        "compares type() of a worker iterator (a Ref) with the host's list_reverseiterator",
    ),
    (
        "CallbackIterTests::test_",
        r"is private",
        "allowlist: private attribute of a stdlib object",
        "reads ThreadPoolExecutor._shutdown; allow_private is per library",
    ),
    (
        "CallbackIterTests::test_abort",
        r"AbortThread not raised",
        "call model: a host callback ends before its call",
        "the host function run in a worker thread is served while next() waits, to its end",
    ),
    (
        "NumericRangeTests::test_parent_classes",
        r"False is not true",
        "Ref protocol: collections.abc isinstance",
        "isinstance(ref, abc.Sequence) is False although the remote class is a Sequence",
    ),
]
for _suffix in ("NthPermutationTests::test_long", "FactorTests::test_cross_check"):
    KNOWN.append(
        (
            _suffix,
            r"Timeout",
            "slow: thousands of round trips",
            "correct but over the per-test timeout on a loaded box",
        )
    )
for _suffix in ("GroupByTransformTests::", "ConsecutiveGroupsTest::"):
    KNOWN.append(
        (
            _suffix,
            r"Lists differ: \[(\[\]|\(\d+, \[\]\)|\])",
            "3 iterator prefetch / semantics",
            "groupby-style groups come back empty: the outer iterator was prefetched past them",
        )
    )

# Message rules, first match wins: (pattern, category, reason).
RULES: list[tuple[str, str, str]] = [
    (r"Timeout >|CallTimeout|QueueTimeout|worker holding it was stopped", "4 callback deadlock",
     "the call stalls while the worker waits on a callback (thread or re-entrant)"),
    (r"'Ref' object is not an iterator", "3 iterator prefetch / semantics",
     "a Ref to an iterator is not an iterator (next() fails)"),
    (r"RemoteTypeError: builtins\.TypeError: (catching classes|exceptions must derive|"
     r"isinstance\(\) arg 2|issubclass\(\) arg)", "2 classes/functions sent as callbacks",
     "a host class reaches the worker as a callback, not as the worker's own class"),
    (r"Cannot interpret '<snakebridge host callback", "2 classes/functions sent as callbacks",
     "a host class reaches the worker as a callback, not as the worker's own class"),
    (r"^TypeError: (catching classes that do not inherit|assertRaises\(\) arg 1)",
     "5 exception classes in facades", "a facade exception class is not a BaseException"),
]  # fmt: skip

_UNSENDABLE = re.compile(r"cannot send [^:]*: cannot send ([\w.<>]+)")


def _unsendable(kind: str) -> tuple[str, str]:
    name = kind.rsplit(".", 1)[-1]
    if name in VALUE_KINDS:
        return "1a values: stdlib value kinds", f"{kind} cannot be sent"
    if kind.startswith(("builtins.", "itertools.")) and (
        name.endswith("iterator") or name in {"generator", "map", "zip", "filter", "enumerate"}
        or kind.startswith("itertools.")
    ):  # fmt: skip
        return "1b values: host iterators/generators", f"{kind} cannot be sent"
    return "1c values: other host objects", f"{kind} cannot be sent (no host Refs)"


def classify(test_id: str, message: str, text: str = "") -> tuple[str, str]:
    """(category, reason) of one failure."""
    for suffix, pattern, category, reason in KNOWN:
        if f".{suffix}" in test_id and re.search(pattern, message):
            return category, reason
    found = _UNSENDABLE.search(message)
    if found:
        return _unsendable(found.group(1))
    for pattern, category, reason in RULES:
        if re.search(pattern, message, re.MULTILINE):
            return category, reason
    if "Timeout" in text.split("\n", 1)[0]:
        return "4 callback deadlock", "the test ran past its timeout"
    return "unclassified", message.strip().split("\n")[0][:160]


def summarize(failures: list[dict[str, Any]]) -> dict[str, int]:
    """Failure count per category, largest first (ties by name)."""
    counts = Counter(f["category"] for f in failures)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
