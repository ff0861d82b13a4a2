"""Mutants that matter: each one breaks a rule on purpose, and some test must fail.

    python -m tests.mutants            # every mutant (make test-all runs this)
    python -m tests.mutants --list
    python -m tests.mutants --only "replay"

The checkout is never touched: its files (tracked, and untracked ones git does not ignore) are
copied to a temporary folder, and every Python process the tests start there (pytest, mmfs serve,
mmfs stream, Spark's Python workers) imports ``mmfs`` from that copy, through a ``sitecustomize``
on their PYTHONPATH that maps the namespace onto the copy's folders. For each mutant:

1. its tests run on the copy unmutated (the baseline, once per set of tests): they must pass;
2. its one exact, unique text replacement is made in the copy, the tests run again, the file is
   restored. A kill is a test failure (pytest exit 1) only: a collection error, an interrupt, no
   tests collected or a missing tool is an error, reported as such, never counted as a kill.

The script prints a table (mutant, test that kills it, exit code) and exits 1 when a mutant
survives or anything errs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("DMF serving path drops the bucket-key term (one user's K/V shared by C candidates)",
           "model/layers.py",
           "        weights = masked_softmax((qk + qe) / math.sqrt(q.shape[-1]), mask)  # (C, L)",
           "        weights = masked_softmax(((qk + qe) if not shared else qk) / math.sqrt(q.shape[-1]), mask)  # (C, L)",
           ("tests/model/test_models.py::test_dmf_decoupled_scoring_equals_forward",)),
    Mutant("scorer uses a stale sequence while flagging it stale",
           "serving/scorer.py",
           "        hist = [int(x) for x in (hist_raw or [])][-self.max_len:] if status == PRESENT else []",
           "        hist = [int(x) for x in (hist_raw or [])][-self.max_len:] if status != MISSING else []",
           ("tests/serving/test_scorer.py::test_cold_start_unknown_items_and_stale_features",)),
    Mutant("sequence output rule loosened: history at the event's own time passes",
           "pipelines/jobs/user_sequences.py",
           '                "forall(hist_timestamps, t -> t < event_timestamp)",',
           '                "forall(hist_timestamps, t -> t <= event_timestamp)",',
           ("tests/pipelines/jobs/test_user_sequences.py",)),
    Mutant("implicit negatives drawn by whole-log popularity again (a film liked only later)",
           "pipelines/implicit.py",
           '    upto = np.searchsorted(sorted_stamp, neg_stamp, side="right")  # positives at or before the instant',
           "    upto = np.full(len(neg_stamp), len(sorted_stamp))",
           ("tests/pipelines/test_implicit.py::test_negatives_follow_the_popularity_at_their_instant_never_a_later_one",)),
    Mutant("implicit negatives may be an item the user rated",
           "pipelines/implicit.py",
           "        bad = np.isin(neg_user.astype(np.int64) * n_items + neg_item, touched)",
           "        bad = np.zeros(len(neg_user), bool)",
           ("tests/pipelines/test_implicit.py::test_negatives_share_the_positives_instant_and_never_touch_the_users_items",)),
    Mutant("patience counted in passes again (a flat epoch ends a run)",
           "model/train.py",
           "        return at - self.best_at >= self.config.patience_epochs - tolerance",
           "        return len(self.history) - 1 - max(i for i, h in enumerate(self.history) if h['epoch'] == round(self.best_at, 3)) >= 4",
           ("tests/model/test_train.py::test_the_recipe_counts_in_epochs_so_a_flat_epoch_does_not_end_a_run",)),
    Mutant("a model setting the family lacks is silently dropped",
           "model/models.py",
           "    unknown = sorted(set(values) - set(settings(name)) - {\"name\"})",
           "    unknown = []\n    values = {k: v for k, v in values.items() if k in settings(name)}",
           ("tests/model/test_train.py::test_each_model_has_its_own_settings_and_an_inapplicable_one_is_an_error",)),
    Mutant("DMF without s_j still reads it",
           "model/dmf.py",
           '        if self.config.similarity == "none":  # ablation: no s_j at all',
           "        if False:",
           ("tests/model/test_models.py::test_dmf_without_similarity_ignores_s_j",)),
    Mutant("the scorer serves an ablation checkpoint (trained on another s_j)",
           "serving/scorer.py",
           '        if similarity != "fused":  # the online path computes s_j over all of mm_emb (mmfs.online.similarity)',
           "        if False:",
           ("tests/serving/test_scorer.py::test_an_ablation_checkpoint_is_refused",)),
    Mutant("ECE unweighted by the bins' rows",
           "model/metrics.py",
           "    return float(gap.sum() / count.sum())",
           "    return float(np.mean(gap[count > 0] / count[count > 0]))",
           ("tests/model/test_train.py::test_expected_calibration_error",)),
    Mutant("DIN pools its history as a sum again",
           "model/layers.py",
           "        if self.pooling == \"mean\":",
           "        if False:",
           ("tests/model/test_models.py::test_din_interest_does_not_grow_with_a_repeated_history",)),
    Mutant("the snapshot rule stamps a row at its own time: stats and sequences count the row's own event",
           "core/features/snapshot.py",
           "STAMP_AFTER_US = 1",
           "STAMP_AFTER_US = 0",
           ("tests/pipelines/jobs/test_user_stats.py", "tests/pipelines/jobs/test_item_stats.py",
            "tests/pipelines/jobs/test_user_sequences.py")),
    Mutant("Diff-MSIN gathers per-version reps in the wrong order",
           "model/diff_msin.py",
           "        return [r[inverse].reshape(B, L, -1) for r in reps]",
           "        return [r[inverse.flip(0)].reshape(B, L, -1) for r in reps]",
           ("tests/model/test_models.py::test_diffmsin_per_version_history_reps_equal_per_position",)),
    Mutant("image root check skipped",
           "pipelines/images.py",
           "        if not _inside(file, roots):",
           "        if False:",
           ("tests/pipelines/test_encoders.py::test_hostile_images_are_refused_before_decoding",)),
    Mutant("FuxiCTR export check ignores the history",
           "model/export_fuxictr.py",
           "            if not np.array_equal(raw[np.asarray(seq, np.int64)], expected):",
           "            if False:",
           ("tests/model/test_export_fuxictr.py::test_a_tampered_export_is_caught",)),
    Mutant("the stream applies a retried event again",
           "streaming/increments.py",
           "            label = self._keys.get(key, seen.get(key))",
           "            label = None",
           ("tests/streaming/test_increments.py::test_duplicates_and_retries_are_no_ops_and_batch_jobs_accept_what_feedback_wrote",)),
    Mutant("the stream's writer skips ingest's rules",
           "streaming/increments.py",
           "        self._validate(events, now or dt.datetime.now(dt.timezone.utc))",
           "        pass",
           ("tests/streaming/test_increments.py::test_bad_events_are_refused_by_ingests_rules_and_nothing_is_written",)),
    Mutant("the stream forgets committed batches a failure left behind",
           "streaming/increment_log.py",
           "            apply(files, root, entry.name, store, stats_views)",
           "            files.delete(entry.path)",
           ("tests/streaming/test_increments.py::test_a_failure_after_the_commit_is_finished_by_the_retry_and_counted_once",)),
    Mutant("ingest folds feedback events in twice",
           "pipelines/jobs/ingest.py",
           '    feedback = feedback.dropDuplicates(key).join(events.select(*key), on=key, how="left_anti")',
           "    feedback = feedback",
           ("tests/streaming/test_increments.py::test_duplicates_and_retries_are_no_ops_and_batch_jobs_accept_what_feedback_wrote",)),
    Mutant("ingest and feedback disagree on the time range",
           "pipelines/jobs/ingest.py",
           "    latest = _latest_allowed(now)\n    sql = {",
           "    latest = _latest_allowed(now + dt.timedelta(days=3650))\n    sql = {",
           ("tests/core/events/test_rules.py",)),
    Mutant("the store's import circle comes back (materialize_spark imports feast_store)",
           "store/materialize_spark.py",
           "    from mmfs.store.schema import source_glob",
           "    from mmfs.store.feast_store import source_glob",
           ("tests/test_imports.py::test_no_import_circle",)),
    Mutant("the shared history rule keeps the oldest positives, not the newest",
           "core/features/snapshot.py",
           "    return sorted(history + positives)[-max_len:]",
           "    return sorted(history + positives)[:max_len]",
           ("tests/core/features/test_snapshot.py",)),
    Mutant("the scorer's similarity block ignores which similarities are known",
           "model/batch.py",
           '    return {"hist_sim": np.where(known, np.nan_to_num(sims), np.float32(0)).astype(np.float32), "hist_sim_mask": known}',
           '    return {"hist_sim": np.nan_to_num(sims).astype(np.float32), "hist_sim_mask": np.ones_like(known)}',
           ("tests/serving/test_scorer.py", "tests/model/test_data.py")),
    Mutant("serving imports a Spark job again",
           "checks/parity.py",
           "from mmfs.core.features.similarity import similarity_batch",
           "from mmfs.pipelines.jobs.target_similarity import similarity_batch",
           ("tests/test_imports.py",)),
    Mutant("late events are applied online (rewriting history the online store no longer holds)",
           "streaming/increments.py",
           "                if row is not None and _us(e.event_timestamp) + STAMP_AFTER_US <= row[0]:",
           "                if False:",
           ("tests/streaming/test_increments.py::test_late_events_go_to_the_batch_path_and_are_reported_never_applied_online",)),
    Mutant("the request log drops records without counting them",
           "serving/request_log.py",
           "        except queue.Full:\n            self._drop(1)",
           "        except queue.Full:\n            pass",
           ("tests/serving/test_request_log.py::test_a_full_queue_drops_and_counts_never_blocks",)),
    Mutant("the arrays answer scores an unknown item (its probability is not NaN, so not null)",
           "serving/scorer.py",
           "            probabilities[unknown] = np.nan\n",
           "",
           ("tests/serving/test_app.py::test_score_answers_items_or_arrays_with_the_same_values",)),
    Mutant("/score's fast path names a bad field without FastAPI's body. prefix",
           "serving/runtime.py",
           '[{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]',
           "exc.errors(include_url=False)",
           ("tests/serving/test_runtime.py::test_mistakes_name_the_field_under_body",)),
    Mutant("mmfs consistency counts a differing value as a match",
           "checks/consistency.py",
           '            .when(used & has & equal, "match").when(used & has, "mismatch")',
           '            .when(used & has, "match").when(used & has, "mismatch")',
           ("tests/checks/test_consistency.py::test_a_consistent_store_passes_and_a_wrong_online_value_is_caught",)),
    Mutant("the stream counts on from its first micro-batch only (a batch's rows never reach its state)",
           "streaming/state.py",
           "        self._merge(table.select([self.key, \"event_timestamp\", *self.columns]))",
           "        pass",
           ("tests/streaming/test_stream.py::test_stream_killed_mid_batch_and_restarted_equals_a_batch_recompute",)),
    Mutant("the fast SQLite read takes Feast's epoch seconds for milliseconds",
           "online/rows.py",
           "            stamps[n] = seconds * 1_000_000",
           "            stamps[n] = seconds * 1_000",
           ("tests/checks/test_parity.py::test_sqlite_materialise_ttl_and_parity",)),
    Mutant("the TTL rule never marks a value stale",
           "online/reader.py",
           "            codes[(codes == PRESENT_CODE) & (stamps_us < stamp_us(now - ttl))] = STALE_CODE",
           "            codes[(codes == PRESENT_CODE) & (stamps_us < stamp_us(now - ttl))] = PRESENT_CODE",
           ("tests/checks/test_parity.py::test_sqlite_materialise_ttl_and_parity",
            "tests/serving/test_scorer.py::test_cold_start_unknown_items_and_stale_features")),
    Mutant("the one-pass validation query misses a table's last rule (its failures are never reported)",
           "pipelines/spark/validation.py",
           'pairs = [f"{_sql_string(rule.name)}, CAST(_f{i} AS BIGINT)" for i, rule in enumerate(table_rules.rules)]',
           'pairs = [f"{_sql_string(rule.name)}, CAST(_f{i} AS BIGINT)" for i, rule in enumerate(table_rules.rules[:-1])]',
           ("tests/pipelines/spark/test_validation.py",)),
    Mutant("the one-pass validation query counts rows, not keys, as duplicates",
           "pipelines/spark/validation.py",
           '["count_if(_n > 1) AS _dup"]',
           '["coalesce(sum(CASE WHEN _n > 1 THEN _n END), 0) AS _dup"]',
           ("tests/pipelines/spark/test_validation.py",)),
    Mutant("a training set's missing-view counts ignore the writer's null counts",
           "store/training_set.py",
           'split["nulls"][view] += int(file["column_statistics"][_q(probe)]["null_count"])',
           'split["nulls"][view] += 0',
           ("tests/store/test_training_set.py",)),
    Mutant("a training-set split written short of its entity rows is accepted",
           "store/training_set.py",
           '        if rows != ent.get("rows", 0):',
           "        if False:",
           ("tests/store/test_training_set.py",)),
    Mutant("duplicate entity rows: distinct row hashes taken as the answer whatever they say",
           "store/entity_frame.py",
           "    if rows == hashes:",
           "    if True:",
           ("tests/store/test_training_set.py",)),
    Mutant("a history by reference keeps its oldest items, not its newest",
           "model/data.py",
           "        start = self.starts[np.maximum(rows, 0)] + lengths - keep  # (B,) drop the oldest beyond width",
           "        start = self.starts[np.maximum(rows, 0)]",
           ("tests/model/test_data.py",)),
    Mutant("the loader's s_j counts as known where the target has no vector at T",
           "model/data.py",
           "    known = hist_found & found[:, None]  # (B, L)",
           "    known = hist_found",
           ("tests/model/test_data.py",)),
    Mutant("the training join takes the next value, not the last one at or before T (a future value leaks)",
           "store/pit_join.py",
           'joins.append(f"ASOF LEFT JOIN t{i} ON {on_keys} AND e.event_timestamp >= t{i}._ev")',
           'joins.append(f"ASOF LEFT JOIN t{i} ON {on_keys} AND e.event_timestamp <= t{i}._ev")',
           ("tests/store/test_training_set.py",)),
    Mutant("the training join shows a back-filled version from its event time, not from when it was written",
           "store/pit_join.py",
           'f"t{i} AS (SELECT DISTINCT {keys}, greatest(_ev, _cr) AS _vis, "',
           'f"t{i} AS (SELECT DISTINCT {keys}, _ev AS _vis, "',
           ("tests/store/test_training_set.py",)),
    Mutant("the item version lookup ignores created_timestamp (a back-filled vector leaks into earlier rows)",
           "core/features/item_index.py",
           "            too_new = pending & ((self.event_us[np.maximum(idx, 0)] > as_of_us) | (self.created_us[np.maximum(idx, 0)] > as_of_us))",
           "            too_new = pending & (self.event_us[np.maximum(idx, 0)] > as_of_us)",
           ("tests/core/features/test_item_index.py", "tests/model/test_data.py")),
    Mutant("online reads keep values for twice the view's TTL",
           "online/reader.py",
           "            codes[(codes == PRESENT_CODE) & (stamps_us < stamp_us(now - ttl))] = STALE_CODE",
           "            codes[(codes == PRESENT_CODE) & (stamps_us < stamp_us(now - 2 * ttl))] = STALE_CODE",
           ("tests/online/test_reader.py",)),
    Mutant("online reads call a value exactly one TTL old stale (the training join keeps it)",
           "online/reader.py",
           "            codes[(codes == PRESENT_CODE) & (stamps_us < stamp_us(now - ttl))] = STALE_CODE",
           "            codes[(codes == PRESENT_CODE) & (stamps_us <= stamp_us(now - ttl))] = STALE_CODE",
           ("tests/online/test_reader.py",)),
    Mutant("a replay uses values stamped after its time",
           "online/reader.py",
           "        codes[(codes == PRESENT_CODE) & (stamps_us > stamp_us(now))] = FUTURE_CODE",
           "        pass",
           ("tests/online/test_reader.py", "tests/serving/test_scorer.py::test_a_replay_never_takes_a_value_stamped_after_its_time")),
    Mutant("the scorer trusts the sequence's second-cut stamp (a snapshot with an event at 'at' passes)",
           "serving/scorer.py",
           "        if status == PRESENT and newest is not None and newest + STAMP_AFTER_US > stamp_us(now):",
           "        if False:",
           ("tests/serving/test_scorer.py::test_a_replay_never_takes_a_value_stamped_after_its_time",)),
    Mutant("a reset checkpoint names its batches by Spark's id alone (it replaces the earlier batch 0)",
           "streaming/checkpoint.py",
           '    return f"stream-{batch_id:010d}" if generation == 0 else f"stream-g{generation:03d}-{batch_id:010d}"',
           '    return f"stream-{batch_id:010d}"',
           ("tests/streaming/test_stream.py::test_a_reset_checkpoint_and_a_copied_root_never_overwrite_published_output",)),
    Mutant("the stream looks into no subfolder of the landing folder again",
           "streaming/job.py",
           '.option("maxFileAge", MAX_FILE_AGE).option("recursiveFileLookup", "true").load(landing)',
           '.option("maxFileAge", MAX_FILE_AGE).load(landing)',
           ("tests/streaming/test_stream.py::test_every_landed_file_is_read_or_set_aside_with_its_reason",)),
    Mutant("a landed file Spark skips for its name is left where it lies, unreported",
           "streaming/job.py",
           "        if not any(part[:1] in (\"_\", \".\") for part in parts):",
           "        if True:",
           ("tests/streaming/test_stream.py::test_every_landed_file_is_read_or_set_aside_with_its_reason",)),
    Mutant("a live event may be a day ahead of the clock again (it freezes its item)",
           "core/events/landing.py",
           "e.item_id in known, now, LIVE_FUTURE_SLACK):",
           "e.item_id in known, now):",
           ("tests/core/events/test_rules.py",)),
    Mutant("image decoding tries every PIL format again (an EPS reaches Ghostscript)",
           "pipelines/images.py",
           "            image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only",
           "            image = Image.open(io.BytesIO(data))  # reads the header only",
           ("tests/pipelines/test_encoders.py::test_an_eps_never_reaches_ghostscript",)),
    Mutant("a read waits 5 s on a locked SQLite store again before the server says 503",
           "online/rows.py",
           "BUSY_TIMEOUT_MS = 1000",
           "BUSY_TIMEOUT_MS = 5000",
           ("tests/serving/test_app.py::test_sqlite_replaced_missing_or_locked_recovers_on_its_own",)),
    Mutant("a second apply in one process reuses the previous parse's modules (every view declared twice)",
           "store/feast_store.py",
           "    forget_repo_modules(Path(repo))\n",
           "    sys.modules.pop('features', None)\n",
           ("tests/store/test_feast_store.py::test_repos_whose_files_import_each_other_apply_twice_in_one_process",)),
    Mutant("publishing replaces a file already published",
           "streaming/increment_log.py",
           "    if taken:  # a staged file's name already published: another checkpoint's batch, never to be replaced",
           "    if False:",
           ("tests/streaming/test_increments.py::test_a_batch_whose_name_is_published_is_refused_and_kept",)),
    Mutant("mmfs apply on a copied root leaves the registry naming the source's online store",
           "store/feast_store.py",
           "    relocated = _follow_root(config, repo)",
           "    relocated = []",
           ("tests/store/test_feast_store.py::test_apply_on_a_copied_or_moved_root_never_touches_the_source",)),
    Mutant("the online store is memory-mapped again (a file rewritten in place kills the server)",
           "online/rows.py",
           "MMAP_BYTES = 0",
           "MMAP_BYTES = 1 << 30",
           ("tests/serving/test_app.py::test_a_store_file_rewritten_in_place_is_a_503_and_a_recovery_never_a_crash",)),
    Mutant("a staged micro-batch without its commit marker is applied on recovery",
           "streaming/increment_log.py",
           "            if entry.is_dir and files.exists(join(entry.path, COMMITTED)):",
           "            if entry.is_dir:",
           ("tests/streaming/test_increments.py::test_a_failure_before_the_commit_leaves_nothing",)),
    Mutant("the stream's Hadoop files keep the checksumming local file system (.crc files, no append)",
           "pipelines/spark/table_io.py",
           '        if fs.getScheme() == "file":',
           "        if False:",
           ("tests/core/test_files.py::test_files_keep_their_promises",)),
    Mutant("the driver reads every file the source log ever named, not the micro-batch's",
           "streaming/job.py",
           "        for entry in range(log_offset(batch_id - 1) + 1, log_offset(batch_id) + 1):",
           "        for entry in range(0, log_offset(batch_id) + 1):",
           ("tests/streaming/test_stream.py::test_a_micro_batchs_files_are_read_from_the_checkpoint_or_left_to_spark",)),
    Mutant("Hadoop listings parsed loosely (a name that reads like a status's fields gives a wrong entry)",
           "pipelines/spark/table_io.py",
           '(?:; length=(\\d+); replication=\\d+; blocksize=\\d+)?; "\n                     r"modification_time=(\\d+);")',
           '(?:; length=(\\d+))?[^{}]*?; "\n                     r"modification_time=(\\d+)")',
           ("tests/core/test_files.py::test_hadoops_listing_in_bulk_reads_back_every_entry",)),
)



SITECUSTOMIZE = """# Written by tests/mutants.py: mmfs is imported from the mutants' copy of the checkout.
import importlib.machinery
import importlib.util
import os
import sys

ROOT = {root!r}
FOLDERS = {folders!r}


class _CopyFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        folder = FOLDERS.get(name)
        if folder is None:
            return None
        location = os.path.join(ROOT, folder)
        init = os.path.join(location, "__init__.py")
        if os.path.isfile(init):
            return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[location])
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [location]
        return spec


sys.meta_path.insert(0, _CopyFinder)
"""


def make_copy(work: Path) -> tuple[Path, dict]:
    """The checkout's files in ``work/repo`` and the environment under which processes import mmfs from it."""
    import tomllib

    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    copy = work / "repo"
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    folders = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    site = work / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(root=str(copy), folders=folders))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(copy)])}
    return copy, env


def pytest_run(copy: Path, env: dict, tests: tuple[str, ...]) -> int:
    """pytest's exit code for ``tests`` on the copy (0 passed, 1 failures, 2+ could not run them)."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "", *tests],
                          cwd=copy, env=env, capture_output=True, text=True).returncode


def check_copy_imports(copy: Path, env: dict) -> None:
    """Refuse to run when a process under ``env`` would import mmfs from anywhere but the copy."""
    code = "import mmfs.core.contracts.names as n, mmfs.serving.scorer as s; print(n.__file__); print(s.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True, check=True).stdout.split()
    if not all(Path(f).resolve().is_relative_to(copy.resolve()) for f in out):
        raise SystemExit(f"the mutants' processes import mmfs from {out}, not from the copy {copy}")


def run(mutant: Mutant, copy: Path, env: dict) -> tuple[int, float]:
    """(pytest's exit code with the mutant applied, seconds); the copy's file is restored after."""
    path = copy / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        raise SystemExit(f"mutant {mutant.name!r}: its text is not found exactly once in {mutant.path}; update the mutant")
    began = time.perf_counter()
    try:
        path.write_text(original.replace(mutant.old, mutant.new))
        code = pytest_run(copy, env, mutant.tests)
    finally:
        path.write_text(original)
    return code, time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--only", action="append", default=None, help="run the mutants whose name contains this text (repeatable)")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name}  ({m.path})")
        return 0
    chosen = [m for m in MUTANTS if args.only is None or any(text in m.name for text in args.only)]
    rows, bad = [], []
    with tempfile.TemporaryDirectory(prefix="mmfs-mutants-") as work:
        copy, env = make_copy(Path(work))
        check_copy_imports(copy, env)
        baselines: dict[tuple[str, ...], int] = {}
        for m in chosen:
            if m.tests not in baselines:
                baselines[m.tests] = pytest_run(copy, env, m.tests)
            if baselines[m.tests] != 0:
                verdict, code, seconds = "BASELINE FAILS", baselines[m.tests], 0.0
            else:
                code, seconds = run(m, copy, env)
                verdict = "killed" if code == 1 else ("SURVIVED" if code == 0 else "ERROR")
            print(f"{verdict:14} exit {code}  {seconds:6.1f} s  {m.name}", flush=True)
            rows.append((m, verdict, code))
            if verdict != "killed":
                bad.append(m.name)
    print("\n| mutant | killed by | pytest exit |\n|---|---|---|")
    for m, verdict, code in rows:
        print(f"| {m.name} | {', '.join(m.tests)} | {code}{'' if verdict == 'killed' else f' ({verdict})'} |")
    if bad:
        print(f"\n{len(bad)} mutant(s) not killed cleanly: {bad}")
        return 1
    print(f"\nall {len(chosen)} mutants killed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
