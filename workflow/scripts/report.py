"""Snakemake `script:` of the reporting rules: curve, layers, scatter, compile_tables,
splice_readme and the `tables` target. Each maps its rule to one call of
locallearn.report (the `tables` target's, `report.refresh`, is also what
`locallearn tables` calls), passing the preset's rows, seeds, paths and tolerances;
the `tables` target then also mirrors the finished runs into the preset's MLflow store
(locallearn.tracking)."""
import sys
from pathlib import Path

sm = snakemake  # noqa: F821  (injected by Snakemake)
sys.path.insert(0, sm.scriptdir)
import plan  # noqa: E402  (puts the repository on sys.path)

from locallearn import readme, report, tables  # noqa: E402

config = sm.config
rows = plan.load_cells(plan.cells_path(config))
preset = plan.make_presets(config, rows)[sm.wildcards.get("preset", "full")]
Path(sm.log[0]).parent.mkdir(parents=True, exist_ok=True)

INTRO = tables.intro(preset.seeds, f"`{plan.DEFAULT_CONFIG.relative_to(plan.REPO)}`", epochs=preset.epochs,
                     max_train_examples=preset.max_train_examples, max_test_examples=preset.max_test_examples)
TEMPLATE = None if preset.name == "full" else readme.template(
    "locallearn: quick replication (budget run)",
    "Made by `snakemake --cores all quick`; regenerated on every run. The replication "
    "proper is `snakemake --cores all` (tables in the top-level README.md).")

with open(sm.log[0], "w") as log:
    if sm.rule == "curve":
        report.draw_curve(next(r for r in rows if r["cell"] == sm.wildcards.cell), preset.results, preset.seeds)

    elif sm.rule == "layers":
        report.draw_layers(next(r for r in rows if r["cell"] == sm.wildcards.cell), preset.results, preset.seeds)

    elif sm.rule == "scatter":
        report.draw_scatter(preset.table_rows, preset.results, preset.seeds, config["tolerance"])

    elif sm.rule == "compile_tables":
        report.compile_tables(preset.table_rows, preset.results, seeds=preset.seeds,
                              tolerance=config["tolerance"], intro=INTRO, readme_path=preset.readme)
        print(f"wrote {Path(sm.output.tables).parent}", file=log)

    elif sm.rule == "splice_readme":
        changed = readme.splice_file(preset.readme, Path(sm.input[0]).read_text(), TEMPLATE)
        print(f"{preset.readme}: {'updated' if changed else 'unchanged'}", file=log)
        Path(sm.output[0]).write_text(f"{preset.readme}\n")

    elif sm.rule == "tables":
        report.refresh(preset.table_rows, preset.results, seeds=preset.seeds, tolerance=config["tolerance"],
                       intro=INTRO, readme_path=preset.readme, readme_template=TEMPLATE)
        print(f"refreshed {preset.results}/tables, {preset.results}/figures and {preset.readme}", file=log)
        print(f"tables: {preset.results}/tables/summary.md; README: {preset.readme}")
        # the finished runs, browsable in MLflow (a fresh clone has only their metrics.json)
        from locallearn.credentials import take_credentials
        from locallearn.errors import TrackingError
        from locallearn.tracking import browse_hint, sync_results
        uri = take_credentials(plan.tracking_uri(config, preset))   # never printed with a password
        try:
            done = sync_results(preset.results, uri, preset.experiment)
        except TrackingError as e:   # the tables are made; a store that is down only warns
            print(f"warning: MLflow not synced: {e}", file=log)
            print(f"locallearn: warning: MLflow not synced: {e}", file=sys.stderr)
        else:
            changed = sum(v != "unchanged" for v in done.values())
            print(f"MLflow {uri}: {len(done)} finished runs, {changed} created or updated", file=log)
            print(browse_hint(uri, preset.experiment))

    else:
        sys.exit(f"report.py: no action for rule {sm.rule!r}")
