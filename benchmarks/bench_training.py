"""Training sets by reference (``make bench-training``; part of ``make bench``). Prints figures, asserts nothing.

On the same synthetic tables (``mmfs synth`` events through the real Spark jobs, as in
bench_feast), in one run:

- ``mmfs training-set`` (service ``ctr_dmf_v1``) with histories by snapshot key (the default) and
  inline (the lists in every row), whole build: join, parquet write, split stats;
- the bare DuckDB ASOF join over the same keys: the same entity rows ASOF-joined with the same
  tables the by-reference build joins (snapshot keys, user stats, item stats, embedding status),
  no TTL, no created timestamps, no split, nothing written; and the single join with the
  snapshot table alone (the shape of DuckDB's own ASOF benchmark);
- the loader (``mmfs.model.data.TrainingSetDataset``, DMF's inputs: history, s_j, mm_emb) in samples/s
  over the train split of each set, one process; and the loader as it was before histories went by
  reference (``model/data.py`` and ``core/features/item_index.py`` of ``--previous``, read with
  ``git show``) over the inline set, in the same run: the throughput the loader must keep.

Results go to docs/benchmarks.md, section "Training sets by reference".
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

from benchmarks.bench_feast import prepare_embeddings, repo_copy, tables_for
from benchmarks.resources import machine_description, measured, write_section
from mmfs.model.data import LoaderConfig, TrainingSetDataset
from mmfs.pipelines.spark.session import build_spark
from mmfs.store import feast_store, training_set
from mmfs.store.pit_join import _lit, _q

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Training sets by reference"
END = "<!-- end training section -->"
GOAL_ROWS_S = 1_500_000
GOAL_BARE = 0.5


def bare_join(views, entity, only: str | None = None) -> float:
    """Seconds of the bare ASOF joins (every joined view, or only ``only``), counting the matches."""
    con = training_set.connect()
    con.register("entity", entity)
    joins, counts = [], []
    for i, view in enumerate(v for v in views if only is None or v.name == only):
        keys = " AND ".join(f"e.{_q(k)} = t{i}.{_q(k)}" for k in view.join_keys)
        cols = ", ".join(_q(k) for k in view.join_keys)
        joins.append(f"ASOF LEFT JOIN (SELECT {cols}, CAST({_q(view.timestamp)} AS TIMESTAMPTZ) AS _ev "
                     f"FROM read_parquet({_lit(view.glob)})) t{i} ON {keys} AND e.event_timestamp >= t{i}._ev")
        counts.append(f"count(t{i}._ev)")
    start = time.perf_counter()
    con.execute(f"SELECT {', '.join(counts)} FROM entity e {' '.join(joins)}").fetchall()
    seconds = time.perf_counter() - start
    con.close()
    return seconds


def previous_loader(commit: str):
    """The loader module of ``commit`` (with that commit's embedding index), or None outside a git checkout."""
    def source(path: str) -> str | None:
        done = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    data, index = source("model/data.py"), source("core/features/item_index.py")
    if data is None or index is None:
        return None
    modules = {}
    for name, text in (("mmfs_previous_item_index", index), ("mmfs_previous_data", data)):
        module = types.ModuleType(name)
        sys.modules[name] = module
        exec(compile(text.replace("from mmfs.core.features.item_index import", "from mmfs_previous_item_index import"),
                     f"{commit}:{name}", "exec"), module.__dict__)
        modules[name] = module
    return modules["mmfs_previous_data"]


def loader_rate(path: Path, batches: int, module=None) -> float:
    dataset, config = (TrainingSetDataset, LoaderConfig) if module is None else (module.TrainingSetDataset, module.LoaderConfig)
    data = dataset(path, config(split="train", batch_size=1024, max_len=50, vectors=("mm_emb",), shuffle=True))
    it = iter(data)
    next(it)  # the first row group read and the index warm
    rows, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            rows += len(next(it)["label"])
        except StopIteration:
            break
    return rows / (time.perf_counter() - start)


def bench(work: Path, root: Path, n_events: int, loader_batches: int, previous: str) -> dict:
    repo = repo_copy(work, f"repo_training_{n_events}")
    feast_store.apply("duckdb", repo, root)
    store = feast_store.open_store("duckdb", repo, root)
    entity = training_set.read_entity_frame(root / "events")
    views = training_set.service_views(store, "ctr_dmf_v1")
    joined = [v for v in views if [f for f in v.fields if f not in v.referenced("reference") + v.vector_fields] or v.list_fields]
    result = {"events": n_events, "entity_rows": entity.num_rows, "joined_views": [v.name for v in joined]}
    sets = {}
    for history in ("reference", "inline"):
        out = work / f"ts_{n_events}_{history}"
        runs = []
        for _ in range(2):  # best of 2, as the bare join: the first build also warms the file cache
            with measured() as m:
                built = training_set.build(store, "ctr_dmf_v1", entity, out, history=history, saved_dataset=False)
            runs.append({"seconds": m.seconds, "rows_s": entity.num_rows / m.seconds, "join_seconds": built.manifest["join_seconds"],
                         "peak_gib": m.peak_rss_bytes / 2**30, "out_mib": sum(f.stat().st_size for f in out.rglob("*.parquet")) / 2**20})
        sets[history] = out
        result[history] = min(runs, key=lambda r: r["seconds"])
        print(json.dumps({history: result[history]}), flush=True)
    result["bare_seconds"] = min(bare_join(joined, entity) for _ in range(2))
    result["bare_rows_s"] = entity.num_rows / result["bare_seconds"]
    result["bare_one_seconds"] = min(bare_join(joined, entity, "user_sequence") for _ in range(2))
    result["bare_one_rows_s"] = entity.num_rows / result["bare_one_seconds"]
    for history, out in sets.items():
        result[history]["loader_samples_s"] = loader_rate(out, loader_batches)
    module = previous_loader(previous)
    result["previous"] = previous
    result["previous_loader_samples_s"] = loader_rate(sets["inline"], loader_batches, module) if module else None
    for out in sets.values():
        shutil.rmtree(out)
    print(json.dumps(result), flush=True)
    return result


def section(results: list[dict], machine: str) -> str:
    lines = [SECTION, "", f"Measured {dt.date.today().isoformat()} on {machine}, `python -m benchmarks.bench_training`. "
             "Synthetic events (`mmfs synth`, users = events / 20, 5,000 items, 2 embedding versions per item), tables from the "
             "real Spark jobs, service `ctr_dmf_v1`, N = 50. Every figure of one size comes from one run. Build rows/s is entity "
             "rows per second of the whole build (join, parquet write, split stats). The bare join is DuckDB's ASOF join of the "
             "same entity rows with the same tables the by-reference build joins "
             f"({', '.join(results[0]['joined_views']) if results else ''}), matches counted, nothing written, no TTL or "
             "created-timestamp rules. Builds and bare joins alike: best of 2.", ""]
    lines += ["### Goals", "", "| goal | measured | |", "|---|---|---|"]
    for r in results:
        ref, inline = r["reference"], r["inline"]
        lines.append(f"| {r['events']:,} events: build >= {GOAL_ROWS_S / 1e6:.1f}M rows/s | {ref['rows_s'] / 1e6:.2f}M rows/s "
                     f"({ref['seconds']:.1f} s; inline {inline['rows_s'] / 1e6:.2f}M) | {'met' if ref['rows_s'] >= GOAL_ROWS_S else '**not met**'} |")
        ratio = ref["rows_s"] / r["bare_rows_s"]
        lines.append(f"| {r['events']:,} events: build >= {GOAL_BARE}x the bare ASOF join over the same keys | {ratio:.2f}x "
                     f"({ref['rows_s'] / 1e6:.2f}M vs {r['bare_rows_s'] / 1e6:.2f}M rows/s) | {'met' if ratio >= GOAL_BARE else '**not met**'} |")
        before = r.get("previous_loader_samples_s")
        if before:
            lines.append(f"| {r['events']:,} events: the loader keeps its throughput (by reference >= the loader of {r['previous']} "
                         f"on the inline set) | {ref['loader_samples_s']:,.0f} vs {before:,.0f} samples/s "
                         f"({ref['loader_samples_s'] / before:.2f}x) | {'met' if ref['loader_samples_s'] >= before else '**not met**'} |")
        else:
            lines.append(f"| {r['events']:,} events: the loader keeps its throughput | no git checkout to read the previous loader from | not measured |")
        lines.append(f"| {r['events']:,} events: loader by reference against today's loader on the inline set | "
                     f"{ref['loader_samples_s']:,.0f} vs {inline['loader_samples_s']:,.0f} ({ref['loader_samples_s'] / inline['loader_samples_s']:.2f}x; "
                     "by reference it computes s_j, inline it reads them) | reported |")
    lines += ["", "| events | path | wall s | rows/s | join s | peak GiB | output MiB | loader samples/s |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for history, label in (("reference", "mmfs, histories by snapshot key, s_j by the loader"), ("inline", "mmfs, histories inline")):
            x = r[history]
            lines.append(f"| {r['events']:,} | {label} | {x['seconds']:.1f} | {x['rows_s']:,.0f} | {x['join_seconds']:.1f} | "
                         f"{x['peak_gib']:.2f} | {x['out_mib']:,.0f} | {x['loader_samples_s']:,.0f} |")
        if r.get("previous_loader_samples_s"):
            lines.append(f"| {r['events']:,} | loader of {r['previous']}, inline set | - | - | - | - | - | {r['previous_loader_samples_s']:,.0f} |")
        lines.append(f"| {r['events']:,} | bare DuckDB ASOF join, {len(r['joined_views'])} tables | {r['bare_seconds']:.1f} | "
                     f"{r['bare_rows_s']:,.0f} | - | - | - | - |")
        lines.append(f"| {r['events']:,} | bare DuckDB ASOF join, snapshot table alone | {r['bare_one_seconds']:.1f} | "
                     f"{r['bare_one_rows_s']:,.0f} | - | - | - | - |")
    return "\n".join(lines) + "\n" + END + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "bench_out" / "training"))
    parser.add_argument("--sizes", default="5000000")
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--loader-batches", type=int, default=200)
    parser.add_argument("--previous", default="895ddf2", help="the commit whose loader is the throughput to keep")
    parser.add_argument("--reuse", action="store_true", help="keep tables a previous run prepared under --work")
    parser.add_argument("--report", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    if not args.reuse:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    build_spark("mmfs-bench-training")
    embeddings_root = prepare_embeddings(work, args.items)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        root = tables_for(work, n, args.items, embeddings_root)
        results.append(bench(work, root, n, args.loader_batches, args.previous))
    text = section(results, machine_description())
    write_section(Path(args.report), text, SECTION, END)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
