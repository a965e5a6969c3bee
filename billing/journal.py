"""The journal of kept writes: one append-only file per router process, fsync'd line by line.

``SIRAYA_JOURNAL_DIR`` (default ``var/journal``) holds ``writes-<instance id>.jsonl`` files.
Each line is one write, a JSON object:

    {"v": 1, "seq": 7, "at": 1796632800.25, "kind": "settle", "record_id": 42, "data": {...}}

``kind`` is ``settle`` (``data``: the ``Outcome``, counted: prompt and delivered tokens as
figures, no prompt or text), ``checkpoint`` (the ``Checkpoint``), ``reject`` (``data``: the
key's id, generation id, model name, HTTP status, code, message and when it was refused) or
``admit`` (a request admitted during an outage, ``SIRAYA_ADMIT_DURING_OUTAGE=journal``:
``data`` is its usage record's fields as admission would have inserted them). ``at`` is when
the write was kept (unix seconds). The writes of a record admitted against the journal have
``record_id`` 0 and a ``generation_id`` key: the record is found by it when they are written.

The file's process holds an exclusive ``flock`` on it for as long as it lives; a file whose
lock can be taken belongs to a dead process, and ``orphans_replay`` writes its lines in order
and deletes it. Replaying a line twice changes nothing (``billing.pending``), so a crash in
the middle of a replay only means the next replay starts again from the top. The live process
truncates its own file once every line in it has landed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson
from django.conf import settings

from billing import credit, hotsql, known_spend, records
from billing.admission import DEFAULT_API, Rejection, key_request_reject
from billing.cost import Prices
from billing.models import UsageRecord
from billing.settlement import Checkpoint, Outcome, usage_record_checkpoint, usage_record_settle
from billing.terms import ModelTerms
from lib import process

logger = logging.getLogger("siraya.pending")

VERSION = 1
PREFIX, SUFFIX = "writes-", ".jsonl"


@dataclass(slots=True)
class Write:
    """One write kept until the database takes it."""

    kind: str  # settle | checkpoint | reject | admit
    record_id: int  # 0 for a reject or an admit (its record does not exist yet), or see below
    data: dict[str, Any]
    at: float  # unix seconds, when it was kept
    # A write of a record admitted against the journal (record_id 0): its record, found by this.
    generation_id: str = ""


# -- what a write carries ------------------------------------------------------------------


_OUTCOME_FIELDS = tuple(f.name for f in fields(Outcome))
_CHECKPOINT_FIELDS = tuple(f.name for f in fields(Checkpoint))


def settle_write(record_id: int, outcome: Outcome, generation_id: str = "") -> Write:
    """A settlement, its ``outcome`` counted (``billing.counting``): the figures, not the texts.

    A shallow copy (``asdict`` deep-copies every attempt, some 100 us on the event loop)."""
    data = {name: getattr(outcome, name) for name in _OUTCOME_FIELDS}
    if outcome.prompt_tokens is not None or outcome.vendor_prompt_tokens is not None:
        data["messages"], data["tools"] = [], None
    if outcome.delivered_tokens is not None:
        data["delivered_text"] = ""
    if outcome.answered_by is not None:
        data["answered_by"] = asdict(outcome.answered_by)
    return Write("settle", record_id, data, time.time(), generation_id)


def checkpoint_write(record_id: int, checkpoint: Checkpoint, generation_id: str = "") -> Write:
    data = {name: getattr(checkpoint, name) for name in _CHECKPOINT_FIELDS}
    if checkpoint.prompt_tokens is not None and checkpoint.messages is not None:
        data["messages"], data["tools"] = [], None  # counted: [] still marks the first checkpoint
    return Write("checkpoint", record_id, data, time.time(), generation_id)


def reject_write(
    key_id: int, generation_id: str, model_name: str, rejection: Rejection, trace_id: str = "", api: str = DEFAULT_API
) -> Write:
    now = time.time()
    data = {
        "key_id": key_id,
        "generation_id": generation_id,
        "model_name": model_name,
        "refused_at": now,
        "trace_id": trace_id,
        "api": api,
    }
    data.update(asdict(rejection))
    return Write("reject", 0, data, now)


def admit_write(values: dict[str, Any]) -> Write:
    """A request admitted against the journal: its usage record's fields (by attname)."""
    return Write("admit", 0, values, time.time(), values["generation_id"])


def _outcome(data: dict[str, Any]) -> Outcome:
    answered = data.pop("answered_by", None)
    if answered is not None:
        prices = Prices(**{name: Decimal(value) for name, value in answered.pop("prices").items()})
        data["answered_by"] = ModelTerms(prices=prices, **answered)
    return Outcome(**data)


def apply(write: Write) -> None:
    """Write ``write`` to the database (each in a transaction of its own); twice changes nothing."""
    data = dict(write.data)
    if write.kind == "settle":
        usage_record_settle(_record_of(write), _outcome(data))
    elif write.kind == "checkpoint":
        usage_record_checkpoint(_record_of(write), Checkpoint(**data))
    elif write.kind == "admit":
        _admission_insert(data)
    elif write.kind == "reject":
        refused_at = datetime.fromtimestamp(data["refused_at"], UTC)
        rejection = Rejection(data["http_status"], data["code"], data["message"])
        try:
            key_request_reject(
                data["key_id"],
                data["generation_id"],
                data["model_name"],
                rejection,
                refused_at,
                data.get("trace_id", ""),  # journals written before traces have none
                data.get("api", DEFAULT_API),  # nor before the record named its client API
            )
        except Exception as exc:
            if not _already_recorded(exc):
                raise
    else:
        raise ValueError(f"unknown kind of write: {write.kind!r}")


def _record_of(write: Write) -> int:
    """The id of the record ``write`` is for (one admitted against the journal: by its generation id)."""
    if write.record_id or not write.generation_id:
        return write.record_id
    found = UsageRecord.objects.filter(generation_id=write.generation_id).values_list("pk", flat=True).first()
    if found is None:
        raise UsageRecord.DoesNotExist(f"no usage record of generation {write.generation_id}")
    return found


def _admission_insert(data: dict[str, Any]) -> None:
    """Insert the record of a request admitted against the journal, unless it is there already
    (an earlier replay, or its admission that reached the database after the outage bound)."""
    fields = _record_fields()
    values = {name: fields[name].to_python(value) for name, value in data.items()}
    with records.atomic():
        credit.key_lock(values["api_key_id"])  # the lock order of admission: key, then rows
        if not UsageRecord.objects.filter(generation_id=values["generation_id"]).exists():
            hotsql.record_insert(values)
    known_spend.landed(values["generation_id"])


def _record_fields() -> dict[str, Any]:
    return {f.attname: f for f in UsageRecord._meta.concrete_fields if not f.primary_key}


def _already_recorded(exc: Exception) -> bool:
    from django.db import IntegrityError

    return isinstance(exc, IntegrityError)  # generation_id is unique: an earlier replay wrote it


def _line(write: Write, seq: int) -> bytes:
    body = {"v": VERSION, "seq": seq, "at": write.at, "kind": write.kind, "record_id": write.record_id}
    if write.generation_id:
        body["generation_id"] = write.generation_id
    body["data"] = write.data
    return orjson.dumps(body, default=_json_default) + b"\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def parse_line(line: bytes) -> Write:
    body = orjson.loads(line)
    if body.get("v") != VERSION:
        raise ValueError(f"journal line of version {body.get('v')!r}, expected {VERSION}")
    return Write(body["kind"], body["record_id"], body["data"], body["at"], body.get("generation_id", ""))


# -- the files -----------------------------------------------------------------------------


def directory() -> Path:
    return Path(settings.SIRAYA_JOURNAL_DIR)


class Journal:
    """This process's journal file: appended to and fsync'd, read back from the oldest unwritten line.

    Two threads use it: the one that appends (``billing.pending``'s journal thread) and the one
    that writes lines to the database and advances past them; ``_io`` keeps their use of the
    one file object apart. ``depth`` counts the lines appended and registered (``registered``)
    and not yet written to the database; its owner changes it under its own lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[bytes] = open(path, "a+b")
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file.truncate(0)
        self._io = threading.Lock()
        self.depth = 0  # lines not yet written to the database
        self.appended = 0
        self._read_at = 0  # byte offset of the oldest such line
        self._head: tuple[Write, int] | None = None  # that line, parsed, and its length

    @classmethod
    def own(cls) -> Journal:
        return cls(directory() / f"{PREFIX}{process.instance_id()}{SUFFIX}")

    def append(self, writes: list[Write]) -> None:
        """Append ``writes`` in one write and one fsync (a group commit of the file)."""
        lines = []
        for write in writes:
            self.appended += 1
            lines.append(_line(write, self.appended))
        with self._io:
            self._file.write(b"".join(lines))  # O_APPEND: at the end, wherever reading is
            self._file.flush()
            os.fsync(self._file.fileno())

    def registered(self, count: int) -> None:
        self.depth += count

    def peek(self) -> Write:
        if self._head is None:
            with self._io:
                self._file.seek(self._read_at)
                line = self._file.readline()
            self._head = (parse_line(line), len(line))
        return self._head[0]

    def oldest_at(self) -> float | None:
        return self.peek().at if self.depth else None

    def advance(self) -> None:
        """The oldest line landed; once every line appended has, the file starts again empty."""
        if self._head is None:
            self.peek()
        assert self._head is not None
        self._read_at += self._head[1]
        self._head = None
        self.depth -= 1
        with self._io:
            # Lines appended but not yet registered lie past the read offset: keep them.
            if self.depth == 0 and os.fstat(self._file.fileno()).st_size == self._read_at:
                self._file.truncate(0)
                self._file.flush()
                os.fsync(self._file.fileno())
                self._read_at = 0


@dataclass(frozen=True, slots=True)
class JournalFile:
    path: Path
    live: bool  # its process still holds it
    writes: list[Write]


def journal_files() -> list[JournalFile]:
    """Every journal file in the folder, with its unwritten lines and whether its process lives."""
    found = []
    for path in sorted(directory().glob(f"{PREFIX}*{SUFFIX}")):
        with open(path, "rb") as handle:
            live = _held(handle)
            writes = [parse_line(line) for line in handle if line.strip() and line.endswith(b"\n")]
        found.append(JournalFile(path, live, writes))
    return found


def _held(handle: IO[bytes]) -> bool:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def orphans_replay() -> int:
    """Write the lines of every dead process's journal, in order, and delete the file; return
    how many. An outage stops the replay (raised): the file stays for the next pass."""
    replayed = 0
    folder = directory()
    if not folder.is_dir():
        return 0
    own = f"{PREFIX}{process.instance_id()}{SUFFIX}"
    for path in sorted(folder.glob(f"{PREFIX}*{SUFFIX}")):
        if path.name == own:
            continue
        with open(path, "r+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive and writes it out itself
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # torn by the crash mid-write: never fsync'd, so never acknowledged
                if line.strip():
                    apply(parse_line(line))
                    replayed += 1
            path.unlink()
        if replayed:
            logger.warning("replayed %d kept write(s) from %s", replayed, path.name)
    return replayed
