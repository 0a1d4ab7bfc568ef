"""Where a search lives: the Optuna storage (SQLite in the tune folder by default, or any URL of
Optuna's RDB storage such as ``postgresql://``), the study in it, and failing interrupted trials.

A trial interrupted by a killed worker stays ``RUNNING`` in the storage. It is failed (never
counted as a result) by the next worker that starts: at once when the dead worker ran on the same
host (its pid is gone), else when its heartbeat is older than ``grace`` seconds (Optuna's
heartbeat, recorded every ``heartbeat`` seconds while a trial trains).
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path

from loralab.errors import ConfigError, LoralabError
from loralab.tune import require_optuna
from loralab.tune.optuna_internals import storage_of, trial_id

DB_FILE = "tune.db"
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
#: Trial user attributes written by the runner.
ATTR_HOST, ATTR_PID, ATTR_RUN_DIR = "host", "pid", "run_dir"
ATTR_SURPLUS = "surplus"  # claimed after the budget was already spent by other workers: never run
ATTR_SPEC = "loralab_spec"
ATTR_FINGERPRINT = "loralab_fingerprint"


class TuneError(LoralabError):
    """A search folder or storage is missing, unreadable or holds another search."""


def default_url(out_dir: Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / DB_FILE}"


def redact(url: str) -> str:
    """``url`` without its password (for files and messages)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str, heartbeat: int | None = HEARTBEAT_SECONDS, grace: int | None = GRACE_SECONDS):
    """Optuna's RDB storage for ``url`` (tables created on first use)."""
    optuna = require_optuna()
    if "://" not in url:
        raise ConfigError(f"--storage: {url!r} is not a database URL (e.g. sqlite:///tune.db, postgresql://...)")
    url = driver_url(url)
    kwargs: dict = {}
    if url.startswith("sqlite"):
        # several local workers share one file: wait for the lock instead of failing at once
        kwargs["connect_args"] = {"timeout": 120}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=grace)
    except ImportError as e:
        raise TuneError(
            f"--storage {redact(url)}: the database driver is missing ({e}); "
            "for PostgreSQL: pip install psycopg2-binary"
        ) from None
    except Exception as e:  # sqlalchemy's errors: unreachable server, bad credentials, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TuneError(f"--storage {redact(url)}: cannot open ({first})") from None


def driver_url(url: str) -> str:
    """SQLAlchemy 2.1 reads ``postgresql://`` as psycopg 3; with only psycopg2 installed (the
    ``tune`` extra's driver), name psycopg2 explicitly so that the plain URL works."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def open_study(spec, storage, create: bool = True):
    """The search's Optuna study (named after the spec), created on first use; a study of the same
    name made from another base/space/metric/sampler/pruner is refused."""
    optuna = require_optuna()
    from loralab.tune.runner import make_pruner, make_sampler

    kw = {"study_name": spec.name, "storage": storage, "sampler": make_sampler(spec), "pruner": make_pruner(spec)}
    if create:
        study = optuna.create_study(direction=spec.direction, load_if_exists=True, **kw)
    else:
        try:
            study = optuna.load_study(**kw)
        except KeyError:
            raise TuneError(f"no search named {spec.name!r} in the storage") from None
    attrs = study.user_attrs
    if ATTR_FINGERPRINT not in attrs:
        study.set_user_attr(ATTR_SPEC, spec.to_dict())
        study.set_user_attr(ATTR_FINGERPRINT, spec.fingerprint())
    elif attrs[ATTR_FINGERPRINT] != spec.fingerprint():
        raise TuneError(
            f"{spec.source}: the storage already holds a search named {spec.name!r} with another "
            "base/space/metric/sampler/pruner; rename the search or use another --storage/--out"
        )
    return study


def host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_interrupted(study) -> list[int]:
    """Fail the RUNNING trials of workers that died (same host: pid gone; elsewhere: heartbeat
    older than the grace period). Returns the trial numbers failed here."""
    optuna = require_optuna()
    TrialState = optuna.trial.TrialState
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)  # heartbeat-based, any host
    here = host()
    storage = storage_of(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get(ATTR_PID)
        if t.user_attrs.get(ATTR_HOST) == here and isinstance(pid, int) and pid != os.getpid() and not pid_alive(pid):
            try:
                storage.set_trial_state_values(trial_id(t), state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker failed it first
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return sorted(t.number for t in failed if t.number in before)


class Heartbeat:
    """Records a trial's heartbeat every ``interval`` seconds in a thread (RDB storages)."""

    def __init__(self, storage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self.storage.record_heartbeat(self.trial_id)
            self.thread = threading.Thread(target=self._beat, name="tune-heartbeat", daemon=True)
            self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a transient database error must not kill the training
                continue

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
