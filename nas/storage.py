"""Where studies live: storage URLs, opening a study to read it, and what a stored study says.

The one place both sides share: the backends that run a study and the analysis that reads one
import this module, never each other. Reading never creates a study and never writes to the storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from optuna.trial import TrialState

from nas.errors import UserError

if TYPE_CHECKING:
    import optuna

#: trial states that count towards a study's n_trials
DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
#: study attr holding the end-of-search re-measure ({trial number: {...}}): Optuna's values of a
#: finished trial are immutable, so the second latency lives here (nas.timing.remeasure writes it)
REMEASURED = "latency_remeasured"


def default_storage(study: str, storage: str | None = None, run_dir: str | None = None) -> str:
    """The storage URL a command should use: `--storage`, else `<run_dir>/study.db`
    (run_dir defaults to the search's `runs/<study>`)."""
    if storage:
        return storage
    return f"sqlite:///{Path(run_dir) if run_dir else Path('runs') / study}/study.db"


def sqlite_path(storage: str) -> Path | None:
    """The file behind a `sqlite:///` URL (None for other databases or in-memory)."""
    if not storage.startswith("sqlite:///"):
        return None
    rest = storage[len("sqlite:///"):].split("?", 1)[0]
    if rest.startswith("file:"):
        rest = rest[len("file:"):]
    if not rest or rest == ":memory:":
        return None
    return Path(unquote(rest))


def _storage(storage: str, read_only: bool = True) -> optuna.storages.BaseStorage:
    import optuna

    path = sqlite_path(storage)
    if path is not None:
        if not path.is_file():
            raise UserError(f"--storage {storage}: no such file {path} (has the search run? default is runs/STUDY/study.db)")
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError as e:
            raise UserError(f"--storage {storage}: cannot read {path} ({e.__class__.__name__}: {e})") from None
        if head and head != b"SQLite format 3\x00":
            raise UserError(f"--storage {storage}: {path} is not an SQLite database")
        # read-only URI: reading a study must never create or modify the file
        url = f"sqlite:///file:{path.resolve()}?mode=ro&uri=true" if read_only else storage
        try:
            return optuna.storages.RDBStorage(url, skip_compatibility_check=read_only, skip_table_creation=True)
        except Exception as e:  # sqlalchemy/optuna raise many types for a damaged file
            raise UserError(f"--storage {storage}: cannot open {path} as an Optuna study database ({_short(e)})") from None
    if "://" not in storage:
        raise UserError(f"--storage {redact(storage)}: expected a database URL such as sqlite:///runs/STUDY/study.db")
    try:
        # never create tables in someone's database just to read it
        return optuna.storages.RDBStorage(storage, skip_compatibility_check=True, skip_table_creation=True)
    except Exception as e:
        raise UserError(redact(f"--storage {storage}: cannot open storage ({_short(e)})")) from None


def _short(e: BaseException) -> str:
    return f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def open_study(name: str, storage: str | None = None, *, read_only: bool = True) -> optuna.Study:
    """Load an existing study, never creating one; unknown names get one line listing the
    studies present. `read_only` (pareto, export, status) opens SQLite files read-only;
    `resume` passes False to keep writing to it."""
    import optuna

    url = storage or default_storage(name)
    st = _storage(url, read_only)
    try:
        names = [s.study_name for s in st.get_all_studies()]
    except Exception as e:
        raise UserError(redact(f"--storage {url}: cannot read studies ({_short(e)})")) from None
    if name not in names:
        have = ", ".join(sorted(names)) or "none"
        raise UserError(f"study {name!r} not found in {redact(url)}; existing studies: {have}")
    return optuna.load_study(study_name=name, storage=st)


def redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    import re

    return re.sub(r"(://[^:/@\s]+:)[^@\s]*@", r"\1***@", url)



def set_study_attr_once(study: optuna.Study, key: str, value: Any) -> Any:
    """Write a study user attr only if no one has: the first writer wins, atomically (one INSERT that the
    table's unique (study, key) constraint refuses to a second writer), and every caller gets the winner's
    value. Optuna's `set_user_attr` is an upsert, so check-then-set lets two workers both write."""
    import json

    import optuna
    from sqlalchemy.exc import IntegrityError

    storage = getattr(study._storage, "_backend", study._storage)
    if not isinstance(storage, optuna.storages.RDBStorage):  # in-memory and journal storages: one process
        have = study._storage.get_study_user_attrs(study._study_id)
        if key not in have:
            study._storage.set_study_user_attr(study._study_id, key, value)
        return study._storage.get_study_user_attrs(study._study_id)[key]
    from optuna.storages._rdb.models import StudyUserAttributeModel

    row = {"study_id": study._study_id, "key": key, "value_json": json.dumps(value)}
    try:
        with storage.engine.begin() as conn:
            conn.execute(StudyUserAttributeModel.__table__.insert().values(**row))
    except IntegrityError:
        pass  # another process wrote it first: theirs is the value
    return storage.get_study_user_attrs(study._study_id)[key]


def is_reference(trial: Any) -> bool:
    """A paper preset run beside the search as a comparison point (`reference_presets`), not a candidate."""
    return bool(trial.user_attrs.get("reference_preset"))


def counts_toward_target(trial: Any) -> bool:
    """A finished (COMPLETE or PRUNED) candidate: `--trials N` searches N of them, whatever reference
    presets run beside them."""
    return trial.state in DONE_STATES and not is_reference(trial)


def candidates_done(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=DONE_STATES) if not is_reference(t))


def remeasured(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """The end-of-search re-measure of each trial that has one ({str(number): record})."""
    v = study.user_attrs.get(REMEASURED)
    return {k: r for k, r in v.items() if isinstance(r, dict)} if isinstance(v, dict) else {}


def write_remeasured_values(study: optuna.Study, records: dict[str, dict[str, Any]]) -> int:
    """Put re-measured latencies into the trials' latency objective value too, so Optuna's own tools
    (optuna-dashboard, `study.best_trials`) tell the story `pareto` tells. Optuna's API keeps a finished
    trial's values immutable, so this is one SQL UPDATE of its `trial_values` rows; the first value stays
    in the trial's user attr `latency_ms` and the study attr `latency_remeasured` keeps both."""
    import optuna

    names = list(study.metric_names or study.user_attrs.get("objectives") or [])
    storage = getattr(study._storage, "_backend", study._storage)
    if "latency_ms" not in names or not isinstance(storage, optuna.storages.RDBStorage):
        return 0
    from optuna.storages._rdb.models import TrialModel, TrialValueModel
    from sqlalchemy import select, update

    objective = names.index("latency_ms")
    n = 0
    with storage.engine.begin() as conn:
        for number, rec in records.items():
            value = remeasured_latency(rec)
            if value is None:
                continue
            tid = conn.execute(select(TrialModel.trial_id).where(
                TrialModel.study_id == study._study_id, TrialModel.number == int(number))).scalar()
            if tid is not None:
                n += conn.execute(update(TrialValueModel).where(
                    TrialValueModel.trial_id == tid, TrialValueModel.objective == objective).values(value=value)).rowcount
    return n


def remeasured_latency(record: dict[str, Any] | None) -> float | None:
    """The re-measured latency (ms) in one record of `remeasured`, or None: the one reader of it."""
    v = record.get("latency_ms") if isinstance(record, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None
