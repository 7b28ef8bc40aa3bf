"""Persistent video jobs: a SQLite table plus one work folder per job, and the thread that runs them.

Every state change is one SQL statement with the expected old state in its ``WHERE`` clause, so a
cancel and a start (or two workers) can never both win. A job's folder exists only while its row
does: it is made and removed with the row (``JobStore.admit``, ``JobStore.delete``), and folders left
by a crash between the two are removed at start-up, with dead processes' temp files.
"""
from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from vsr.atomic import remove_stale_temps
from vsr.pipeline import Engine
from vsr.serve.requests import RESULT_SUFFIX, JobOptions, public_message

log = logging.getLogger("vsr.serve")
FINISHED = ("done", "failed", "cancelled")
PROGRESS_EVERY_S = 0.5  # how often a running job's frame count and fps are written to the table
# Columns added after the first release: (name, SQL type); a table made before gets them at start-up.
_ADDED_COLUMNS = (("name", "TEXT"), ("options", "TEXT"))


class QueueFull(Exception):
    """As many jobs are queued as the server allows."""


class JobCancelled(Exception):
    """Raised from the progress callback to stop a running job."""


class JobStore:
    """The SQLite job table and the per-job work folders."""

    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir)
        (self.dir / "jobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(str(self.dir / "jobs.sqlite"), check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        with self.lock, self.db:
            self.db.execute("""CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, status TEXT NOT NULL, filename TEXT NOT NULL, frames_done INTEGER DEFAULT 0,
                frames_total INTEGER DEFAULT 0, fps REAL DEFAULT 0, error TEXT, note TEXT,
                created REAL NOT NULL, updated REAL NOT NULL)""")
            have = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
            for column, kind in _ADDED_COLUMNS:
                if column not in have:
                    self.db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.db.close()

    def folder(self, job_id: str) -> Path:
        return self.dir / "jobs" / job_id

    @staticmethod
    def result_path(folder: Path) -> Path:
        return folder / f"result{RESULT_SUFFIX}"

    @contextmanager
    def admit(self) -> Iterator[tuple[str, Path]]:
        """A new job id and its empty folder; the folder is removed if the block fails before ``create``."""
        job_id = uuid.uuid4().hex
        folder = self.folder(job_id)
        folder.mkdir()
        try:
            yield job_id, folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def create(self, job_id: str, filename: str, frames_total: int, *, max_queued: int, name: str = "",
               options: JobOptions | None = None) -> dict[str, Any]:
        """Queue the job, unless ``max_queued`` jobs are queued already (checked and inserted atomically).
        ``name`` is the client's label for it (its upload's file name), ``options`` its encoder choices."""
        now = time.time()
        opts = json.dumps(asdict(options or JobOptions()))
        with self.lock, self.db:
            if self.db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0] >= max_queued:
                raise QueueFull
            self.db.execute("INSERT INTO jobs (id, status, filename, frames_total, created, updated, name, options) "
                            "VALUES (?,?,?,?,?,?,?,?)", (job_id, "queued", filename, frames_total, now, now, name, opts))
        return self.get(job_id)

    def update(self, job_id: str, *, expect: str | None = None, **fields: Any) -> bool:
        """Set ``fields``; with ``expect``, only if the job is in that state. True if the row changed."""
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        where, args = ("id = ? AND status = ?", (job_id, expect)) if expect else ("id = ?", (job_id,))
        with self.lock, self.db:
            return self.db.execute(f"UPDATE jobs SET {cols} WHERE {where}", (*fields.values(), *args)).rowcount == 1

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row else None

    def list(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest ``limit`` jobs, newest first."""
        with self.lock:
            rows = self.db.execute("SELECT * FROM jobs ORDER BY created DESC, rowid DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]

    def queued(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0])

    def claim(self) -> dict[str, Any] | None:
        """The oldest queued job, now 'running' (one statement: a cancel in between leaves nothing to claim)."""
        with self.lock, self.db:
            row = self.db.execute(
                "UPDATE jobs SET status = 'running', frames_done = 0, updated = ? WHERE id = "
                "(SELECT id FROM jobs WHERE status = 'queued' ORDER BY created, rowid LIMIT 1) AND status = 'queued' "
                "RETURNING *", (time.time(),)).fetchone()
        return dict(row) if row else None

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job that has not started; False if it is no longer queued (a worker claimed it)."""
        if not self.update(job_id, expect="queued", status="cancelled"):
            return False
        shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return True

    def delete(self, job_id: str) -> bool:
        """Remove a finished job's row and files; False if it is queued or running."""
        with self.lock, self.db:
            gone = self.db.execute(f"DELETE FROM jobs WHERE id = ? AND status IN {FINISHED}", (job_id,)).rowcount
        if gone:
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return bool(gone)

    def expire(self, keep_hours: float) -> int:
        """Delete finished jobs not updated for ``keep_hours`` (0 = keep forever); returns how many."""
        if keep_hours <= 0:
            return 0
        cutoff = time.time() - keep_hours * 3600
        with self.lock:
            ids = [r[0] for r in self.db.execute(f"SELECT id FROM jobs WHERE status IN {FINISHED} AND updated < ?",
                                                 (cutoff,))]
        return sum(self.delete(job_id) for job_id in ids)

    def recover(self) -> dict[str, int]:
        """At start-up: interrupted jobs queued again, folders without a job and dead processes' temps removed."""
        with self.lock, self.db:
            requeued = self.db.execute(
                "UPDATE jobs SET status = 'queued', frames_done = 0, "
                "note = 'interrupted by a server restart; run again' WHERE status = 'running'").rowcount
            known = {r[0] for r in self.db.execute("SELECT id FROM jobs")}
        orphans = temps = 0
        for folder in sorted((self.dir / "jobs").iterdir()):
            if folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)
                orphans += 1
            else:
                temps += len(remove_stale_temps(self.result_path(folder)))
        return {"requeued": requeued, "orphan_folders": orphans, "stale_temps": temps}


def job_options(job: dict[str, Any]) -> JobOptions:
    return JobOptions(**json.loads(job.get("options") or "{}"))


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """What a client sees of a job (no server file names, no paths; ``name`` is the client's own label).
    ``eta_s``: seconds left at the current rate, while running."""
    view = {k: job[k] for k in ("id", "status", "frames_done", "frames_total", "fps", "error", "note", "created")}
    view["name"] = job.get("name") or ""
    view["options"] = asdict(job_options(job))
    total, done, fps = job["frames_total"], job["frames_done"], job["fps"]
    view["progress"] = round(min(done / total, 1.0), 4) if total else None
    running = job["status"] == "running" and fps and total > done
    view["eta_s"] = round((total - done) / fps, 1) if running else None
    return view


class JobWorker:
    """Runs queued jobs one at a time through ``Engine.upscale_video`` (the engine ``vsr upscale`` uses)."""

    def __init__(self, engine: Engine, store: JobStore, *, keep_hours: float = 0) -> None:
        self.engine, self.store, self.keep_hours = engine, store, keep_hours
        self.cancel: set[str] = set()
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vsr-jobs", daemon=True)

    def __enter__(self) -> JobWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.wake.set()
        self._thread.join(timeout=60)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def engine_for(self, options: JobOptions) -> Engine:
        """The engine with the job's encoder choices over the server's own settings (same model, same batching)."""
        if options == JobOptions():
            return self.engine
        e = self.engine
        settings = replace(e.settings, codec=options.codec or e.settings.codec,
                           crf=options.crf if options.crf is not None else e.settings.crf)
        return e.like(settings=settings)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if removed := self.store.expire(self.keep_hours):
                    log.info("removed %d finished job(s) older than %g h", removed, self.keep_hours)
                job = self.store.claim()
                if job is None:
                    self.wake.wait(timeout=1.0)
                    self.wake.clear()
                    continue
                self.run(job)
            except Exception:  # the job table itself failed (disk full?): logged, retried after a pause
                log.exception("job worker")
                self._stop.wait(1.0)

    def run(self, job: dict[str, Any]) -> None:
        """Run one claimed job to done, failed or cancelled (or leave it 'running' if the server stops)."""
        job_id = job["id"]
        folder = self.store.folder(job_id)
        done = [0]
        started = time.perf_counter()
        written = [started - PROGRESS_EVERY_S]

        def progress(n: int) -> None:
            if job_id in self.cancel or self._stop.is_set():
                raise JobCancelled
            done[0] += n
            now = time.perf_counter()
            if now - written[0] >= PROGRESS_EVERY_S:  # by time, not by count: any batch size shows progress
                written[0] = now
                self.store.update(job_id, frames_done=done[0], fps=done[0] / (now - started))

        log.info("job %s started", job_id)
        try:
            # written to an atomic temp beside the result (vsr.atomic naming), so recover() finds a dead one's
            result = self.engine_for(job_options(job)).upscale_video(
                folder / job["filename"], self.store.result_path(folder), overwrite=True, progress=progress)
            notes = [job["note"]] * bool(job.get("note")) + result.notes
            self.store.update(job_id, status="done", frames_done=result.frames_out, frames_total=result.frames_in,
                              fps=result.fps, note=public_message("; ".join(notes)) or None)
            log.info("job %s done: %d frames, %.2f fps", job_id, result.frames_out, result.fps)
        except JobCancelled:
            if self._stop.is_set() and job_id not in self.cancel:
                log.info("job %s interrupted by the server stopping; it runs again at the next start", job_id)
                return
            self.store.update(job_id, status="cancelled")
            shutil.rmtree(folder, ignore_errors=True)
            log.info("job %s cancelled", job_id)
        except Exception as exc:  # recorded on the job, never lost
            message = public_message(str(exc)) or type(exc).__name__
            self.store.update(job_id, status="failed", error=message)
            log.warning("job %s failed: %s", job_id, message)
        finally:
            self.cancel.discard(job_id)
