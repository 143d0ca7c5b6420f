"""Reading math answers: boxed answers, symbolic equality, majority vote.

The task (:mod:`cope.tasks.math`) and the program-of-thought executor
(:mod:`cope.tasks.math_pot`) both read answers here, so neither imports the
other's dependants. The confidence signal for math is consensus: several executor samples are
reduced to their final answers, equivalent answers are grouped, and the share
of samples in the largest group is the stage's confidence. Grouping needs an
equality that sees through notation ("1/2" vs "\\frac{1}{2}" vs "0.5"), so
equality goes through math-verify. math-verify pulls in sympy, which takes
seconds to import, so it is imported only when two answers actually need a
symbolic comparison; ``import cope`` stays light.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from functools import lru_cache
from typing import Any, Sequence

from ..stopping import leader
from .base import Assessment

__all__ = ["answers_equal", "cluster_answers", "extract_answer", "vote"]

# Seconds math-verify may spend parsing one answer or comparing one pair.
# Votes compare many pairs, so this is kept short; a pair that runs out of
# time counts as unequal.
_TIMEOUT_S = 3

# A decimal equals an exact value only if they agree to this many decimal
# places. math-verify's default (6) makes "1.5707963" equal "\pi/2"; a
# truncated decimal is an approximation, not the same answer, so the bar is
# set well above what a model writes by hand while still absorbing float noise
# such as 0.30000000000000004.
_FLOAT_ROUNDING = 10

# ---------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_GSM_RE = re.compile(r"####")
_PHRASE_RE = re.compile(r"\banswer\s*(?:is\s*:?|:|=)", re.IGNORECASE)
# A number as written in prose: thousands commas, decimals, simple fractions.
# A minus sign counts only when it cannot be a binary minus ("5-3").
_NUMBER_RE = re.compile(
    r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)"
)
# A number that opens a phrase answer and is followed by a word break.
_LEADING_NUMBER_RE = re.compile(
    r"(?:\\?\$)?-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)(?:\\?%)?"
    r"(?=[\s.,;:!?)]|$)"
)
_MATH_SPANS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _braced(text: str, start: int) -> str | None:
    """Content of the ``{...}`` group opening at ``text[start]``, or None if unclosed."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped character (\{ or \}) is not grouping
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def _last_box(text: str) -> str | None:
    """Content of the last complete ``\\boxed``/``\\fbox`` in ``text``.

    A box cut off by the token limit is skipped in favour of an earlier
    complete one, because a truncated box holds no usable answer.
    """
    for m in reversed(list(_BOX_RE.finditer(text))):
        pos = m.end()
        if pos < len(text) and text[pos] == "{":
            content = _braced(text, pos)
        else:
            bare = re.match(r"[^\s$]+", text[pos:])
            content = bare.group(0) if bare else None
        if content is not None:
            content = _clean(content)
            if content:
                return content
    return None


def _clean(ans: str) -> str:
    """Strip what surrounds an answer but is not part of it: space, math delimiters, full stops."""
    prev = None
    ans = ans.strip()
    while ans != prev:
        prev = ans
        ans = ans.strip().strip("*").strip()
        ans = re.sub(r"\.+$", "", ans)  # a number never ends in its decimal point
        for left, right in _MATH_SPANS:
            if len(ans) > len(left) + len(right) and ans.startswith(left) and ans.endswith(right):
                ans = ans[len(left) : len(ans) - len(right)]
                break
        if ans.endswith("$") and not ans.endswith("\\$") and ans.count("$") == 1:
            ans = ans[:-1]  # "...is 42$": a dangling closing delimiter
    return ans.strip()


def _phrase_answer(tail: str) -> str | None:
    """The answer inside the rest of a line that follows "answer is"/"answer:".

    A box here was cut off by the token limit (a complete one would have won
    earlier), so the phrase holds no usable answer.
    """
    tail = tail.strip().lstrip("*").strip()
    if _BOX_RE.search(tail):
        return None
    for left, right in _MATH_SPANS:
        if tail.startswith(left):
            end = tail.find(right, len(left))
            if end > len(left):
                return _clean(tail[len(left) : end]) or None
    num = _LEADING_NUMBER_RE.match(tail)
    if num:
        return _clean(num.group(0)) or None
    # Otherwise the answer runs to the end of the sentence.
    sentence = re.split(r"\.(?:\s|$)", tail, maxsplit=1)[0]
    ans = _clean(sentence)
    if not ans:
        return None
    # "the answer is to multiply both sides" is prose, not an answer: keep
    # only short phrases or ones that look like mathematics.
    if re.search(r"[\d\\^=]", ans) or len(ans.split()) <= 3:
        return ans
    return None


def _rest_of_line(text: str, start: int) -> str:
    end = text.find("\n", start)
    return text[start:] if end < 0 else text[start:end]


def _after_last_marker(text: str) -> str | None:
    """The answer after the last "answer is"/"answer:"/"answer =" that is followed by one.

    Markers are searched independently (not as consuming matches) so that
    "Final Answer: The final answer is $5$" reaches the inner phrase.
    """
    for m in reversed(list(_PHRASE_RE.finditer(text))):
        ans = _phrase_answer(_rest_of_line(text, m.end()))
        if ans:
            return ans
    return None


def extract_answer(text: str) -> str | None:
    """The final answer written in a completion, or None if there is none.

    Models are asked for ``\\boxed{}``, so the last box wins. Small models do
    not always comply, so GSM8K's "#### X", an "answer is X" phrase and,
    last, the final number of the text's last line (not a list item's index)
    are accepted in that order.
    """
    if not text or not text.strip():
        return None
    boxed = _last_box(text)
    if boxed:
        return boxed
    for m in reversed(list(_GSM_RE.finditer(text))):
        tail = _rest_of_line(text, m.end())
        ans = _after_last_marker(tail) or _phrase_answer(tail) or _clean(tail)
        if ans:
            return ans
    ans = _after_last_marker(text)
    if ans:
        return ans
    return _final_number(text)


# A list item's index ("5.", "3)", "Step 2:", "- 4."), not a number the text concludes with.
_LIST_INDEX_RE = re.compile(r"^\s*(?:[-*\u2022]\s+)?(?:(?:step|item)\s*)?\(?\d+[.):]\s+", re.I)
# A line that only closes a display or a block ("\]", "$$", "\end{align}", "```").
_CLOSER_RE = re.compile(r"^\s*(?:\\\]|\$\$|\\end\{[a-z*]+\}|\\\)|```|[})\]])\s*$")


def _final_number(text: str) -> str | None:
    """The last number of the text's final line, the answer-shaped ending of an unboxed answer.

    A number elsewhere (an intermediate result, a list item's index, a
    sample cut off mid-sentence) is no answer: the sample is a missing vote
    rather than a wrong one that can win a small majority.
    """
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    while lines and _CLOSER_RE.match(lines[-1]):
        lines.pop()
    if not lines:
        return None
    last = _LIST_INDEX_RE.sub("", lines[-1])
    matches = list(_NUMBER_RE.finditer(last))
    if not matches:
        return None
    # ending the line: at most a unit or a few words after it ("19 dollars in all."), not a sentence
    if len(re.findall(r"[A-Za-z]+", last[matches[-1].end():])) > 3:
        return None
    return matches[-1].group(0)


# ---------------------------------------------------------------------------
# Equality
# ---------------------------------------------------------------------------

# \text{18 dollars}: a number written as text; \text{no} stays as it is.
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mbox|textrm)\{(\s*-?\d[^{}]*)\}$")
_WORD_RE = re.compile(r"^[A-Za-z]+(?: [A-Za-z]+)*$")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
# A number followed by unit words ("18 dollars"); sympy would read the words
# as products of single-letter symbols.
_UNITS_RE = re.compile(r"^(-?[\d.,/]*\d)\s+((?:[A-Za-z]{2,}\s*)+)$")


def _normalize(ans: str) -> str:
    """A canonical spelling of an answer, so trivially different strings match without sympy.

    Decisions made here, not by math-verify:
    * A percent sign is dropped: "50%" equals "50" (benchmarks write the
      number of percent without the sign) and so does not equal "0.5".
      math-verify alone would make "50%" equal both, which is not transitive
      and would let one answer bridge two different vote clusters.
    * A leading currency sign is dropped: "$18" equals "18".
    * Thousands separators in a plain number are dropped: "1,000" equals
      "1000"; "12,5" stays a list of two numbers.
    * Unit words after a number are dropped: "18 dollars" equals "18".
    """
    s = _clean(ans)
    s = s.replace("\\!", "").replace("{,}", ",").replace("\\,", " ").replace("\\;", " ")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)  # degrees
    s = re.sub(r"\\?%$", "", s.rstrip()).rstrip()
    s = re.sub(r"^\\?\$\s*", "", s)  # currency
    m = _TEXT_WRAP_RE.match(s)
    if m:
        s = m.group(1).strip()
    s = re.sub(r"\s+", " ", s).strip()
    m = _UNITS_RE.match(s)
    if m and m.group(2).strip().lower() != "pi":
        s = m.group(1)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    return s


_log_filter_installed = False


class _DropTimeoutDisabledNotice(logging.Filter):
    """Hide math-verify's one-off notice that its timeout is off.

    Off-main-thread calls must run without math-verify's signal based
    timeout; that is a deliberate choice here, not something a user of the
    package can act on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


def _math_verify() -> Any:
    """Import math-verify on first use (it pulls in sympy, which is slow to import)."""
    global _log_filter_installed
    import math_verify

    if not _log_filter_installed:
        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).addFilter(_DropTimeoutDisabledNotice())
        _log_filter_installed = True
    return math_verify


def _timeout() -> int | None:
    """math-verify's timeout for this thread.

    Its timeout is built on signal.alarm, which Python only allows in the
    main thread; elsewhere it raises. Passing None turns the alarm off, so
    comparisons from worker threads run unbounded rather than fail.
    """
    return _TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=4096)
def _parse(norm: str) -> tuple[Any, ...]:
    """math-verify's parse of one normalized answer (sympy objects and/or a string)."""
    mv = _math_verify()
    from math_verify.errors import TimeoutException

    try:
        parsed = mv.parse("\\boxed{" + norm + "}", parsing_timeout=_timeout())
        if not parsed:
            parsed = mv.parse("$" + norm + "$", parsing_timeout=_timeout())
    except (Exception, TimeoutException):
        return ()
    return tuple(parsed)


# Answers sympy would evaluate into astronomically large integers: a power
# whose exponent holds another power (9^{9^{9^9}}), a factorial of a large
# number or of a power, or a power with a seven-digit exponent. One such
# evaluation is a single C call that holds the GIL for minutes or forever;
# math-verify's signal based timeout cannot interrupt it, so a reply like
# "\boxed{9^{9^{9^{9}}}}" would freeze a whole server. They compare as text.
_COSTLY_RE = re.compile(
    r"\^\s*\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\^"  # ^{... ^ ...}: a tower
    r"|\^\s*\(?[\d.]+\)?\s*\^"  # 9^9^9
    r"|\^\s*\{?\s*\d{7,}"  # 10^{1000000}
    r"|(?:\d{5,}|[})])\s*!"  # 100000!, (10^{10})!, {..}!
)


def _too_costly(norm: str) -> bool:
    """Whether sympy might need unbounded time on ``norm`` (see _COSTLY_RE)."""
    return len(norm) > 400 or bool(_COSTLY_RE.search(norm))


@lru_cache(maxsize=16384)
def _equivalent(a: str, b: str) -> bool:
    """Symbolic equality of two normalized answers (callers pass them sorted, so the cache is symmetric)."""
    if _too_costly(a) or _too_costly(b):
        return False
    pa, pb = _parse(a), _parse(b)
    if not pa or not pb:
        return False
    mv = _math_verify()
    from math_verify.errors import TimeoutException

    try:
        # math-verify's verify(gold, target) is not symmetric (it follows the
        # gold's form for equations), so either direction counts.
        for gold, target in ((pa, pb), (pb, pa)):
            if mv.verify(
                list(gold),
                list(target),
                float_rounding=_FLOAT_ROUNDING,
                timeout_seconds=_timeout(),
            ):
                return True
    except (Exception, TimeoutException):
        return False
    return False


def answers_equal(a: str | None, b: str | None) -> bool:
    """Whether two extracted answers denote the same value.

    Identical strings are equal without sympy, which is the common case in a
    vote. None (no answer) equals nothing, not even None, so that samples
    without an answer never agree with each other. Never raises: an answer
    math-verify cannot parse equals only an identical string, and so does one
    whose value would be astronomically large (see ``_COSTLY_RE``).
    """
    if a is None or b is None:
        return False
    sa, sb = a.strip(), b.strip()
    if not sa or not sb:
        return False
    if sa == sb:
        return True
    try:
        na, nb = _normalize(sa), _normalize(sb)
    except Exception:
        return False
    if not na or not nb:
        return False
    if na == nb:
        return True
    if _WORD_RE.match(na) and _WORD_RE.match(nb) and max(len(na), len(nb)) > 1:
        # Words ("yes", "odd"): sympy reads "no" as n*o and would make it
        # equal "on", so words compare as words.
        return na.lower() == nb.lower()
    return _equivalent(*sorted((na, nb)))


def cluster_answers(answers: Sequence[str | None]) -> list[int | None]:
    """A cluster id per answer: equivalent answers share an id, None stays None.

    Ids follow first appearance (0, 1, ...). Each answer is compared with one
    representative (the first member) per cluster, which keeps the number of
    symbolic comparisons at answers x clusters instead of answers squared.
    """
    reps: list[str] = []
    ids: list[int | None] = []
    for ans in answers:
        if ans is None:
            ids.append(None)
            continue
        for cid, rep in enumerate(reps):
            if answers_equal(rep, ans):
                ids.append(cid)
                break
        else:
            reps.append(ans)
            ids.append(len(reps) - 1)
    return ids


def vote(outputs: Sequence[str], extracted: Sequence[str | None]) -> Assessment:
    """Majority vote over per-sample answers; confidence is the majority's share of all samples.

    Samples without an answer count in the denominator, so a stage where
    most samples failed to answer is not confident. Every way of reading an
    answer (written, or printed by an executed program) votes through here.
    """
    extracted = list(extracted)
    clusters = cluster_answers(extracted)
    sizes = Counter(c for c in clusters if c is not None)
    if not sizes:
        return Assessment(
            answer=None,
            confidence=0.0,
            support=[],
            extracted=extracted,
            output=outputs[0] if outputs else "",  # still show what the model wrote
            info={"clusters": clusters, "votes": {}},
        )
    majority = leader(clusters)[0]  # a tie goes to the cluster drawn first (cope.stopping.leader)
    support = [i for i, c in enumerate(clusters) if c == majority]
    first_member = {c: extracted[clusters.index(c)] for c in sizes}
    votes = {str(first_member[c]): sizes[c] for c in sorted(sizes)}
    return Assessment(
        answer=extracted[support[0]],
        confidence=len(support) / len(outputs),
        support=support,
        extracted=extracted,
        output=outputs[support[0]],
        info={"clusters": clusters, "votes": votes},
    )
