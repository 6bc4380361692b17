"""Snakemake `script:` of the reporting rules: curve, scatter, compile_tables,
splice_readme and the `tables` target (which also mirrors the finished runs into the
preset's MLflow store). All the work is in locallearn.tables, locallearn.figures and
locallearn.tracking; this file only maps a rule to a call."""
import os
import sys
from pathlib import Path

sm = snakemake  # noqa: F821  (injected by Snakemake)
sys.path.insert(0, sm.scriptdir)
import harness  # noqa: E402

sys.path.insert(0, str(harness.REPO))
from locallearn import figures, tables  # noqa: E402

config = sm.config
rows = harness.load_cells(harness.cells_path(config))
presets = harness.make_presets(config, rows)
preset = presets.get(sm.wildcards.get("preset", "full"))
Path(sm.log[0]).parent.mkdir(parents=True, exist_ok=True)


def intro(p: harness.Preset) -> str:
    if p.name == "full":
        return (f"Full recipes, seeds: {', '.join(map(str, p.seeds))}; verdict tolerances "
                "(percentage points) from `workflow/config/config.yaml`.")
    budget = [f"cut to {p.epochs} epochs" if p.epochs else "with its full epochs"]
    if p.max_train_examples:
        budget.append(f"the first {p.max_train_examples} training examples")
    if p.max_test_examples:
        budget.append(f"the first {p.max_test_examples} test examples")
    return ("**Quick preset: a budget run, not a replication.** Each cell runs its real recipe "
            f"{', '.join(budget)}; the bracket beside each of our numbers states that budget "
            "(epochs run / recipe epochs). Expect errors far above the published ones (in parentheses).")


def readme_and_prefix(p: harness.Preset) -> tuple[Path, str]:
    readme = Path(p.readme)
    rel = Path(os.path.relpath(Path(p.results, "figures").resolve(), readme.resolve().parent))
    return readme, rel.as_posix()


QUICK_TEMPLATE = tables.readme_template(
    "locallearn: quick replication (budget run)",
    "Made by `snakemake --cores all quick`; regenerated on every run. The replication "
    "proper is `snakemake --cores all` (tables in the top-level README.md).")

with open(sm.log[0], "w") as log:
    if sm.rule == "curve":
        row = next(r for r in rows if r["cell"] == sm.wildcards.cell)
        runs = tables.load_runs(Path(preset.results, "runs"), [row], preset.seeds)
        figures.plot_cell(runs.get(row["cell"], []), sm.output[0], row)

    elif sm.rule == "scatter":
        runs = tables.load_runs(Path(preset.results, "runs"), preset.table_rows, preset.seeds)
        figures.plot_scatter(tables.scatter_points(preset.table_rows, runs, config["tolerance"]), sm.output[0],
                             title=f"ours vs published ({preset.name} preset)")

    elif sm.rule == "compile_tables":
        runs = tables.load_runs(Path(preset.results, "runs"), preset.table_rows, preset.seeds)
        readme, rel = readme_and_prefix(preset)
        out = tables.compile_tables(preset.table_rows, runs, expected_seeds=len(preset.seeds),
                                    tolerance=config["tolerance"], figure_prefix=f"{rel}/curves/",
                                    scatter=f"{rel}/scatter.png", intro=intro(preset))
        for p in tables.write_tables(out, Path(sm.output.tables).parent):
            print(f"wrote {p}", file=log)

    elif sm.rule == "splice_readme":
        readme = Path(preset.readme)
        changed = tables.splice_file(readme, Path(sm.input[0]).read_text(),
                                     QUICK_TEMPLATE if preset.name == "quick" else None)
        print(f"{readme}: {'updated' if changed else 'unchanged'}", file=log)
        Path(sm.output[0]).write_text(f"{readme}\n")

    elif sm.rule == "tables":
        readme, _ = readme_and_prefix(preset)
        tables.refresh(preset.table_rows, preset.results, seeds=preset.seeds,
                       tolerance=config["tolerance"], readme=readme, intro=intro(preset))
        print(f"refreshed {preset.results}/tables, {preset.results}/figures and {readme}", file=log)
        print(f"tables: {preset.results}/tables/summary.md; README: {readme}")
        # the finished runs, browsable in MLflow (a fresh clone has only their metrics.json)
        from locallearn.credentials import take_credentials
        from locallearn.errors import TrackingError
        from locallearn.tracking import artifact_destination, sync_results
        uri = take_credentials(harness.tracking_uri(config, preset))   # never printed with a password
        try:
            done = sync_results(preset.results, uri, preset.experiment)
        except TrackingError as e:   # the tables are made; a store that is down only warns
            print(f"warning: MLflow not synced: {e}", file=log)
            print(f"locallearn: warning: MLflow not synced: {e}", file=sys.stderr)
        else:
            changed = sum(v != "unchanged" for v in done.values())
            print(f"MLflow {uri}: {len(done)} finished runs, {changed} created or updated", file=log)
            dest = artifact_destination(uri)
            print(f"browse: mlflow ui --backend-store-uri {uri}"
                  + (f" --artifacts-destination {dest}" if dest else ""))

    else:
        sys.exit(f"report.py: no action for rule {sm.rule!r}")
