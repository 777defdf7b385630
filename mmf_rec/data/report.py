"""Bad-input bookkeeping and atomic output shared by the real-data readers.

Real files arrive with wrong column counts, unparsable numbers, odd bytes,
duplicates and ids that name nothing. Each reader hands every row it drops or
repairs to a ``RowReport``: it counts them per reason, keeps the first few
line numbers, and applies one policy (fail at once, or skip up to a fraction
of the input), so nothing is lost silently and a mostly-broken file stops the
run instead of producing a dataset from its remains. ``atomic_output`` builds
the prepared directory beside its final place and renames it in only when
complete, so an interrupted or failed run leaves nothing behind.
"""

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

from mmf_rec.data.prepared_layout import write_json
from mmf_rec.errors import UserError
from mmf_rec.files import umask

logger = logging.getLogger(__name__)

REPORT_FILE = "report.json"
EXAMPLES = 5  # first line numbers kept per reason
POLICIES = ("skip", "fail")


class DataInputError(UserError, ValueError):
    """The input is missing, malformed beyond the policy, or the config is wrong.

    A user error: command-line tools print it as one line, without a traceback.
    """


@dataclass
class RowReport:
    """Dropped and repaired rows per reason ("<table>.<reason>"), with examples.

    ``policy`` "fail" stops at the first dropped row; "skip" drops rows until
    more than ``max_bad_fraction`` of a table's rows are bad. Repairs (a value
    imputed, clipped or re-decoded) never stop the run; they are reported.
    """

    policy: str = "skip"
    max_bad_fraction: float = 0.01
    dropped: Dict[str, int] = field(default_factory=dict)
    repaired: Dict[str, int] = field(default_factory=dict)
    examples: Dict[str, List[str]] = field(default_factory=dict)
    rows_read: Dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise DataInputError(f"bad_rows.policy: expected one of {list(POLICIES)}, "
                                 f"got {self.policy!r}")
        if not 0.0 <= float(self.max_bad_fraction) <= 1.0:
            raise DataInputError(f"bad_rows.max_bad_fraction: expected a value in [0, 1], "
                                 f"got {self.max_bad_fraction!r}")

    def _note(self, counts: Dict[str, int], reason: str, n: int, where: Any) -> None:
        counts[reason] = counts.get(reason, 0) + int(n)
        kept = self.examples.setdefault(reason, [])
        for w in list(where)[: max(0, EXAMPLES - len(kept))]:
            kept.append(str(w))

    def drop(self, reason: str, n: int = 1, where: Any = (), detail: str = "") -> None:
        """Count ``n`` dropped rows; ``where`` names the first ones (e.g. "u.data:17")."""
        if n <= 0:
            return
        self._note(self.dropped, reason, n, where)
        first = ", ".join(str(w) for w in list(where)[:EXAMPLES])
        message = f"{reason}: {n} rows" + (f" ({detail})" if detail else "") + \
            (f"; first at {first}" if first else "")
        if self.policy == "fail":
            raise DataInputError(f"{message}; bad_rows.policy is 'fail' (use 'skip' to "
                                 "drop such rows and report them)")
        logger.warning("dropping %s", message)

    def repair(self, reason: str, n: int = 1, where: Any = (), detail: str = "") -> None:
        """Count ``n`` values that were fixed up (imputed, clipped, re-decoded)."""
        if n <= 0:
            return
        self._note(self.repaired, reason, n, where)
        logger.info("repaired %s: %d%s", reason, n, f" ({detail})" if detail else "")

    def read(self, table: str, n: int) -> None:
        self.rows_read[table] = self.rows_read.get(table, 0) + int(n)

    def check(self) -> None:
        """Fail when a table lost more than the allowed fraction of its rows."""
        for table, total in self.rows_read.items():
            bad = sum(n for reason, n in self.dropped.items()
                      if reason.split(".")[0] == table)
            if total and bad > self.max_bad_fraction * total:
                reasons = {r: n for r, n in self.dropped.items()
                           if r.split(".")[0] == table}
                first = {r: self.examples.get(r, [])[:3] for r in reasons}
                raise DataInputError(
                    f"{table}: {bad} of {total} rows are bad ({bad / total:.1%}), more "
                    f"than bad_rows.max_bad_fraction={self.max_bad_fraction}: {reasons}; "
                    f"first: {first}. Fix the input or raise the threshold")

    def to_dict(self) -> Dict[str, Any]:
        return {"policy": self.policy, "max_bad_fraction": self.max_bad_fraction,
                "rows_read": dict(self.rows_read), "dropped": dict(self.dropped),
                "repaired": dict(self.repaired), "examples": dict(self.examples)}

    def summary(self) -> str:
        dropped = {k: v for k, v in self.dropped.items() if v}
        repaired = {k: v for k, v in self.repaired.items() if v}
        return f"dropped {dropped or 'none'}, repaired {repaired or 'none'}"


def lines_where(name: str, line_numbers: np.ndarray) -> List[str]:
    """``file:line`` for the first few of ``line_numbers`` (1-based)."""
    return [f"{name}:{int(n)}" for n in np.asarray(line_numbers)[:EXAMPLES]]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _owner(partial: Path, out: Path) -> Optional[Tuple[str, int]]:
    """(host, pid) from ``.<out>.<host>-<pid>.<random>.partial``; None if absent."""
    middle = partial.name[len(f".{out.name}."):-len(".partial")]
    host, _, pid = middle.rpartition(".")[0].rpartition("-")
    return (host, int(pid)) if host and pid.isdigit() else None


def remove_stale_partials(out: Path) -> None:
    """Remove the unfinished builds of ``out`` that killed runs left: only
    those whose name holds a process of this machine that is gone. Others (a
    live build, another machine's, or one named by an older mmf_rec) are left
    alone; the unknown ones are named so the user can decide."""
    for partial in sorted(out.parent.glob(f".{out.name}.*.partial")):
        owner = _owner(partial, out)
        if owner is None:
            logger.warning("left alone: %s, an unfinished build of unknown owner; remove "
                           "it if no prepare is writing it", partial)
        elif owner[0] == socket.gethostname() and not process_alive(owner[1]):
            logger.warning("removing %s: an unfinished build of %s whose process %d is gone",
                           partial, out, owner[1])
            shutil.rmtree(partial, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(out: Union[str, os.PathLike]) -> Iterator[Path]:
    """Yield a fresh directory next to ``out``; rename it to ``out`` on success.

    ``out`` must be absent or an empty directory. On any error (or Ctrl-C) the
    temporary directory is removed, so no half-written output remains that a
    later run could take for complete. A run killed outright cannot remove it;
    its name records host and process, so the next run does
    (:func:`remove_stale_partials`).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataInputError(f"{out}: refusing to prepare into an existing non-empty "
                             "path; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    owner = f"{socket.gethostname()}-{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{owner}.", suffix=".partial",
                                dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_report(root: Path, report: RowReport, extra: Optional[Mapping[str, Any]] = None
                 ) -> Dict[str, Any]:
    """``report.json`` next to the manifest; returns the manifest's entry for it."""
    data = {**report.to_dict(), **dict(extra or {})}
    sha = write_json(root / REPORT_FILE, data)
    return {"path": REPORT_FILE, "sha256": sha}
