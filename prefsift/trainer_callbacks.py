"""transformers TrainerCallbacks that report a TRL run to DuckDB and to the status file.

Each log event opens its own short connection (storage.connect retries on a busy file) and
closes it at once, so the dashboard and other processes can read the database while the
job trains. A failed metrics write is logged, never fatal: losing one row must not lose
hours of training.
"""

from __future__ import annotations

import logging
import os

from transformers import TrainerCallback

from prefsift.progress import write_status

log = logging.getLogger(__name__)

# TRL's names, kept as they are so that the dashboard and a training log speak alike.
STATUS_KEYS = ("loss", "rewards/margins", "rewards/accuracies", "learning_rate", "epoch")


class MetricsCallback(TrainerCallback):
    """on_log -> training_metrics rows (run_id, step, name, value) + a status-file update."""

    def __init__(self, db: str | os.PathLike, run_id: str, stage: str) -> None:
        self.db = db
        self.run_id = run_id
        self.status_path = os.environ.get("PREFSIFT_STATUS_FILE")
        self.stage = stage

    def _status(self, state, **extra) -> None:
        write_status(
            self.status_path,
            stage=self.stage,
            run_id=self.run_id,
            done=state.global_step,
            total=state.max_steps,
            **extra,
        )

    def on_train_begin(self, args, state, control, **kwargs):
        self._status(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        from prefsift.storage import connect
        from prefsift.storage import training as tstore

        try:
            with connect(self.db) as con:
                tstore.add_metrics(con, self.run_id, state.global_step, logs)
        except Exception as exc:  # noqa: BLE001 - reporting must not kill the run
            log.warning("could not record metrics of step %d: %s", state.global_step, exc)
        extra = {k.replace("/", "_"): logs[k] for k in STATUS_KEYS if k in logs}
        self._status(state, **extra)
